"""Running the real `workers` CLI and gunicorn as subprocesses, with their JSON logs captured."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STARTED: list["Process"] = []  # every process of the session, so its logs can be searched at the end


class Process:
    def __init__(self, args: list[str], env: dict):
        self.args = args
        self.log_path = Path(tempfile.mkstemp(prefix="spotter-", suffix=".log")[1])
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, env={**os.environ, **env}, cwd=REPO,
                                     stdout=self._log, stderr=subprocess.STDOUT)
        STARTED.append(self)

    def logs(self) -> list[dict]:
        lines = []
        for raw in self.log_path.read_bytes().splitlines():
            try:
                lines.append(json.loads(raw))
            except ValueError:
                lines.append({"raw": raw.decode(errors="replace")})
        return lines

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def terminate(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def workers_cli(*args: str, env: dict) -> Process:
    return Process([sys.executable, "-m", "workers", *args], env)


def run_cli(*args: str, env: dict, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "workers", *args], env={**os.environ, **env}, cwd=REPO,
                            capture_output=True, text=True, input=input, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"workers {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def answering_queries(proc) -> bool:
    """True once a worker process consumes its query queue (it logs "answering queries")."""
    return any(line.get("msg") == "answering queries" for line in proc.logs())


def descendants(pid: int) -> set[int]:
    """Pids of every living process under `pid` (children, their children, …), from /proc."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if fields[0] != "Z":
            parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in parents.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def still_running(pids: set[int]) -> set[int]:
    """Those of `pids` that are still running (not exited, not a zombie waiting to be reaped)."""
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive
