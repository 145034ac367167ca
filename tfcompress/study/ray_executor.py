"""``--executor=ray``: a study's recipe jobs as Ray tasks, on an embedded local Ray or on a cluster.

The only module that imports Ray (a study with ``--executor=local`` never does).

- Each job is a Ray task that declares its CPUs (``cpus_per_job``) and runs in a fresh worker
  process (``max_calls=1``: repeated ``fit`` in one process leaks); the task starts the recipe as
  the isolated executor does, in a child process of its own (``executor.start_isolated``), so a
  native crash is a failed row there too, and its TensorFlow threads are set from the CPUs it was
  given (TFCOMPRESS_JOB_CPUS), which TensorFlow would otherwise ignore.
- A job that reuses another job's transform prefix waits for it (as with ``--jobs``), so the prefix
  is computed once.
- With ``--strategy=multi_worker`` a training-time job's task declares ``cpus_per_job x workers`` CPUs,
  and its workers run beside it on the same node (started by the job, as locally; Ray Train's
  TensorflowTrainer, which would spread them over nodes, is not used yet).
- The latency phase runs as one task on the node holding the custom resource ``tfcompress_latency``
  (an embedded instance gives the driver's node one; on a cluster, start one node with
  ``--resources='{"tfcompress_latency": 1}'``), with the CPUs of that node to itself: nothing else
  is scheduled there while it runs. The node's address and CPU model are recorded in results.json
  (``environment["timed_on"]``), and each row records the node that built it (``built_on``).
- Files: the workers read the study's model cache and write the .tflite files in the output
  directory, so on a cluster ``--output_dir`` must be on storage every node shares (NFS, as Ray
  Train's ``storage_path``); a row whose file the driver cannot see fails with that reason.

``--ray_address``: empty starts an embedded local instance (its addresses on the loopback
interface); ``auto`` or ``HOST:PORT`` joins a running cluster.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import platform
import socket
import time
from collections.abc import Iterator, Sequence

from tfcompress._process import usable_cpus
from tfcompress.study import executor as ex
from tfcompress.study.config import StudyConfig, StudyError
from tfcompress.study.results import Row
from tfcompress.study.schedule import scheduled

LATENCY_RESOURCE = "tfcompress_latency"


def _node() -> dict:
    """Where this process runs: the Ray node's id and address, the host name and the CPU model."""
    import ray

    return {"node_id": ray.get_runtime_context().get_node_id(), "address": ray.util.get_node_ip_address(),
            "host": socket.gethostname(), "cpu": _cpu_model(), "cpus": os.cpu_count()}  # fmt: skip


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _run_job(config_dict, recipe, skeleton_dict, work_dir, reference_path, timeout_s, inputs, cpus) -> dict:
    """The body of one job's Ray task: the recipe in a child process; its row (as a dict) and node."""
    child = ex.start_isolated(config_dict, recipe, Row.from_dict(skeleton_dict), work_dir, reference_path,
                              timeout_s, inputs, ex.job_env(1, cpus=cpus))  # fmt: skip
    try:
        while not child.ended():
            time.sleep(0.05)
    except BaseException:  # the task was cancelled: the recipe process goes too
        child.kill()
        raise
    row, outputs_path = ex.finish_isolated(child)
    return {"row": row.to_dict(), "outputs_path": outputs_path, "node": _node()}


def _time_rows(config_dict, rows, x_example, environment) -> dict:
    """The body of the latency task: timing.time_rows on this node; the rows' latencies and the environment."""
    import types

    from tfcompress.study import timing
    from tfcompress.study.results import Results

    config = StudyConfig.from_dict(config_dict)
    results = Results(config=config_dict, environment=dict(environment), columns=[], metrics={})
    timed = [Row.from_dict(r) for r in rows]
    timing.time_rows(config, results, timed, types.SimpleNamespace(x_test=x_example), print)
    return {"rows": [r.to_dict() for r in timed], "environment": results.environment | {"timed_on": _node()}}


class RayExecutor(ex.Executor):
    """Runs a study's jobs as Ray tasks (see the module docstring)."""

    concurrent = True  # every job is submitted at once

    def __init__(self, config: StudyConfig, work_dir: str, inputs: dict[str, str] | None = None):
        address = config.run.ray_address
        if not address:  # read when Ray is imported: an embedded instance then binds to 127.0.0.1 (TF-STACK.md)
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        import ray

        self.ray = ray
        self.config, self.work_dir, self.inputs = config, work_dir, inputs or {}
        self.own = not ray.is_initialized()
        if self.own:
            try:
                if address:
                    ray.init(address=address, log_to_driver=False)
                else:  # embedded: this machine's cores, the latency node's resource, and this code on the workers
                    env = {"env_vars": {"PYTHONPATH": _package_root()}}
                    ray.init(num_cpus=usable_cpus(), resources={LATENCY_RESOURCE: 1}, include_dashboard=False,
                             log_to_driver=False, runtime_env=env)  # fmt: skip
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise StudyError(f"Cannot start or join Ray at {address or 'an embedded instance'!r}: {e}; "
                                 + "check --ray_address (empty, auto or HOST:PORT).") from None  # fmt: skip
        total = self.ray.cluster_resources()
        if not total.get(LATENCY_RESOURCE):
            raise StudyError(f"No node of the Ray cluster at {address!r} offers the {LATENCY_RESOURCE!r} resource the "
                             + "latency phase runs on; start one node with --resources='{\"" + LATENCY_RESOURCE
                             + "\": 1}'.")  # fmt: skip
        self.cpus = max(1, int(config.run.cpus_per_job or 1))

    def run(self, jobs: Sequence[ex.Job], reference: ex.Reference, started: ex.Started = None) -> Iterator[ex.Outcome]:
        ray = self.ray
        reference_path = ex.save_reference(reference, self.work_dir)
        task = ray.remote(num_cpus=self.cpus, max_calls=1, max_retries=0)(_run_job)

        def start(job: ex.Job):
            cpus = self.cpus * (self.config.run.workers if self._multi_worker(job) else 1)
            args = (self.config.to_dict(), job.pipeline.name, job.skeleton.to_dict(), self.work_dir,
                    reference_path, self.config.run.recipe_timeout_s, self.inputs, self.cpus)  # fmt: skip
            return task.options(num_cpus=cpus).remote(*args)

        def wait_any(refs: dict) -> int:
            ready, _ = ray.wait(list(refs.values()), num_returns=1)
            return next(index for index, ref in refs.items() if ref == ready[0])

        def stop(ref) -> None:
            ray.cancel(ref, force=True)

        # Ray's scheduler holds back what the cluster's CPUs cannot take yet: every job is submitted at once
        for job, ref in scheduled(jobs, start, wait_any, stop, started=started):
            yield self._outcome(job, ref)

    def _multi_worker(self, job: ex.Job) -> bool:
        """Whether the job fine-tunes with --strategy=multi_worker: its workers run beside it, on its node."""
        return self.config.run.strategy == "multi_worker" and bool(job.pipeline.transforms)

    def _outcome(self, job: ex.Job, ref) -> ex.Outcome:
        try:
            done = self.ray.get(ref)
        except Exception as e:  # the task itself died (its worker was killed, the node was lost)
            return ex.Outcome(job, ex._failed(job.skeleton, f"Ray task failed: {type(e).__name__}: {_first_line(e)}"))
        row = Row.from_dict(done["row"])
        row.extras["built_on"] = done["node"]
        if row.ok and row.tflite_path and not os.path.isfile(os.path.join(self.config.output_dir, row.tflite_path)):
            return ex.Outcome(job, ex._failed(job.skeleton, f"node {done['node']['address']} wrote {row.tflite_path}, "
                                              + "which this machine cannot see: --executor=ray needs --output_dir on "
                                              + "storage every node shares"))  # fmt: skip
        path = done["outputs_path"]
        return ex.Outcome(job, row, ex.Reference.load(path) if path and os.path.exists(path) else ex.Reference())

    def time_rows(self, config: StudyConfig, results, rows: list[Row], dataset, progress) -> None:
        """The latency phase as one task on the latency node, with all of that node's CPUs; rows updated in place."""
        ray = self.ray
        node_cpus = next((n["Resources"].get("CPU", 1) for n in ray.nodes()
                          if n["Alive"] and n["Resources"].get(LATENCY_RESOURCE)), 1)  # fmt: skip
        progress(f"latency: on the Ray node holding {LATENCY_RESOURCE!r} ({node_cpus:g} CPUs reserved) ...")
        task = ray.remote(num_cpus=node_cpus, resources={LATENCY_RESOURCE: 1}, max_calls=1, max_retries=0)(_time_rows)
        done = ray.get(task.remote(config.to_dict(), [r.to_dict() for r in rows], dataset.x_test[:1],
                                   results.environment))  # fmt: skip
        for row, timed in zip(rows, done["rows"], strict=True):
            new = Row.from_dict(timed)
            row.latency, row.status, row.error = new.latency, new.status, new.error
        results.environment.update(done["environment"])

    def close(self) -> None:
        if self.own:
            self.ray.shutdown()


@contextlib.contextmanager
def local_cluster(nodes: int = 2, cpus_per_node: int = 1):
    """A Ray cluster of ``nodes`` nodes on this machine (``ray.cluster_utils.Cluster``), joined, then shut down.

    The head holds the latency resource. Every address it reports must be on the loopback interface, or it is
    shut down and RuntimeError names them. Yields the nodes' addresses.
    """
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # read when Ray is imported: nodes on 127.0.0.1
    import ray
    from ray.cluster_utils import Cluster

    head = {"num_cpus": cpus_per_node, "include_dashboard": False, "resources": {LATENCY_RESOURCE: 1}}
    cluster = Cluster(initialize_head=True, head_node_args=head)
    try:
        for _ in range(nodes - 1):
            cluster.add_node(num_cpus=cpus_per_node)
        ray.init(address=cluster.address, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": _package_root()}})  # fmt: skip
        cluster.wait_for_nodes()
        addresses = [n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]] + [cluster.address.rsplit(":", 1)[0]]
        off = [a for a in addresses if not ipaddress.ip_address(a).is_loopback]
        if off:
            raise RuntimeError(f"the local Ray cluster reports addresses off the loopback interface: {off}")
        yield addresses[:-1]
    finally:
        ray.shutdown()
        cluster.shutdown()


def _package_root() -> str:
    """The folder tfcompress is imported from here, so that workers (and their recipe processes) run this code."""
    import tfcompress

    root = os.path.dirname(os.path.dirname(os.path.abspath(tfcompress.__file__)))
    return os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[-1][:300] if text else ""
