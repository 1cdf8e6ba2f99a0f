"""A compromised ffmpeg (it parses untrusted files) must get nothing of the transcode worker's
secrets: not from /proc/<worker>/environ or mem, not through links it leaves for the worker.
Each test is the attack, made through the sandbox the worker runs ffmpeg in."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from tests.support.processes import REPO
from tests.support.rabbit import wait_for
from tests.support.media import publish_verified, upload
from workers.transcode import job, sandbox
from workers.transcode.errors import Rejected

# /proc/$PPID is the worker: sandbox.run forks the command directly
READ_PARENT = ("cat /proc/$PPID/environ; head -c 64 /proc/$PPID/mem; ls /proc/$PPID/fd")

HARDENED_RUN = """
import json, sys
from workers.transcode import worker as transcode
from workers.transcode import sandbox

transcode.WORKER.startup()  # what `workers run transcode` does before consuming
with sandbox.scratch_dir(sys.argv[2]) as tmp:
    done = sandbox.run(["sh", "-c", sys.argv[1]], cwd=tmp, timeout_s=30, max_file_bytes=1 << 20, cpu_s=30)
print(json.dumps({"returncode": done.returncode, "out": done.stdout.decode(errors="replace"),
                  "err": done.stderr_tail}))
"""


def denied(stderr: str, proc_file: str) -> bool:
    return any(f"/{proc_file}" in line and "Permission denied" in line for line in stderr.splitlines())


def test_a_sandboxed_command_reads_nothing_of_the_worker_process(tmp_path):
    # Given a process that started as the transcode worker does, holding secrets in its environment
    secret, password = uuid.uuid4().hex, uuid.uuid4().hex
    env = {**os.environ, "S3_SECRET_KEY": secret, "VIDEO_DATABASE_URL": f"postgresql://spotter:{password}@db/video",
           "TRANSCODE_TMPDIR": str(tmp_path)}
    # When the command it runs as ffmpeg tries to read its environment, memory and open files
    started = subprocess.run([sys.executable, "-c", HARDENED_RUN, READ_PARENT, str(tmp_path)], env=env, cwd=REPO,
                             capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stderr[-2000:]
    done = json.loads(started.stdout.splitlines()[-1])
    # Then it gets nothing: permission denied, every one
    assert secret not in done["out"] + done["err"] and password not in done["out"] + done["err"]
    assert done["out"] == "" and done["returncode"] != 0
    assert all(denied(done["err"], what) for what in ("environ", "mem", "fd")), done["err"]


def test_the_worker_hands_a_hostile_ffprobe_nothing(start_worker, make_database, s3_env, storage, rmq, tmp_path):
    # Given a transcode worker whose ffprobe is compromised: what it reads of its parent (the
    # worker) comes back in its error output, which the worker logs with the rejection
    tools = Path(tempfile.mkdtemp(prefix="spotter-hostile-"))  # under /tmp: the sandbox user must reach it
    try:
        tools.chmod(0o755)
        fake = tools / "ffprobe"
        fake.write_text("#!/bin/sh\ntr '\\0' '\\n' < /proc/$PPID/environ | grep -E '^(S3_|VIDEO_DATABASE_URL)' >&2\n"
                        "head -c 64 /proc/$PPID/mem >&2\nexit 1\n")
        fake.chmod(0o755)
        database = make_database("video")
        scratch = tmp_path / "scratch"
        scratch.mkdir()
        worker = start_worker("transcode", VIDEO_DATABASE_URL=database, TRANSCODE_TMPDIR=scratch,
                              PATH=f"{tools}:{os.environ['PATH']}", **s3_env)
        wait_for(lambda: any(l.get("msg") == "consuming" for l in worker.logs()) or not worker.alive(),
                 timeout=30, message="transcode worker consuming")
        assert worker.alive(), worker.text()[-2000:]
        # When an upload reaches it
        clip = tmp_path / "clip.mp4"
        clip.write_bytes(b"\0" * 1000)
        publish_verified(rmq, upload(storage, clip))
        rejected = wait_for(lambda: [l for l in worker.logs() if l.get("msg") == "video rejected"], timeout=60,
                            message="the upload rejected")
    finally:
        shutil.rmtree(tools)
    # Then ffprobe was refused its parent's environment and memory, and no secret reached the log
    detail = rejected[0]["detail"]
    assert denied(detail, "environ") and denied(detail, "mem"), detail
    log = worker.text()
    assert database not in log and "S3_SECRET_KEY=" not in log and "VIDEO_DATABASE_URL=" not in log


def test_links_a_sandboxed_run_leaves_are_never_followed_by_the_worker(storage, tmp_path):
    # Given a file only the worker may read, and a sandboxed run that leaves links to it where the
    # worker will write the next run's stderr and read a thumbnail to upload
    secret = tmp_path / "secret"
    secret.write_text("only the worker reads this")
    secret.chmod(0o600)
    with sandbox.scratch_dir(str(tmp_path)) as tmp:
        planted = sandbox.run(["sh", "-c", f"ln -s {secret} cat.err && ln -s {secret} thumb.jpg"], cwd=tmp,
                              timeout_s=30, max_file_bytes=1 << 20, cpu_s=30)
        assert planted.returncode == 0, planted.stderr_tail
        # When the next run fails and the job uploads the "thumbnail"
        later = sandbox.run(["cat", "no-such-file"], cwd=tmp, timeout_s=30, max_file_bytes=1 << 20, cpu_s=30)
        with pytest.raises(Rejected) as caught:
            job.put(storage, os.path.join(tmp, "thumb.jpg"), f"media/{uuid.uuid4()}/thumb.jpg", "image/jpeg")
    # Then the secret was neither overwritten nor read, and nothing was uploaded
    assert secret.read_text() == "only the worker reads this"
    assert "no-such-file" in later.stderr_tail and "only the worker" not in later.stderr_tail
    assert caught.value.code == "transcode_failed"
    assert storage.list("media/") == []


@pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox user applies to a root worker")
@pytest.mark.parametrize("user", ["root", "no-such-user-here"])
def test_a_root_worker_refuses_to_start_unless_ffmpeg_can_run_as_an_unprivileged_user(
        start_worker, make_database, s3_env, user):
    worker = start_worker("transcode", VIDEO_DATABASE_URL=make_database("video"), TRANSCODE_SANDBOX_USER=user,
                          **s3_env)
    assert worker.proc.wait(60) == 2
    (refusal,) = [l for l in worker.logs() if l.get("msg") == "refusing to start"]
    assert "TRANSCODE_SANDBOX_USER" in refusal["error"], refusal
