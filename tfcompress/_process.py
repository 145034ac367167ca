"""Small helpers for child processes (no package imports, so any module can use them)."""

import contextlib
import os
import re
import signal
import sys
import tempfile

# What the TFLite converter prints on every quantized conversion, and nothing a user needs.
CONVERTER_NOTICES = re.compile(r"^fully_quantize: \d|^WARNING: All log messages before absl")


def die_with_parent(parent_pid: int) -> None:
    """Asks Linux to SIGKILL this process when its parent dies; exits if the parent is already gone."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, int(signal.SIGKILL))  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: children may outlive a killed parent
        return
    if os.getppid() != parent_pid:
        os._exit(1)


def describe_exit(returncode: int) -> str:
    """'killed by signal SIGABRT' or 'exited with status 3'."""
    if returncode < 0:
        try:
            return f"killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with status {returncode}"


@contextlib.contextmanager
def quiet_stderr(noise: re.Pattern):
    """Captures the process's standard error (file descriptor 2, native libraries included) for the block.

    When the block ends, every captured line that ``noise`` does not match is
    written back to standard error, so real errors and warnings still show.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in capture.read().decode(errors="replace").splitlines(keepends=True):
                if not noise.search(line):
                    sys.stderr.write(line)


def usable_cpus() -> int:
    """The CPU cores this process may run on (its affinity where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def job_cpus() -> int:
    """The CPUs this job may use: its share when a study runs several at once (TFCOMPRESS_JOB_CPUS), else all."""
    try:
        return max(1, int(os.environ["TFCOMPRESS_JOB_CPUS"]))
    except (KeyError, ValueError):
        return usable_cpus()
