"""Running one recipe of a study in a child process, so that nothing it does can end the study.

A recipe may raise, abort or segfault inside the converter or the interpreter
(native code), or run for too long. ``run_isolated`` runs it in a fresh
Python process (``python -m tfcompress.isolation JOB.json``) that rebuilds the
study's model and data from the configuration, runs the recipe exactly as an
in-process study would, and writes its row as JSON. Whatever happens to the
child, the parent gets a row back: the child's own, or a failed one naming
the exit status, the signal or the time-out.

Children die with their parent (Linux PR_SET_PDEATHSIG), so killing a study
with SIGKILL leaves no orphaned recipe or latency process behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from tfcompress._process import describe_exit, die_with_parent
from tfcompress.results import Row, Status, write_atomic


def _last_line(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError:
        return ""
    # Skip TensorFlow's start-up chatter; the reason is usually the last real line.
    lines = [line for line in lines if not line.startswith(("I0000", "W0000", "E0000", "WARNING: All log", "INFO:"))]
    return lines[-1][:300] if lines else ""


def run_isolated(
    config_dict: dict,
    recipe: str,
    skeleton: Row,
    work_dir: str,
    fp32_top1_path: str | None,
    timeout_s: float,
) -> tuple[Row, str | None]:
    """Runs one recipe of a study in a child process.

    Args:
      config_dict: the study's StudyConfig.to_dict().
      recipe: the recipe spec (a pipeline name).
      skeleton: the row to fill in if the child dies (task, model, recipe, params).
      work_dir: a private folder for the job's files.
      fp32_top1_path: the baseline's top-1 predictions (.npy), for agreement.
      timeout_s: the child is killed after this many seconds.

    Returns:
      (row, path of this row's top-1 predictions .npy or None).
    """
    fd, job_path = tempfile.mkstemp(prefix="job-", suffix=".json", dir=work_dir)
    os.close(fd)
    stem = job_path[: -len(".json")]
    job = {
        "config": config_dict,
        "recipe": recipe,
        "fp32_top1": fp32_top1_path,
        "row_out": stem + "-row.json",
        "top1_out": stem + "-top1.npy",
        "parent_pid": os.getpid(),
    }
    write_atomic(job_path, json.dumps(job))
    stderr_path = stem + "-stderr.txt"
    with open(stderr_path, "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "tfcompress.isolation", job_path], stderr=stderr)
        try:
            returncode = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()  # its latency child dies with it (die_with_parent)
            proc.wait()
            return _failed(skeleton, f"recipe timed out after {timeout_s:g} s (--recipe_timeout_s)"), None
        except BaseException:  # Ctrl-C or SIGTERM in the parent: take the child down too
            proc.kill()
            proc.wait()
            raise
    if returncode == 0 and os.path.exists(job["row_out"]):
        with open(job["row_out"], encoding="utf-8") as f:
            row = Row.from_dict(json.load(f))
        return row, job["top1_out"] if os.path.exists(job["top1_out"]) else None
    detail = _last_line(stderr_path)
    return _failed(skeleton, f"recipe process {describe_exit(returncode)}" + (f": {detail}" if detail else "")), None


def _failed(skeleton: Row, error: str) -> Row:
    row = Row(task=skeleton.task, model=skeleton.model, recipe=skeleton.recipe, params=skeleton.params)
    row.status = Status.FAILED
    row.error = error
    return row


def _main(job_path: str) -> int:
    with open(job_path, encoding="utf-8") as f:
        job = json.load(f)
    die_with_parent(job["parent_pid"])
    import numpy as np

    from tfcompress import study

    config = study.StudyConfig(**job["config"])
    fp32_top1 = np.load(job["fp32_top1"], allow_pickle=False) if job["fp32_top1"] else None
    row, top1 = study.run_one(config, job["recipe"], fp32_top1)
    if top1 is not None:
        buf_path = job["top1_out"]
        with open(buf_path + ".tmp", "wb") as f:
            np.save(f, top1, allow_pickle=False)
        os.replace(buf_path + ".tmp", buf_path)
    write_atomic(job["row_out"], json.dumps(row.to_dict(), allow_nan=False))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1]))
