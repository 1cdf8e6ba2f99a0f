"""Benchmark: the whole transcode job against the bare ffmpeg command on the same file (DESIGN §8).

    .venv/bin/python -m tests.bench.bench_transcode [--seconds 30] [--runs 5]

A 1080p clip with audio (testsrc2 + sine) is generated once. Baseline: the worker's own transcode
command (the same arguments, rendition only), run straight on the local file. Job: the worker's
code path, called directly: download from a local S3 server (ministack over HTTP), probe,
transcode with the thumbnail, probe the rendition, upload both. Runs alternate; medians compared
(the best runs too: on a shared machine, other load only ever adds time). CPU seconds (this
process and its ffmpeg/ffprobe children) are printed as well: contention does not inflate them.
Target: job ≤ 1.15 × bare ffmpeg.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from shared.logging import setup_logging
from workers.runtime.storage import Storage, StorageConfig
from tests.support import clips
from workers.ops.localstorage import LocalS3
from workers.transcode import commands, job, probe
from workers.transcode.limits import Limits

TARGET = 1.15


class Clock:
    """Wall time, and CPU time of this process and its finished children (ffmpeg, ffprobe)."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), _cpu()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, _cpu() - self.cpu


def _cpu() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def bare_ffmpeg(source: Path, limits: Limits, workdir: Path, thumbnail: bool) -> Clock:
    info = probe.inspect(probe.ffprobe(str(source), str(workdir)), limits)  # not timed: only builds argv
    rendition, thumb = workdir / "bare.mp4", workdir / "bare.jpg"
    rendition.unlink(missing_ok=True)
    thumb.unlink(missing_ok=True)
    argv = commands.transcode(str(source), info, commands.plan(info), limits, str(rendition),
                              str(thumb) if thumbnail else None)
    with Clock() as clock:
        subprocess.run(argv, check=True, stdin=subprocess.DEVNULL)
    return clock


def whole_job(storage: Storage, limits: Limits, user: str, video: str, size: int) -> Clock:
    with Clock() as clock:
        job.run(storage, limits, user, video, job.source_key(user, video), size)
    return clock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    setup_logging("bench", "WARNING")
    limits = Limits.from_env()
    server = LocalS3().start()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-transcode-") as tmp:
            workdir = Path(tmp)
            source = workdir / "source.mp4"
            print(f"generating a {args.seconds:g} s 1920x1080 clip with audio …", flush=True)
            clips.clip(source, 1920, 1080, args.seconds, rate=30, pattern="testsrc2", preset="ultrafast")
            size = source.stat().st_size
            env = server.env(f"bench-{uuid.uuid4().hex[:12]}")
            storage = Storage(StorageConfig(env["S3_ENDPOINT_URL"], env["S3_BUCKET"], env["S3_ACCESS_KEY"],
                                            env["S3_SECRET_KEY"]))
            storage.ensure_bucket()
            user, video = str(uuid.uuid4()), str(uuid.uuid4())
            storage.upload(str(source), job.source_key(user, video), "video/mp4")
            print(f"source {size / 1e6:.1f} MB, threads {limits.threads}, {os.cpu_count()} cores; warming up …",
                  flush=True)
            bare_ffmpeg(source, limits, workdir, thumbnail=False)  # page cache, libraries, S3 connections
            whole_job(storage, limits, user, video, size)
            bare, combined, jobs = [], [], []
            for i in range(args.runs):
                bare.append(bare_ffmpeg(source, limits, workdir, thumbnail=False))
                combined.append(bare_ffmpeg(source, limits, workdir, thumbnail=True))
                jobs.append(whole_job(storage, limits, user, video, size))
                print(f"run {i + 1}: bare ffmpeg {bare[-1].wall:.2f} s, with thumbnail {combined[-1].wall:.2f} s, "
                      f"whole job {jobs[-1].wall:.2f} s", flush=True)
            b, c, j = (statistics.median(x.wall for x in runs) for runs in (bare, combined, jobs))
            bc, cc, jc = (statistics.median(x.cpu for x in runs) for runs in (bare, combined, jobs))
            print(f"bare ffmpeg (rendition only): {b:6.2f} s wall {bc:6.2f} s cpu  [medians of {args.runs}]")
            print(f"ffmpeg with thumbnail:        {c:6.2f} s wall {cc:6.2f} s cpu  ({c / b:.3f}x wall)")
            print(f"whole job:                    {j:6.2f} s wall {jc:6.2f} s cpu  ({jc / bc:.3f}x cpu)")
            best = min(x.wall for x in jobs) / min(x.wall for x in bare)
            print(f"best runs: job {min(x.wall for x in jobs):.2f} s / bare {min(x.wall for x in bare):.2f} s "
                  f"= {best:.3f}")
            ratio = j / b
            print(f"ratio job / bare ffmpeg:      {ratio:.3f}  (target ≤ {TARGET}) "
                  f"{'OK' if ratio <= TARGET else 'MISSED'}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
