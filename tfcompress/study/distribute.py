"""``--strategy``: the fine-tuning of training-time recipes under a tf.distribute strategy.

- ``none``: as always, one process, TensorFlow's own threads.
- ``mirrored``: ``tf.distribute.MirroredStrategy`` over this process's devices (on a CPU machine, one).
- ``multi_worker``: ``tf.distribute.MultiWorkerMirroredStrategy`` over ``--workers`` processes on this
  machine. The recipe's own process is the chief (worker 0); it starts the other workers
  (``python -m tfcompress.study.executor --worker JOB.json``), each with a TF_CONFIG naming every worker on a
  free loopback port, and each running the same pipeline on the same model and data, so that their
  ``fit`` calls meet in the same collectives. The global batch is the task's batch x workers (each
  worker takes its shard of every step). Only the chief exports into the output folder and its row is
  the study's; a worker converts into a folder of its own, and the chief records whether every
  worker's weights came out equal to its own (``workers_equal``).

Every transform of a pipeline is built and fine-tuned inside ``strategy.scope()``; the export (the
converter, the quantizer) runs outside it, as TFMOT advises for QAT (TF-STACK.md). A strategy changes a
training-time row's numbers (its batch), so it is part of that row's key; export-only rows are unchanged.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile

_STRATEGY = []  # the strategy this process created (one per process: TensorFlow allows no second)


def free_ports(n: int) -> list[int]:
    """``n`` free TCP ports on 127.0.0.1 (bound, read, released)."""
    sockets, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
        ports.append(s.getsockname()[1])
    for s in sockets:
        s.close()
    return ports


def tf_config(ports: list[int], index: int) -> str:
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})  # fmt: skip


def strategy(kind: str):
    """This process's strategy of ``kind`` (created once; multi_worker reads TF_CONFIG), or None for 'none'."""
    if kind == "none":
        return None
    if not _STRATEGY:
        import tensorflow as tf

        _STRATEGY.append(tf.distribute.MultiWorkerMirroredStrategy() if kind == "multi_worker"
                         else tf.distribute.MirroredStrategy())  # fmt: skip
    return _STRATEGY[0]


class Workers:
    """The chief's other workers of one multi_worker job: started with their TF_CONFIG, checked, stopped."""

    def __init__(self, job: dict, count: int):
        self.ports = free_ports(count)
        self.folder = tempfile.mkdtemp(prefix="workers-", dir=os.path.dirname(job["row_out"]))
        self.procs, self.outputs = [], []
        for index in range(1, count):
            out = os.path.join(self.folder, f"worker-{index}")
            worker_job = dict(job, parent_pid=os.getpid(), worker_output_dir=out)
            path = os.path.join(self.folder, f"worker-{index}.json")
            with open(path, "w", encoding="utf-8") as f:
                json.dump(worker_job, f)
            env = dict(os.environ, TF_CONFIG=tf_config(self.ports, index))
            log = open(os.path.join(self.folder, f"worker-{index}.log"), "w")  # noqa: SIM115 (closed in stop)
            command = [sys.executable, "-m", "tfcompress.study.executor", "--worker", path]
            self.procs.append((subprocess.Popen(command, env=env, stdout=log, stderr=log), log))
            self.outputs.append(out)
        os.environ["TF_CONFIG"] = tf_config(self.ports, 0)  # this process is worker 0, the chief

    def weights_equal(self, tflite_path: str) -> bool | None:
        """Whether every worker's .tflite holds the chief's kernels (None when a worker wrote none)."""
        import numpy as np

        from tfcompress.measure import tflite_graph

        mine = [w for _, w in tflite_graph.weights(tflite_path)]
        for proc, _ in self.procs:
            proc.wait(timeout=600)
        for out in self.outputs:
            theirs = [os.path.join(root, f) for root, _, files in os.walk(out) for f in files if f.endswith(".tflite")]
            if not theirs:
                return None
            other = [w for _, w in tflite_graph.weights(theirs[0])]
            if len(other) != len(mine) or not all(np.array_equal(a, b) for a, b in zip(mine, other, strict=True)):
                return False
        return True

    def stop(self) -> None:
        for proc, log in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            log.close()
        shutil.rmtree(self.folder, ignore_errors=True)
