"""Small helpers for child processes (no package imports, so any module can use them)."""

import os
import signal


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
