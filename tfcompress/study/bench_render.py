"""BENCHMARKS.md as the render of ``benchmarks/<section>.json``, one JSON document per section.

Standard library and tabulate only (no TensorFlow), so a test can render the committed files quickly. A section
document::

    {"schema_version": 1, "name": "zoo", "title": "Latency zoo (...)",
     "run": {"date": "2026-11-25", "cpu": "AMD EPYC", "cpu_count": 2, "wall_s": 598.0,
             "software": {"python": "3.11.7", ...},   # optional: the versions the run used
             "bench_wall_s": 3344.0,                   # optional: the whole make bench run's time, kept for
                                                       # sections whose own time was not recorded
             "note": "..."},                           # optional: said in the run line
     "blocks": [{"type": "p", "text": "..."}, {"type": "h3", "text": "..."}, {"type": "h4", "text": "..."},
                {"type": "table", "headers": ["..."], "rows": [["..."]]},
                {"type": "list", "items": ["...", {"text": "...", "items": ["..."]}], "marker": "-"}]}

Tables are rendered with tabulate's github format and ``disable_numparse``, so every cell reads exactly as its
string (a ``|`` inside a cell is escaped as ``\\|``). The file's header names the software of the newest run; a
section whose run used other versions says so in its run line. ``parse_blocks`` reads rendered Markdown back
into blocks (the tests' round trip, and the one-off conversion of the BENCHMARKS.md written before these files
existed).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable

from tabulate import tabulate

SCHEMA_VERSION = 1
# The sections in the order BENCHMARKS.md shows them (the bench runs them in this order too).
SECTIONS = (
    "study",
    "overview",
    "sweep",
    "fuzz",
    "mobilenet",
    "speedups",
    "zoo",
    "keras3",
    "quantizer",
    "advise",
    "scale",
)
# The software versions of a run (keys of tfcompress.study.environment) and how BENCHMARKS.md names them.
_SOFTWARE = (("python", "Python"), ("tensorflow", "TensorFlow"), ("tf_keras", "tf-keras"),
             ("tensorflow_model_optimization", "TFMOT"), ("ai_edge_litert", "ai-edge-litert"),
             ("numpy", "numpy"))  # fmt: skip
SOFTWARE_KEYS = tuple(key for key, _ in _SOFTWARE)
_HEADINGS = {"h3": "### ", "h4": "#### "}
_MARKERS = ("-", "*")
_BLOCK_START = re.compile(r"^(#|\||[-*] )")
_PIPE = re.compile(r"(?<!\\)\|")  # a cell separator: a pipe not escaped as \|


def _one_line(text) -> str:
    """Text with its line breaks as spaces (an error message, say), so that it stays one block."""
    return re.sub(r"\s*\n\s*", " ", str(text)).strip()


def p(text: str) -> dict:
    """A paragraph block."""
    return {"type": "p", "text": _one_line(text)}


def h3(text: str) -> dict:
    return {"type": "h3", "text": _one_line(text)}


def h4(text: str) -> dict:
    return {"type": "h4", "text": _one_line(text)}


def table(headers: Iterable, rows: Iterable[Iterable]) -> dict:
    """A table block; cells become the strings tabulate would print (None is empty), pipes escaped."""

    def cell(value):
        return "" if value is None else _PIPE.sub(r"\|", _one_line(value))

    return {"type": "table", "headers": [cell(h) for h in headers], "rows": [[cell(c) for c in r] for r in rows]}


def bullets(items: Iterable, marker: str = "-") -> dict:
    """A list block: items are strings, or {"text": ..., "items": [...]} for one nested level."""

    def item(value):
        if isinstance(value, dict):
            return {"text": _one_line(value["text"]), "items": [_one_line(sub) for sub in value["items"]]}
        return _one_line(value)

    return {"type": "list", "items": [item(v) for v in items], "marker": marker}


def _check_line(text, where: str) -> None:
    if not isinstance(text, str) or not text.strip() or "\n" in text:
        raise ValueError(f"{where}: expected one non-empty line of text, got {text!r}.")


def _check_block(block: dict, where: str) -> None:
    kind = block.get("type") if isinstance(block, dict) else None
    if kind == "p":
        text = block.get("text")
        if not isinstance(text, str) or not text.strip() or "\n\n" in text or _BLOCK_START.match(text):
            raise ValueError(f"{where}: a paragraph needs text without blank lines that does not start like "
                             + f"another block (#, |, '- ', '* '), got {text!r}.")  # fmt: skip
    elif kind in _HEADINGS:
        _check_line(block.get("text"), where)
    elif kind == "table":
        headers, rows = block.get("headers"), block.get("rows")
        if not isinstance(headers, list) or not headers or not all(isinstance(h, str) for h in headers):
            raise ValueError(f"{where}: table headers must be a non-empty list of strings, got {headers!r}.")
        for i, row in enumerate(rows if isinstance(rows, list) else [None]):
            if not isinstance(row, list) or len(row) != len(headers) or not all(isinstance(c, str) for c in row):
                raise ValueError(f"{where}: table row {i} must be {len(headers)} strings, got {row!r}.")
            if any(_PIPE.search(c) or "\n" in c for c in row + headers):
                raise ValueError(f"{where}: table row {i} has a cell with a line break or an unescaped '|': {row!r}.")
    elif kind == "list":
        items, marker = block.get("items"), block.get("marker", "-")
        if marker not in _MARKERS or not isinstance(items, list) or not items:
            raise ValueError(f"{where}: a list needs items and a marker in {_MARKERS}, got {block!r}.")
        for item in items:
            if isinstance(item, dict):
                _check_line(item.get("text"), where)
                if not item.get("items"):
                    raise ValueError(f"{where}: a nested item needs its own items, got {item!r}.")
                for sub in item["items"]:
                    _check_line(sub, where)
            else:
                _check_line(item, where)
    else:
        raise ValueError(f"{where}: unknown block type {kind!r}; choose one of: p, h3, h4, table, list.")


def validate(doc: dict) -> dict:
    """Checks a section document; returns it.

    Raises:
      ValueError: naming the section and what is wrong with it.
    """
    name = doc.get("name") if isinstance(doc, dict) else None
    if not isinstance(name, str) or not re.fullmatch(r"\w+", name):
        raise ValueError(f"A section document needs a name of word characters, got {name!r}.")
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"Section {name!r}: schema_version {doc.get('schema_version')!r}, expected {SCHEMA_VERSION}.")
    _check_line(doc.get("title"), f"Section {name!r} title")
    run = doc.get("run")
    if not isinstance(run, dict) or not re.fullmatch(r"\d{4}-\d\d-\d\d", str(run.get("date"))):
        raise ValueError(f"Section {name!r}: run needs a date YYYY-MM-DD, got {run!r}.")
    if not isinstance(run.get("cpu"), str) or not isinstance(run.get("cpu_count"), int):
        raise ValueError(f"Section {name!r}: run needs cpu (text) and cpu_count (an integer), got {run!r}.")
    if run.get("note") is not None:
        _check_line(run["note"], f"Section {name!r} run.note")
    if not isinstance(run.get("software", {}), dict):
        raise ValueError(f"Section {name!r}: run.software must map packages to versions, got {run['software']!r}.")
    for key in ("wall_s", "bench_wall_s"):
        if run.get(key) is not None and not isinstance(run[key], int | float):
            raise ValueError(f"Section {name!r}: run.{key} must be seconds or null, got {run[key]!r}.")
    if not isinstance(doc.get("blocks"), list):
        raise ValueError(f"Section {name!r}: blocks must be a list.")
    for i, block in enumerate(doc["blocks"]):
        _check_block(block, f"Section {name!r} block {i}")
    return doc


def section_doc(name: str, title: str, blocks: list[dict], run: dict) -> dict:
    """A validated section document."""
    return validate({"schema_version": SCHEMA_VERSION, "name": name, "title": title, "run": run, "blocks": blocks})


def software_text(software: dict) -> str:
    """'Python 3.11.7, TensorFlow 2.21.0, ...' from a run's software versions."""
    return ", ".join(f"{label} {software[key]}" for key, label in _SOFTWARE if software.get(key))


def render_block(block: dict) -> str:
    kind = block["type"]
    if kind == "p":
        return block["text"]
    if kind in _HEADINGS:
        return _HEADINGS[kind] + block["text"]
    if kind == "table":
        return tabulate(block["rows"], headers=block["headers"], tablefmt="github", disable_numparse=True)
    marker = block.get("marker", "-")
    lines = []
    for item in block["items"]:
        if isinstance(item, dict):
            lines += [f"{marker} {item['text']}", *[f"  {marker} {sub}" for sub in item["items"]]]
        else:
            lines.append(f"{marker} {item}")
    return "\n".join(lines)


def run_line(run: dict, header_software: dict | None = None) -> str:
    """The line under a section's title: when, where, how long, and any note."""
    parts = [f"Run of {run['date']} on {run['cpu']}, {run['cpu_count']} cores"]
    if run.get("wall_s") is not None:
        parts.append(f"this section took {run['wall_s']:.0f} s")
    if run.get("bench_wall_s") is not None:
        parts.append(f"the `make bench` run it was part of took {run['bench_wall_s']:,.0f} s")
    if run.get("software") and header_software and run["software"] != header_software:
        parts.append(f"with {software_text(run['software'])}")
    if run.get("note"):
        parts.append(run["note"].rstrip("."))
    return "_" + "; ".join(parts) + "._"


def render_section(doc: dict, header_software: dict | None = None) -> str:
    """A section between its markers: title, run line, blocks (a run whose software differs from
    ``header_software`` names its own)."""
    validate(doc)
    name = doc["name"]
    parts = [f"## {doc['title']}", run_line(doc["run"], header_software)]
    parts += [render_block(block) for block in doc["blocks"]]
    return f"<!-- section: {name} -->\n" + "\n\n".join(parts) + f"\n<!-- /section: {name} -->\n"


def ordered(docs: Iterable[dict]) -> list[dict]:
    """Documents in SECTIONS order, then any other sections by name."""
    rank = {name: i for i, name in enumerate(SECTIONS)}
    return sorted(docs, key=lambda d: (rank.get(d["name"], len(rank)), d["name"]))


def newest_software(docs: Iterable[dict]) -> dict:
    """The software of the newest run that recorded it (the header's line)."""
    with_software = [d for d in ordered(docs) if d["run"].get("software")]
    if not with_software:
        return {}
    return max(with_software, key=lambda d: d["run"]["date"])["run"]["software"]


def render_file(docs: Iterable[dict], software: dict | None = None) -> str:
    """The whole BENCHMARKS.md: the header, then every section in SECTIONS order.

    Args:
      docs: section documents.
      software: the versions for the header's line; default: the newest run's (newest_software).
    """
    docs = ordered(docs)
    software = newest_software(docs) if software is None else software
    lines = [
        "# Benchmarks",
        "",
        "Rendered by `make bench` (`python -m experiments.bench`; `--sections=NAME` re-runs only some sections and "
        + "keeps the others) from `benchmarks/<section>.json`, one file per section; edit those, never this file. "
        + "Each section says which run it comes from; every ratio inside a section compares numbers measured in "
        + "that one run.",
        "",
    ]
    if software:
        lines += [f"- Software: {software_text(software)}", ""]
    return "\n".join(lines) + "\n" + "\n".join(render_section(d, software) for d in docs)


def load_docs(folder: str, required: Iterable[str] = ()) -> list[dict]:
    """Every section document in ``folder`` (``<name>.json``), validated, in SECTIONS order.

    Raises:
      FileNotFoundError: a section in ``required`` has no file.
      ValueError: a document that is not valid, or whose name is not its file's.
    """
    docs = []
    for entry in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if not entry.endswith(".json"):
            continue
        with open(os.path.join(folder, entry), encoding="utf-8") as f:
            doc = validate(json.load(f))
        if doc["name"] != entry[: -len(".json")]:
            raise ValueError(f"{os.path.join(folder, entry)} holds section {doc['name']!r}; rename one of them.")
        docs.append(doc)
    missing = [name for name in required if name not in {d["name"] for d in docs}]
    if missing:
        raise FileNotFoundError(
            f"No {os.path.join(folder, missing[0] + '.json')} for section {missing[0]!r}; run "
            + f"`python -m experiments.bench --sections={missing[0]}` to measure it."
        )
    return ordered(docs)


def write_text(path: str, text: str) -> None:
    """Writes ``text`` to ``path`` atomically (a temporary file, then a rename)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def write_doc(folder: str, doc: dict) -> str:
    """Writes a validated section document to ``folder/<name>.json`` atomically; returns the path."""
    path = os.path.join(folder, f"{validate(doc)['name']}.json")
    write_text(path, _dumps(doc) + "\n")
    return path


def _dumps(value, indent: str = "") -> str:
    """JSON with one line per table row (a list of plain values), so a re-run's diff shows the rows that changed."""
    inner = indent + " "
    if isinstance(value, dict) and value:
        items = [f"{inner}{json.dumps(k)}: {_dumps(v, inner)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    if isinstance(value, list) and any(isinstance(v, dict | list) for v in value):
        return "[\n" + ",\n".join(inner + _dumps(v, inner) for v in value) + "\n" + indent + "]"
    return json.dumps(value, ensure_ascii=False)


def parse_blocks(markdown: str) -> list[dict]:
    """Rendered blocks (separated by blank lines) back into block dicts: the inverse of render_block."""
    blocks = []
    for chunk in [c for c in markdown.strip("\n").split("\n\n") if c.strip()]:
        lines = chunk.split("\n")
        heading = next((kind for kind, prefix in _HEADINGS.items() if chunk.startswith(prefix)), None)
        if heading and len(lines) == 1:
            blocks.append({"type": heading, "text": chunk[len(_HEADINGS[heading]) :]})
        elif all(line.startswith("|") for line in lines):
            cells = [[c.strip() for c in _PIPE.split(line.strip()[1:-1])] for line in lines]
            blocks.append({"type": "table", "headers": cells[0], "rows": cells[2:]})
        elif lines[0][:2] in ("- ", "* ") and all(line[:2] == lines[0][:2] or line[:4] == "  " + lines[0][:2]
                                                   for line in lines):  # fmt: skip
            marker, items = lines[0][0], []
            for line in lines:
                if line.startswith("  "):
                    last = items[-1] if isinstance(items[-1], dict) else {"text": items[-1], "items": []}
                    last["items"].append(line[4:])
                    items[-1] = last
                else:
                    items.append(line[2:])
            blocks.append({"type": "list", "items": items, "marker": marker})
        else:
            blocks.append({"type": "p", "text": chunk})
    return blocks


def bench_wall_s(docs: Iterable[dict]) -> tuple[float, list[str]]:
    """What the sections' last runs took in all, and the sections that recorded no time.

    Each section counts its own ``wall_s``; sections that recorded only the whole ``make bench`` run they were part
    of (``bench_wall_s``) count that run once.
    """
    total, runs, unknown = 0.0, set(), []
    for doc in ordered(docs):
        run = doc["run"]
        if run.get("wall_s") is not None:
            total += run["wall_s"]
        elif run.get("bench_wall_s") is not None:
            runs.add((run["date"], run["bench_wall_s"]))
        else:
            unknown.append(doc["name"])
    return total + sum(s for _, s in runs), unknown
