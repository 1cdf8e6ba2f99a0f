"""At start: ffmpeg cannot read the worker's secrets (sandbox.protect), and the ffmpeg on PATH can
run every command of commands.py, or the worker refuses.

An ffmpeg built without one of these fails only when a video needs it (zscale: HDR clips), and
its owner would be told the video is damaged. Checked once, the pod refuses to start instead,
with the fix in its log line.
"""
from __future__ import annotations

import shutil
import subprocess

from workers.transcode import sandbox
from workers.transcode.limits import Limits

FILTERS = ("fps", "format", "scale", "setsar", "split", "tonemap", "trim", "zscale")
ENCODERS = ("aac", "libx264", "mjpeg")


def check() -> None:
    """RuntimeError naming what is missing or unsafe; nothing when this ffmpeg has all we use and
    cannot read the worker's secrets. (It makes the calling process non-dumpable, for good.)"""
    sandbox.protect(Limits.from_env().tmpdir)  # first: before ffmpeg runs at all
    for tool in ("ffmpeg", "ffprobe"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not on PATH: install ffmpeg (Debian's package has all the transcoder uses)")
    filters, encoders = _names("-filters"), _names("-encoders")
    missing = [f"filter {f}" for f in FILTERS if f not in filters] + [f"encoder {e}" for e in ENCODERS
                                                                       if e not in encoders]
    if missing:
        raise RuntimeError(f"this ffmpeg lacks {', '.join(missing)}: install one built with libx264 and libzimg "
                           "(Debian's ffmpeg package is)")


def _names(listing: str) -> set[str]:
    """The second column of `ffmpeg -filters` / `-encoders`: the names."""
    out = subprocess.run(["ffmpeg", "-hide_banner", listing], capture_output=True, text=True, timeout=30).stdout
    return {fields[1] for fields in (line.split() for line in out.splitlines()) if len(fields) > 1}
