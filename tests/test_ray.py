"""--executor=ray on a 2-node Ray cluster on this machine (loopback only): the rows of a local run, with nodes."""

import ipaddress
import sys

import pytest

from tests.conftest import ROOT
from tfcompress.study import from_flat, run
from tfcompress.study.results import Status

PLUGINS = ("tests.plugin_recipes",)
RECIPES = ("int8", "abort_for_test", "dynamic_range")


def _config(out, **kwargs):
    return from_flat(output_dir=str(out), dataset="digits", epochs=1, num_runs=3, rounds=1, min_time_s=0.0,
                     warmup_runs=0, plugins=PLUGINS, recipes=RECIPES, **kwargs)  # fmt: skip


@pytest.fixture(scope="module")
def cluster():
    from tfcompress.study.ray_executor import local_cluster

    try:
        with local_cluster(nodes=2) as addresses:
            # The test must talk to nothing but this machine's loopback interface (local_cluster checks every
            # address the cluster reports, and raises otherwise).
            assert len(addresses) == 2 and all(ipaddress.ip_address(a).is_loopback for a in addresses)
            import ray

            yield {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    except RuntimeError as e:
        pytest.fail(str(e))


@pytest.mark.slow  # two studies and a cluster start, about 2 minutes: make test-slow and make bench run it
def test_a_two_node_ray_cluster_gives_the_rows_of_a_local_run_with_each_rows_node(cluster, tmp_path):
    local = run(_config(tmp_path / "local", jobs=1))
    on_ray = run(_config(tmp_path / "ray", executor="ray"))
    for a, b in zip(local.rows, on_ray.rows, strict=True):
        assert (a.recipe, a.status, a.metric, a.agreement) == (b.recipe, b.status, b.metric, b.agreement)
        assert a.size_bytes == pytest.approx(b.size_bytes, rel=0.001) if a.ok else True
        assert b.extras["built_on"]["node_id"] in cluster  # which node built the row
        assert ipaddress.ip_address(b.extras["built_on"]["address"]).is_loopback
    crashed = {r.recipe: r for r in on_ray.rows}["abort_for_test"]
    assert crashed.status is Status.FAILED and "killed by signal SIGABRT" in crashed.error  # a native crash on Ray
    assert len({r.extras["built_on"]["node_id"] for r in on_ray.rows[1:]}) == 2  # the jobs ran on both nodes
    timed_on = on_ray.environment["timed_on"]
    assert timed_on["node_id"] in cluster and timed_on["cpu"]  # the latency node, and its CPU model
    assert all(r.latency for r in on_ray.rows if r.ok)


def test_only_the_ray_executor_imports_ray():
    import pathlib
    import subprocess

    importers = [p.name for p in pathlib.Path(ROOT, "tfcompress").rglob("*.py")
                 if "import ray" in p.read_text() or "from ray" in p.read_text()]  # fmt: skip
    assert importers == ["ray_executor.py"]
    code = (
        "import pkgutil, sys, importlib, tfcompress; "
        + "[importlib.import_module(m.name) for m in pkgutil.walk_packages(tfcompress.__path__, 'tfcompress.') "
        + "if not m.name.endswith(('ray_executor', '__main__', '_latency_worker', 'make_keras3'))]; "
        + "print('ray' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False"  # a local study (every other module) never loads Ray
