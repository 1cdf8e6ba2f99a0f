"""ffmpeg and ffprobe boxed in: an argument list (never a shell), a minimal environment, a time
limit, resource limits, and a private scratch directory removed whatever happens."""
from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import resource
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass

PREFIX = "spotter-transcode-"
_ENV = {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"), "LC_ALL": "C"}  # no secrets
_PR_SET_PDEATHSIG = 1
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux: the time limit still holds
    _prctl = None


class TimedOut(Exception):
    """The run passed its time limit and was killed."""


@dataclass(frozen=True)
class Finished:
    returncode: int   # negative: killed by that signal (SIGXCPU, SIGXFSZ, …)
    stdout: bytes
    stderr_tail: str


def run(argv: list[str], *, cwd: str, timeout_s: float, max_file_bytes: int, cpu_s: int,
        max_stdout_bytes: int = 4 * 1024 * 1024) -> Finished:
    """Run argv in cwd; stdout and stderr go to files there (bounded by RLIMIT_FSIZE, not memory)."""
    fsize, cpu = _within_hard(resource.RLIMIT_FSIZE, max_file_bytes), _within_hard(resource.RLIMIT_CPU, cpu_s)

    def limit() -> None:  # in the child, between fork and exec: syscalls only
        resource.setrlimit(resource.RLIMIT_FSIZE, fsize)
        resource.setrlimit(resource.RLIMIT_CPU, cpu)  # soft: SIGXCPU; the hard limit 5 s later: SIGKILL
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        # RLIMIT_AS is left alone: x264 reserves large thread stacks and fails under it
        if _prctl is not None:  # if this worker dies (even SIGKILL), ffmpeg dies with it
            _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)

    name = os.path.basename(argv[0])
    out_path, err_path = os.path.join(cwd, f"{name}.out"), os.path.join(cwd, f"{name}.err")
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        try:
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=cwd, env=_ENV,
                                  timeout=timeout_s, preexec_fn=limit, close_fds=True)
        except subprocess.TimeoutExpired:  # run() has killed and reaped it
            raise TimedOut(f"{name} ran longer than {timeout_s:g} s") from None
    with open(out_path, "rb") as f:
        stdout = f.read(max_stdout_bytes + 1)
    with open(err_path, "rb") as f:
        f.seek(max(0, os.path.getsize(err_path) - 2000))
        tail = f.read().decode(errors="replace")
    if len(stdout) > max_stdout_bytes:
        return Finished(-1, b"", f"{name} wrote more than {max_stdout_bytes} bytes")
    return Finished(proc.returncode, stdout, tail)


def _within_hard(which: int, soft: int) -> tuple[int, int]:
    """(soft, hard) for the child: a container may already cap the hard limit, never raise it."""
    _, hard = resource.getrlimit(which)
    if hard == resource.RLIM_INFINITY:
        return soft, (soft + 5 if which == resource.RLIMIT_CPU else soft)
    return min(soft, hard), hard if which == resource.RLIMIT_CPU else min(soft, hard)


@contextlib.contextmanager
def scratch_dir(parent: str):
    """A 0700 directory for one job, removed on exit. It holds a lock while in use, so a later
    process can tell the leftovers of a killed worker (see sweep_stale) from live jobs."""
    with tempfile.TemporaryDirectory(prefix=PREFIX, dir=parent, ignore_cleanup_errors=True) as path:
        os.chmod(path, 0o700)  # mkdtemp's default; said out loud because it matters
        fd = os.open(os.path.join(path, ".lock"), os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield path
        finally:
            os.close(fd)


def sweep_stale(parent: str, min_age_s: float = 60) -> list[str]:
    """Remove scratch dirs whose job died without cleaning up (SIGKILL, OOM): their lock is free."""
    removed = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(PREFIX):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if not entry.is_dir(follow_symlinks=False) or st.st_uid != os.getuid() \
                    or time.time() - st.st_mtime < min_age_s:  # too young: its owner may not hold the lock yet
                continue
            fd = os.open(os.path.join(entry.path, ".lock"), os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW, 0o600)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # a live job
        finally:
            os.close(fd)  # (an acquired lock goes with it; nobody else wants a dead dir)
        shutil.rmtree(entry.path, ignore_errors=True)
        removed.append(entry.path)
    return removed
