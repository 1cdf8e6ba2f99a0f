"""Test inputs made with ffmpeg: real clips (with audio, portrait, rotated) and things that are not videos."""
from __future__ import annotations

import functools
import json
import subprocess
from pathlib import Path


def clip(path: Path, width: int = 320, height: int = 240, seconds: float = 2.0, rate: int = 25,
         audio: bool = True, rotate: int | None = None, pattern: str = "testsrc", preset: str = "ultrafast",
         audio_seconds: float | None = None, faststart: bool = False) -> Path:
    """An H.264 (+AAC) MP4 of a test pattern. `rotate` adds a display matrix (phones' portrait
    video: landscape frames shown turned), via -display_rotation where this ffmpeg has it.
    `audio_seconds` longer than `seconds` makes a video track that ends before the sound."""
    args = ["ffmpeg", "-nostdin", "-v", "error", "-y"]
    if rotate is not None and _has_display_rotation():
        args += ["-display_rotation", str(rotate)]  # an input option: applies to the next -i
    args += ["-f", "lavfi", "-i", f"{pattern}=size={width}x{height}:rate={rate}:duration={seconds}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={audio_seconds or seconds}"]
    args += ["-c:v", "libx264", "-preset", preset, "-pix_fmt", "yuv420p"]
    if audio:
        args += ["-c:a", "aac"] + ([] if audio_seconds else ["-shortest"])
    if faststart:
        args += ["-movflags", "+faststart"]
    if rotate is not None and not _has_display_rotation():
        args += ["-metadata:s:v", f"rotate={rotate}"]
    subprocess.run([*args, str(path)], check=True)
    return path


def rotated(path: Path, source: Path, rotate: int = 90) -> Path:
    """`source` with a display matrix added and its frames untouched (stream copy)."""
    args = ["ffmpeg", "-nostdin", "-v", "error", "-y"]
    if _has_display_rotation():
        args += ["-display_rotation", str(rotate), "-i", str(source), "-c", "copy"]
    else:
        args += ["-i", str(source), "-c", "copy", "-metadata:s:v", f"rotate={rotate}"]
    subprocess.run([*args, str(path)], check=True)
    return path


def browser_recording(path: Path, seconds: float = 2.0) -> Path:
    """VP8/Opus WebM written as a stream, the way MediaRecorder does: no duration in the container."""
    with open(path, "wb") as out:
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i",
                        f"testsrc=size=320x240:rate=25:duration={seconds}", "-f", "lavfi", "-i",
                        f"sine=frequency=440:duration={seconds}", "-c:v", "libvpx", "-deadline", "realtime",
                        "-c:a", "libopus", "-f", "webm", "-"], stdout=out, check=True)
    return path


def text_file(path: Path) -> Path:
    path.write_text("leg day notes: squats 5x5, lunges 3x12\n" * 20)
    return path


def truncated(path: Path, source: Path, fraction: float = 0.5) -> Path:
    """The first part of an MP4: an interrupted upload. Without +faststart the index (moov) is
    lost with the end; with it, the index promises more than the file holds."""
    data = source.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def hls_playlist(path: Path, segment_url: str = "http://127.0.0.1:9/segment.ts") -> Path:
    """An HLS playlist under a video's name: must never make ffmpeg fetch what it names."""
    path.write_text("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:4\n#EXT-X-MEDIA-SEQUENCE:0\n"
                    f"#EXTINF:4.0,\n{segment_url}\n#EXTINF:4.0,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n")
    return path


def ffprobe(path: Path) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json", str(path)],
                         capture_output=True, check=True, text=True).stdout
    return json.loads(out)


def video_stream(probe: dict) -> dict:
    return next(s for s in probe["streams"] if s["codec_type"] == "video")


def rotation(stream: dict) -> float:
    for side in stream.get("side_data_list") or []:
        if "rotation" in side:
            return float(side["rotation"])
    return float((stream.get("tags") or {}).get("rotate", 0))


@functools.cache
def _has_display_rotation() -> bool:
    out = subprocess.run(["ffmpeg", "-hide_banner", "-h", "full"], capture_output=True, text=True).stdout
    return "-display_rotation" in out


def two_sound_tracks(path: Path, seconds: float = 2.0) -> Path:
    """A 320x240 MP4 with two AAC tracks, the second marked default (a quiet 880 Hz tone); the
    first is a loud 440 Hz one, so which track a rendition kept can be heard in its volume."""
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y",
                    "-f", "lavfi", "-i", f"testsrc=size=320x240:rate=25:duration={seconds}",
                    "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
                    "-f", "lavfi", "-i", f"sine=frequency=880:sample_rate=48000:duration={seconds},volume=0.05",
                    "-map", "0:v", "-map", "1:a", "-map", "2:a", "-c:v", "libx264", "-preset", "ultrafast",
                    "-pix_fmt", "yuv420p", "-c:a", "aac", "-disposition:a:0", "0", "-disposition:a:1", "default",
                    str(path)], check=True)
    return path


def mean_volume_db(path: Path) -> float:
    """ffmpeg volumedetect's mean volume of the first audio stream."""
    done = subprocess.run(["ffmpeg", "-nostdin", "-i", str(path), "-map", "0:a:0", "-af", "volumedetect",
                           "-f", "null", "-"], capture_output=True, text=True, check=True)
    return float(done.stderr.split("mean_volume:")[1].split("dB")[0])


def phone_hdr(path: Path, seconds: float = 2.0) -> Path:
    """What an iPhone records by default: 10-bit HEVC ('hvc1') with HLG colour, 1080p frames
    shown turned 90° (portrait), AAC sound, in a MOV."""
    frames = path.with_name(path.stem + "-frames.mov")
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y",
                    "-f", "lavfi", "-i", f"testsrc2=size=1920x1080:rate=30:duration={seconds}",
                    "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
                    "-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error",
                    "-pix_fmt", "yuv420p10le", "-tag:v", "hvc1", "-color_primaries", "bt2020",
                    "-color_trc", "arib-std-b67", "-colorspace", "bt2020nc", "-c:a", "aac", "-shortest",
                    str(frames)], check=True)
    return rotated(path, frames, 90)  # the display matrix survives a stream copy, not an encode


def hdr_stripes(path: Path, transfer: str, levels: tuple[float, ...], width: int = 640, height: int = 360,
                seconds: float = 1.0) -> Path:
    """10-bit HEVC in BT.2020 with `transfer` (arib-std-b67: HLG, smpte2084: PQ): grey vertical
    stripes at the given signal levels (0–1 of the limited range), left to right."""
    stripe = width // len(levels) // 2 * 2  # even sides, as 4:2:0 needs
    width = stripe * len(levels)
    row = b"".join(round(64 + level * 876).to_bytes(2, "little") * stripe for level in levels)
    neutral = (512).to_bytes(2, "little") * (width // 2 * height // 2)
    frame = row * height + neutral * 2  # Y plane, then U and V at half size
    tags = ["-color_primaries", "bt2020", "-color_trc", transfer, "-colorspace", "bt2020nc", "-color_range", "tv"]
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "yuv420p10le",
                    "-s", f"{width}x{height}", "-r", "25", "-i", "-", "-t", str(seconds),
                    "-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error:lossless=1",
                    "-tag:v", "hvc1", *tags, str(path)], input=frame * int(25 * seconds), check=True)
    return path


def stripe_lumas(path: Path, count: int, pix_fmt: str = "yuv420p") -> list[int]:
    """The mean 8-bit luma (Y; limited range for yuv420p, full for yuvj420p) of `count` vertical
    stripes of the first frame."""
    raw = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-frames:v", "1",
                          "-vf", f"scale={count * 2}:2:flags=area", "-pix_fmt", pix_fmt, "-f", "rawvideo", "-"],
                         capture_output=True, check=True).stdout
    return [(raw[2 * i] + raw[2 * i + 1]) // 2 for i in range(count)]
