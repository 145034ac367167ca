"""The advisor: constraints, stages, de-duplication, resume after SIGKILL, and the file it hands back."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests import advise_toy
from tests.conftest import ROOT
from tfcompress.advise import AdviseError, Constraints, SearchOptions, advise, space
from tfcompress.advise import constraints as c_lib
from tfcompress.study import from_flat


def test_drop_is_points_for_fractions_and_percent_otherwise_positive_when_worse():
    accuracy = {"name": "accuracy", "higher_is_better": True, "fraction": True}
    bits = {"name": "bits_per_char", "higher_is_better": False, "fraction": False}
    assert c_lib.drop(0.95, 0.97, accuracy) == pytest.approx(2.0)
    assert c_lib.drop(0.98, 0.97, accuracy) == pytest.approx(-1.0)
    assert c_lib.drop(2.02, 2.0, bits) == pytest.approx(1.0)  # 1% more bits per char is 1% worse
    assert c_lib.drop(1.9, 2.0, bits) == pytest.approx(-5.0)


def test_misses_and_closeness_say_which_limit_and_by_how_much():
    limits = Constraints(max_drop=1, max_size_kb=50, objective="gzip")
    fig = {"drop": 0.5, "size_kb": 80.0, "gzip_kb": 10.0, "latency_ms": 1.0}
    assert c_lib.misses(fig, limits) == {"size_kb": pytest.approx(30.0)}
    assert "size 80 KB is 30 KB over" in c_lib.describe_misses(fig, limits, "pt")
    assert c_lib.closeness(fig, limits) == pytest.approx(0.6)
    assert c_lib.closeness(fig | {"size_kb": 40.0}, limits) == 0
    assert c_lib.violations(fig, limits)[1] > 0 >= c_lib.violations(fig, limits)[0]


def test_bad_limits_are_refused_with_the_way_out():
    with pytest.raises(AdviseError, match="objective must be one of size, gzip, latency, metric"):
        Constraints(objective="speed")
    with pytest.raises(AdviseError, match="max_size_kb must be > 0.*leave it out"):
        Constraints(max_size_kb=0)
    with pytest.raises(AdviseError, match="trials must be >= 1"):
        SearchOptions(trials=0)


def test_specs_that_resolve_the_same_are_one_trial_and_every_sampled_spec_parses():
    import optuna

    assert space.key("q_int8") == space.key("quantize:weights=8:activations=8")
    assert space.key("prune:0.8>int8") == space.key("prune:sparsity=0.8:allocation=uniform>int8")
    assert space.key("prune:0.8>int8") != space.key("prune:0.8:allocation=sensitivity>int8")
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0))
    specs = set()
    for _ in range(60):
        trial = study.ask()
        specs.add(space.sample(trial, convolutional=True))
        study.tell(trial, [1.0, 1.0])
    for spec in specs:
        space.key(spec)  # parses, every parameter in range
    assert any("channel_prune" in s and "cluster" in s for s in specs)
    for spec in space.POST_TRAINING + tuple(r for s in space.REPAIRS for r in space.repairs(s)):
        space.key(spec)


def _toy(tmp_path, name="toy"):
    out = str(tmp_path / name)
    os.makedirs(out, exist_ok=True)
    return out


def test_the_toy_search_runs_the_stages_cheap_first_and_never_runs_a_spec_twice(tmp_path, monkeypatch):
    out = _toy(tmp_path)
    advise_toy.install(monkeypatch.setattr)
    result = advise(
        from_flat(output_dir=out), Constraints(max_drop=1, objective="size"), SearchOptions(trials=24, batch=2)
    )
    stages = [t["stage"] for t in result["trials"]]
    assert stages == sorted(stages) and stages[0] == 0 and 2 in stages  # cheap first
    ran = [json.loads(line) for line in open(os.path.join(out, "batches.txt"))]
    specs = [s for batch in ran for s in batch["new"]]
    assert len(specs) == len(set(specs))  # each spec ran once, whatever the sampler proposed
    pruned = {t["spec"] for t in result["trials"] if t["status"] == "pruned"}
    assert pruned  # the toy's keep_fraction=0.125 trials
    assert not pruned & {s for batch in ran[1:] for s in batch["study"][: -len(batch["new"]) or None]}  # not re-run
    keys = [space.key(t["spec"]) for t in result["trials"] if t["status"] != "duplicate"]
    assert len(keys) == len(set(keys)) and result["trials_run"] == 24
    duplicates = [t for t in result["trials"] if t["status"] == "duplicate"]
    for d in duplicates:
        assert space.key(d["spec"]) == space.key(result["trials"][d["duplicate_of"]]["spec"])
    feasible = [t for t in result["trials"] if t["status"] == "feasible"]
    export = min((t for t in feasible if t["stage"] < 2 and t["spec"] in space.EXPORTS),
                 key=lambda t: t["figures"]["size_kb"])["spec"]  # fmt: skip
    first = [t["spec"] for t in result["trials"] if t["stage"] == 2][: len(space.WARM_START)]
    assert all(spec.endswith(">" + export) for spec in first), (export, first)  # built on the best export so far
    assert result["pick"]["spec"] == min(feasible, key=lambda t: t["figures"]["size_kb"])["spec"]
    assert all(t["figures"]["drop"] <= 1 for t in feasible)
    assert {"advice.json", "advice.md", "pareto.png", "pick.tflite"} <= set(os.listdir(out))
    md = open(os.path.join(out, "advice.md")).read()
    assert f"`{result['pick']['spec']}`" in md and "## Every trial, in the order it ran" in md


def _toy_command(out, *extra):
    return [sys.executable, "-m", "tests.advise_toy", out, *extra]


def test_a_search_killed_with_sigkill_resumes_from_its_journal_to_the_same_pick(tmp_path):
    killed, reference = _toy(tmp_path, "killed"), _toy(tmp_path, "reference")
    proc = subprocess.Popen(_toy_command(killed), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    batches = os.path.join(killed, "batches.txt")
    deadline = time.monotonic() + 120
    # Kill it in stage 2, with sampled trials asked and running: the toy search has 10 batches, and the 8th
    # line is written as batch 8 ends, so the kill lands in batch 9's DELAY_S (at the 10th, the search was
    # already telling its last trials and writing advice.json: a 20 ms race the test lost more often than not).
    while time.monotonic() < deadline:
        if os.path.exists(batches) and len(open(batches).read().splitlines()) >= 8:
            break
        time.sleep(0.02)
    else:
        proc.kill()
        pytest.fail("the toy search never reached its eighth batch")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not os.path.exists(os.path.join(killed, "advice.json"))
    resumed = subprocess.run(_toy_command(killed, "--resume"), cwd=ROOT, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "was interrupted; it runs again" in resumed.stdout
    uninterrupted = subprocess.run(_toy_command(reference), cwd=ROOT, capture_output=True, text=True)
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-2000:]
    a, b = json.loads(resumed.stdout.splitlines()[-1]), json.loads(uninterrupted.stdout.splitlines()[-1])
    assert a["pick"] == b["pick"] is not None
    assert a["trials"] == b["trials"]  # the same trials, in the same order, with the same outcomes


def test_resume_refuses_a_journal_made_with_other_limits(tmp_path, monkeypatch):
    out = _toy(tmp_path)
    advise_toy.install(monkeypatch.setattr)
    config = from_flat(output_dir=out)
    advise(config, Constraints(max_drop=1), SearchOptions(trials=3, stages=(0,)))
    with pytest.raises(AdviseError, match="Cannot resume.*other settings or limits"):
        advise(config, Constraints(max_drop=2), SearchOptions(trials=3, stages=(0,), resume=True))


def test_infeasible_limits_end_with_the_closest_trial_and_what_it_missed_by(tmp_path, monkeypatch):
    out = _toy(tmp_path)
    advise_toy.install(monkeypatch.setattr)
    result = advise(from_flat(output_dir=out), Constraints(max_drop=1, max_size_kb=1.0), SearchOptions(trials=4))
    assert result["pick"] is None and not os.path.exists(os.path.join(out, "pick.tflite"))
    near, limits = result["closest"], Constraints(max_drop=1, max_size_kb=1.0)
    measured = [t for t in result["trials"] if t["figures"]]
    assert near["number"] == min(measured, key=lambda t: c_lib.closeness(t["figures"], limits))["number"]
    assert f"size {near['figures']['size_kb']:.4g} KB is" in near["misses_by"]
    assert "No recipe meets the limits" in open(os.path.join(out, "advice.md")).read()


def _advise_cli(out, *flags):
    return subprocess.run([sys.executable, "-m", "experiments.advise", "--plugins=tests.plugin_advise_toy",
                           f"--output_dir={out}", *flags], cwd=ROOT, capture_output=True, text=True)  # fmt: skip


def test_the_command_line_exits_1_naming_the_closest_trial_when_nothing_is_feasible(tmp_path):
    result = _advise_cli(tmp_path / "none", "--max_drop=1", "--max_size_kb=1", "--trials=4")
    assert result.returncode == 1, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("no recipe meets metric drop <= 1, size <= 1 KB; the closest is trial "), last
    assert "KB is" in last and "KB over" in last


def test_the_command_line_ends_with_the_spec_that_reproduces_the_pick(tmp_path):
    result = _advise_cli(tmp_path / "ok", "--max_drop=1", "--objective=gzip", "--trials=6")
    assert result.returncode == 0, result.stderr[-2000:]
    advice = json.loads((tmp_path / "ok" / "advice.json").read_text())
    assert result.stdout.strip().splitlines()[-1] == f"--recipes={advice['pick']['spec']}"
    assert advice["pick"]["figures"]["gzip_kb"] == min(
        t["figures"]["gzip_kb"] for t in advice["trials"] if t["status"] == "feasible"
    )


@pytest.mark.slow  # two real studies (training included): make test-slow
def test_the_pick_run_through_a_study_gives_its_size_exactly(tmp_path):
    from tfcompress.study import run as run_study

    common = dict(dataset="digits", epochs=1, isolate=False, rounds=1, num_runs=3, min_time_s=0.0, warmup_runs=0)
    out = tmp_path / "advice"
    advice = advise(from_flat(output_dir=str(out), **common), Constraints(max_drop=5, objective="size"),
                    SearchOptions(trials=4, stages=(0,), trial_rounds=1))  # fmt: skip
    pick = advice["pick"]
    assert pick["spec"] != "fp32" and pick["remeasured"]["rounds"] == 1
    spec = advice["reproduce"].removeprefix("--recipes=")
    again = run_study(from_flat(output_dir=str(tmp_path / "again"), cache_dir=str(out / "models"), recipes=(spec,),
                                **common))  # fmt: skip
    row = next(r for r in again.rows if r.recipe == spec)
    assert row.size_bytes == os.path.getsize(out / "pick.tflite") == round(pick["figures"]["size_kb"] * 1024)


def test_filter_removal_is_offered_only_to_models_channel_prune_can_narrow(tiny_cnn):
    from tfcompress._keras import keras
    from tfcompress.advise import advisor

    x = keras.Input((8, 8, 1))
    a, b = keras.layers.Conv2D(4, 3)(x), keras.layers.Conv2D(4, 3)(x)
    heads = keras.layers.Concatenate(name="heads")([a, b])  # the detector's shape: channel_prune refuses it
    assert advisor._removes_filters(tiny_cnn)
    assert not advisor._removes_filters(keras.Model(x, keras.layers.Flatten()(heads)))
