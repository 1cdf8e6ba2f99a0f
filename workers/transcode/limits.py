"""What a transcode job may take, read once from the environment."""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

GB = 1024 ** 3


def _default_threads() -> int:
    # x264's own default is 1.5 × cores; the cap keeps a pod on a big node from spawning dozens
    return max(1, min(8, round(1.5 * len(os.sched_getaffinity(0)))))


@dataclass(frozen=True)
class Limits:
    max_duration_s: float = 600.0
    max_dimension: int = 4096         # width and height of the source, in pixels
    max_streams: int = 8              # all streams (phones add timecode and metadata tracks)
    timeout_s: float = 600.0          # wall time of one ffmpeg run
    threads: int = 2
    max_output_bytes: int = 2 * GB    # RLIMIT_FSIZE of ffmpeg: no file it writes grows past this
    tmpdir: str = tempfile.gettempdir()

    @classmethod
    def from_env(cls) -> "Limits":
        env = os.environ.get
        return cls(
            max_duration_s=float(env("MAX_VIDEO_DURATION_S") or cls.max_duration_s),
            max_dimension=int(env("MAX_VIDEO_DIMENSION") or cls.max_dimension),
            max_streams=int(env("MAX_VIDEO_STREAMS") or cls.max_streams),
            timeout_s=float(env("TRANSCODE_TIMEOUT_S") or cls.timeout_s),
            threads=int(env("TRANSCODE_THREADS") or _default_threads()),
            max_output_bytes=int(env("TRANSCODE_MAX_OUTPUT_BYTES") or cls.max_output_bytes),
            tmpdir=env("TRANSCODE_TMPDIR") or tempfile.gettempdir(),
        )

    @property
    def cpu_s(self) -> int:
        """RLIMIT_CPU of one ffmpeg run: every thread busy for the whole timeout, and a margin."""
        return int(self.timeout_s * (self.threads + 1)) + 10
