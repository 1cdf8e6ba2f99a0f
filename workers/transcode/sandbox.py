"""ffmpeg and ffprobe boxed in: an argument list (never a shell), a minimal environment, a time
limit, resource limits, a private scratch directory removed whatever happens, and no way to read
the worker's secrets (see protect)."""
from __future__ import annotations

import contextlib
import ctypes
import fcntl
import functools
import os
import pwd
import resource
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass

PREFIX = "spotter-transcode-"
_ENV = {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"), "LC_ALL": "C"}  # no secrets
_PR_SET_PDEATHSIG, _PR_GET_DUMPABLE, _PR_SET_DUMPABLE, _PR_SET_NO_NEW_PRIVS = 1, 3, 4, 38
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux: the time limit still holds
    _prctl = None


def protect(tmpdir: str) -> None:
    """At worker start: ffmpeg, which parses untrusted files, must not read this process's secrets
    (its environment, its memory). RuntimeError when that does not hold.

    A non-dumpable process's /proc/<pid>/environ, mem, fd/… are closed to other processes of its
    uid unless they have CAP_SYS_PTRACE (execve makes ffmpeg itself dumpable again). Root has
    that capability, so under root run() also drops ffmpeg to the sandbox user. The check is the
    attack itself, made through run()."""
    if _prctl is None or _prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0 or _prctl(_PR_GET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise RuntimeError("cannot make the worker non-dumpable (prctl PR_SET_DUMPABLE): ffmpeg could read its "
                           "environment; run it on Linux")
    try:
        with scratch_dir(tmpdir) as tmp:
            with open(os.path.join(tmp, "input"), "w") as f:
                f.write("ok")
            done = run(["sh", "-c", f"cat input > output; exec cat /proc/{os.getpid()}/environ"], cwd=tmp,
                       timeout_s=30, max_file_bytes=1 << 20, cpu_s=30)
            copied = ""
            with contextlib.suppress(FileNotFoundError), open(os.path.join(tmp, "output")) as f:
                copied = f.read()
    except (OSError, TimedOut) as exc:
        raise RuntimeError(f"the ffmpeg sandbox does not work in {tmpdir} (TRANSCODE_TMPDIR): {exc}") from None
    if done.returncode == 0 or done.stdout:
        raise RuntimeError("a sandboxed command can read this worker's environment: run the worker as a non-root "
                           "user without CAP_SYS_PTRACE (Kubernetes: capabilities drop ALL), or as root so that "
                           "ffmpeg runs as TRANSCODE_SANDBOX_USER")
    if copied != "ok":
        raise RuntimeError(f"ffmpeg's user cannot read and write its scratch dir in {tmpdir} (TRANSCODE_TMPDIR): "
                           f"{done.stderr_tail[-300:]}")


@functools.cache
def sandbox_ids() -> tuple[int, int] | None:
    """(uid, gid) ffmpeg runs as under a root worker: TRANSCODE_SANDBOX_USER (nobody). None when not
    root: without CAP_SETUID there is no other user to become; non-dumpability protects the worker."""
    if os.geteuid() != 0:
        return None
    name = os.environ.get("TRANSCODE_SANDBOX_USER") or "nobody"
    try:
        user = pwd.getpwnam(name)
    except KeyError:
        raise RuntimeError(f"TRANSCODE_SANDBOX_USER {name!r} is not a user here: name an unprivileged one") from None
    if user.pw_uid == 0 or user.pw_gid == 0:
        raise RuntimeError(f"TRANSCODE_SANDBOX_USER {name!r} is root or in its group: name an unprivileged user")
    return user.pw_uid, user.pw_gid


class TimedOut(Exception):
    """The run passed its time limit and was killed."""


@dataclass(frozen=True)
class Finished:
    returncode: int   # negative: killed by that signal (SIGXCPU, SIGXFSZ, …)
    stdout: bytes
    stderr_tail: str


def run(argv: list[str], *, cwd: str, timeout_s: float, max_file_bytes: int, cpu_s: int,
        max_stdout_bytes: int = 4 * 1024 * 1024) -> Finished:
    """Run argv in cwd; stdout and stderr go to files there (bounded by RLIMIT_FSIZE, not memory).

    The child starts in cwd (subprocess changes to it before dropping to the sandbox user), so
    paths inside cwd are given relative to it: that user need not traverse cwd's parents."""
    fsize, cpu = _within_hard(resource.RLIMIT_FSIZE, max_file_bytes), _within_hard(resource.RLIMIT_CPU, cpu_s)
    ids = sandbox_ids()
    inside = cwd.rstrip("/") + "/"
    argv = ["./" + a[len(inside):] if a.startswith(inside) else a for a in argv]

    def limit() -> None:  # in the child, between fork and exec: syscalls only
        resource.setrlimit(resource.RLIMIT_FSIZE, fsize)
        resource.setrlimit(resource.RLIMIT_CPU, cpu)  # soft: SIGXCPU; the hard limit 5 s later: SIGKILL
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        # RLIMIT_AS is left alone: x264 reserves large thread stacks and fails under it
        if _prctl is not None:  # (subprocess has already dropped the uid: a uid change clears PDEATHSIG)
            _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # if this worker dies (even SIGKILL), ffmpeg dies with it
            _prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)   # no setuid binary or file capability regains privileges

    name = os.path.basename(argv[0])
    drop = {"user": ids[0], "group": ids[1], "extra_groups": []} if ids else {}
    with _fresh(os.path.join(cwd, f"{name}.out")) as out, _fresh(os.path.join(cwd, f"{name}.err")) as err:
        if ids:
            _lend(cwd, ids[1])
        try:
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=cwd, env=_ENV,
                                  timeout=timeout_s, preexec_fn=limit, close_fds=True, **drop)
        except subprocess.TimeoutExpired:  # run() has killed and reaped it
            raise TimedOut(f"{name} ran longer than {timeout_s:g} s") from None
        finally:
            if ids:  # taken back: anything ffmpeg left running can no longer look up a name in cwd
                os.chmod(cwd, 0o700)
        out.seek(0)
        stdout = out.read(max_stdout_bytes + 1)
        err.seek(max(0, os.fstat(err.fileno()).st_size - 2000))
        tail = err.read().decode(errors="replace")
    if len(stdout) > max_stdout_bytes:
        return Finished(-1, b"", f"{name} wrote more than {max_stdout_bytes} bytes")
    return Finished(proc.returncode, stdout, tail)


def _fresh(path: str):
    """A new file of ours, read back through its descriptor: never what a previous sandboxed run
    left under that name (a link to the worker's /proc/self/environ, say)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return open(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600), "w+b")


def _lend(cwd: str, gid: int) -> None:
    """Open cwd to the sandbox group for one run: the worker's files there readable (its input),
    new files creatable (its output); sticky, so it cannot replace or remove the worker's files.
    Others stay out. No sandboxed process can enter meanwhile: cwd has been 0700 since the last run."""
    for entry in os.scandir(cwd):
        st = entry.stat(follow_symlinks=False)
        if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid():
            os.chown(entry.path, -1, gid, follow_symlinks=False)
            os.chmod(entry.path, 0o640)
    os.chown(cwd, -1, gid)
    os.chmod(cwd, 0o1770)


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
