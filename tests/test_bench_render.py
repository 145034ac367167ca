"""BENCHMARKS.md is the render of benchmarks/*.json, and the docs' run times are the ones those files record."""

import copy
import difflib
import json
import os
import re
import shutil

import pytest

from tfcompress.study import bench, bench_render

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JSON_DIR = os.path.join(ROOT, "benchmarks")
BENCHMARKS_MD = os.path.join(ROOT, "BENCHMARKS.md")
DOCS = ("README.md", "BUILD.md")
# How the docs quote a run time: "`make bench` takes 6,053 s" (and "`make study` takes N s").
_TAKES = re.compile(r"`make (bench|study)` takes (\d{1,3}(?:,\d{3})+|\d+) s\b")
_SECONDS = re.compile(r"\b(\d{1,3}(?:,\d{3})+|\d+) s\b")
_DURATION_WORDS = re.compile(r"\b(minutes?|hours?|an hour)\b")
_RUN = {"date": "2026-01-02", "cpu": "Test CPU", "cpu_count": 2, "wall_s": 12.3}


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def _mismatch(text: str, docs: list[dict]) -> list[str]:
    """The unified diff between a BENCHMARKS.md text and the render of ``docs`` (empty: they are equal)."""
    rendered = bench_render.render_file(docs)
    diff = difflib.unified_diff(text.splitlines(), rendered.splitlines(), "BENCHMARKS.md", "render", lineterm="", n=0)
    return [] if text == rendered else list(diff) or ["(they differ in line endings or the final newline)"]


@pytest.fixture(scope="module")
def committed_docs() -> list[dict]:
    return bench_render.load_docs(JSON_DIR, required=bench_render.SECTIONS)


def test_benchmarks_md_is_the_render_of_the_committed_json(committed_docs):
    mismatch = _mismatch(_read(BENCHMARKS_MD), committed_docs)
    assert not mismatch, (
        "BENCHMARKS.md is not the render of benchmarks/*.json (edit the JSON, then run "
        + "`python -m experiments.bench --render_only`):\n"
        + "\n".join(mismatch[:40])
    )


@pytest.mark.parametrize(
    "edit",
    [
        lambda text: re.sub(r"\| 0\.(\d)(\d{3}) ", lambda m: f"| 0.{m[1]}{(int(m[2]) + 1) % 1000:03d} ", text, count=1),
        lambda text: re.sub(
            r"this section took (\d+) s", lambda m: f"this section took {int(m[1]) + 1} s", text, count=1
        ),
        lambda text: text.replace("\n\n", "\n\n\n", 1),  # whitespace only
        lambda text: text + "\nA hand-written line.\n",
    ],
    ids=["table_cell", "run_line", "blank_line", "appended_line"],
)
def test_a_hand_edit_of_benchmarks_md_fails_the_comparison(committed_docs, edit):
    text = _read(BENCHMARKS_MD)
    edited = edit(text)
    assert edited != text
    assert _mismatch(edited, committed_docs)


def test_every_section_of_benchmarks_md_has_its_json(committed_docs):
    in_markdown = re.findall(r"^<!-- section: (\w+) -->$", _read(BENCHMARKS_MD), re.M)
    assert in_markdown == [doc["name"] for doc in committed_docs]


def test_a_section_missing_from_json_fails_clearly(tmp_path):
    folder = tmp_path / "benchmarks"
    shutil.copytree(JSON_DIR, folder)
    os.remove(folder / "zoo.json")
    with pytest.raises(FileNotFoundError, match=r"zoo\.json for section 'zoo'.*--sections=zoo"):
        bench_render.load_docs(str(folder), required=bench_render.SECTIONS)
    # Without it the render has no zoo section, so the committed BENCHMARKS.md no longer matches.
    assert _mismatch(_read(BENCHMARKS_MD), bench_render.load_docs(str(folder)))


@pytest.mark.parametrize(
    "block",
    [
        bench_render.p("A paragraph with `code`, **bold** and 1,234 s."),
        bench_render.h3("cnn (209 s)"),
        bench_render.h4("ResNet50 (23,608,202 parameters; 668 s)"),
        bench_render.table(["recipe", "size KB", "note"], [["fp32", "610.2", ""], ["int8", 161.6, None]]),
        bench_render.table(["recipe", "error"], [["x", "a | b"]]),  # a pipe in a cell, escaped
        bench_render.table(["only headers"], []),
        bench_render.bullets(["one", "two"]),
        bench_render.bullets(["a footnote"], marker="*"),
        bench_render.bullets([{"text": "ResNet50: ok", "items": ["`prune`: ok", "`channel_prune`: ok"]}, "last"]),
    ],
    ids=["p", "h3", "h4", "table", "table_pipe", "table_empty", "list", "list_star", "list_nested"],
)
def test_each_block_type_round_trips(block, tmp_path):
    rendered = bench_render.render_block(block)
    assert bench_render.parse_blocks(rendered) == [block]
    doc = bench_render.section_doc("demo", "Demo", [block, bench_render.p("After.")], dict(_RUN))
    bench_render.write_doc(str(tmp_path), doc)
    (loaded,) = bench_render.load_docs(str(tmp_path))
    assert loaded == doc
    assert bench_render.render_section(loaded) == bench_render.render_section(doc)


def test_table_block_renders_as_tabulate_github_with_every_cell_as_text():
    block = bench_render.table(["threads", "p50 ms"], [[1, "0.500"], [2, None]])
    assert block["rows"] == [["1", "0.500"], ["2", ""]]
    assert bench_render.render_block(block).splitlines() == [
        "| threads   | p50 ms   |",
        "|-----------|----------|",
        "| 1         | 0.500    |",
        "| 2         |          |",
    ]


def test_every_committed_section_parses_back_into_its_blocks(committed_docs):
    for doc in committed_docs:
        body = "\n\n".join(bench_render.render_block(block) for block in doc["blocks"])
        assert bench_render.parse_blocks(body) == doc["blocks"], doc["name"]


def test_an_error_message_with_line_breaks_stays_one_block():
    block = bench_render.bullets(["`int8` failed: Traceback\n  line 1\nValueError"])
    assert block["items"] == ["`int8` failed: Traceback line 1 ValueError"]
    assert bench_render.table(["note"], [["a\nb"]])["rows"] == [["a b"]]


def test_run_line_says_when_where_how_long_and_the_note():
    run = {**_RUN, "note": "re-measured after the fix."}
    assert bench_render.run_line(run) == (
        "_Run of 2026-01-02 on Test CPU, 2 cores; this section took 12 s; re-measured after the fix._"
    )
    shared = {**_RUN, "wall_s": None, "bench_wall_s": 3344.0}
    assert bench_render.run_line(shared) == (
        "_Run of 2026-01-02 on Test CPU, 2 cores; the `make bench` run it was part of took 3,344 s._"
    )


def test_header_software_is_the_newest_runs_and_an_older_run_names_its_own():
    old = bench_render.section_doc("sweep", "Old", [], {**_RUN, "date": "2025-01-01", "software": {"numpy": "1.0"}})
    new = bench_render.section_doc("zoo", "New", [], {**_RUN, "software": {"python": "3.11.7", "numpy": "2.0"}})
    text = bench_render.render_file([new, old])
    assert "- Software: Python 3.11.7, numpy 2.0\n" in text
    assert "_Run of 2025-01-01 on Test CPU, 2 cores; this section took 12 s; with numpy 1.0._" in text
    assert text.index("section: sweep") < text.index("section: zoo")  # SECTIONS order, not argument order


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d["blocks"].append({"type": "pre", "text": "x"}), "unknown block type 'pre'"),
        (lambda d: d["blocks"].append({"type": "table", "headers": ["a", "b"], "rows": [["1"]]}), "must be 2 strings"),
        (lambda d: d["blocks"].append({"type": "p", "text": "- looks like a list"}), "does not start like"),
        (lambda d: d["run"].update(date="25 Nov"), "date YYYY-MM-DD"),
        (lambda d: d["run"].update(wall_s="fast"), "run.wall_s must be seconds"),
        (lambda d: d.update(schema_version=2), "schema_version 2"),
    ],
    ids=["block_type", "row_length", "p_like_list", "date", "wall_s", "schema"],
)
def test_an_invalid_document_is_refused_naming_its_section(change, message):
    doc = copy.deepcopy(bench_render.section_doc("zoo", "Zoo", [bench_render.p("ok")], dict(_RUN)))
    change(doc)
    with pytest.raises(ValueError, match=rf"Section 'zoo'.*{re.escape(message)}"):
        bench_render.validate(doc)


def test_a_file_named_for_another_section_is_refused(tmp_path):
    doc = bench_render.section_doc("zoo", "Zoo", [], dict(_RUN))
    (tmp_path / "sweep.json").write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(ValueError, match="holds section 'zoo'"):
        bench_render.load_docs(str(tmp_path))


def test_bench_run_writes_the_sections_json_and_renders_every_file(tmp_path, monkeypatch):
    """bench.run for one section (fuzzing faked): its document is new, the others render as they were."""
    folder = tmp_path / "benchmarks"
    shutil.copytree(JSON_DIR, folder)
    part = {"cases": 3, "seconds": 0.4, "outcomes": {"ok": 3, "mutation_truncate": 3}}
    monkeypatch.setattr(bench.fuzzing, "run", lambda *args, **kwargs: {"tflite": part, "npz": part})
    env = {"cpu": "Test CPU", "cpu_count": 2, "python": "3.11.7", "numpy": "9.9"}
    monkeypatch.setattr(bench, "environment", lambda: env)
    output = tmp_path / "BENCHMARKS.md"
    bench.run(sections=["fuzz"], output=str(output), json_dir=str(folder), work_dir=str(tmp_path / "work"),
              progress=lambda line: None)  # fmt: skip
    docs = bench_render.load_docs(str(folder), required=bench_render.SECTIONS)
    fuzz = next(d for d in docs if d["name"] == "fuzz")
    assert fuzz["run"]["cpu"] == "Test CPU" and fuzz["run"]["wall_s"] >= 0 and "note" not in fuzz["run"]
    assert fuzz["blocks"][0]["items"][0].startswith("3 mutated .tflite files")
    assert output.read_text(encoding="utf-8") == bench_render.render_file(docs)
    for name in set(bench_render.SECTIONS) - {"fuzz"}:
        assert _read(os.path.join(folder, f"{name}.json")) == _read(os.path.join(JSON_DIR, f"{name}.json"))


def _clauses(text: str, target: str) -> list[str]:
    """The clauses of ``text`` that name ``target``: sentences and semicolon-separated parts of its paragraphs and
    of each table row (a row is one unit, so a figure in the row of `make X` counts as that target's)."""
    units = []
    for paragraph in text.split("\n\n"):
        units += paragraph.splitlines() if paragraph.lstrip().startswith("|") else [paragraph.replace("\n", " ")]
    return [c for unit in units for c in re.split(r"(?<=[.;])\s+", unit) if target in c]


def _quoted(target: str) -> dict[str, list[str]]:
    """Every "`make X` takes N s" figure in README.md and BUILD.md, by file."""
    return {doc: [n for what, n in _TAKES.findall(_read(os.path.join(ROOT, doc))) if what == target] for doc in DOCS}


def _no_other_run_time(target: str, allowed: set[str]) -> None:
    for doc in DOCS:
        for clause in _clauses(_read(os.path.join(ROOT, doc)), f"`make {target}`"):
            assert not _DURATION_WORDS.search(clause), f"{doc} gives another `make {target}` time: {clause!r}"
            stray = set(_SECONDS.findall(clause)) - allowed
            assert not stray, f"{doc} gives `make {target}` a time the JSON does not: {sorted(stray)} in {clause!r}"


def test_make_bench_time_in_the_docs_is_the_sum_of_the_sections_json(committed_docs):
    total_s, untimed = bench_render.bench_wall_s(committed_docs)
    assert not untimed, f"Sections with no recorded time: {untimed}; the docs' `make bench` time leaves them out."
    figure = f"{total_s:,.0f}"
    quoted = _quoted("bench")
    assert quoted["BUILD.md"], "BUILD.md should say how long `make bench` takes: `make bench` takes N s."
    for doc, figures in quoted.items():
        assert all(f == figure for f in figures), f"{doc} says `make bench` takes {figures} s; the JSON: {figure} s."
    _no_other_run_time("bench", {figure})


def test_make_study_time_in_the_docs_is_the_study_json():
    path = os.path.join(JSON_DIR, "study.json")
    if not os.path.exists(path):
        _no_other_run_time("study", set())
        pytest.skip("benchmarks/study.json does not exist yet: no `make study` time to compare with the docs.")
    with open(path, encoding="utf-8") as f:
        wall_s = bench_render.validate(json.load(f))["run"]["wall_s"]
    assert wall_s is not None, "benchmarks/study.json has no run.wall_s, the `make study` wall time."
    figure = f"{wall_s:,.0f}"
    for doc, figures in _quoted("study").items():
        assert figures, f"{doc} should say `make study` takes {figure} s (benchmarks/study.json)."
        assert all(f == figure for f in figures), f"{doc} says `make study` takes {figures} s; the JSON: {figure} s."
    _no_other_run_time("study", {figure})
