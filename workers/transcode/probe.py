"""ffprobe on a local file, and the checks that decide whether an upload is one playable video."""
from __future__ import annotations

import json
from dataclasses import dataclass

from workers.transcode import sandbox
from workers.transcode.errors import Rejected
from workers.transcode.limits import Limits

# ffprobe's format_name of an accepted container → the demuxer ffmpeg is then pinned to
DEMUXERS = {"mov,mp4,m4a,3gp,3g2,mj2": "mov", "matroska,webm": "matroska"}
# Given to every ffprobe and ffmpeg run: no other demuxer even opens the file, so a playlist
# (hls, concat, …) renamed .mp4 is refused before it could name another file or URL.
FORMAT_WHITELIST = ",".join(DEMUXERS)
VIDEO_CODECS = frozenset({"h264", "hevc", "vp8", "vp9", "av1", "mpeg4"})
PROBE_TIMEOUT_S = 30


@dataclass(frozen=True)
class Colour:
    """How the source's pixel values are to be read, as ffprobe names it ('' when not tagged)."""
    transfer: str = ""    # color_transfer: bt709, arib-std-b67 (HLG), smpte2084 (PQ), …
    primaries: str = ""   # color_primaries: bt709, bt2020, …
    matrix: str = ""      # color_space: bt709, bt2020nc, …
    range: str = ""       # color_range: tv (limited) or pc (full)

    @property
    def hdr(self) -> bool:
        return self.transfer in ("arib-std-b67", "smpte2084")

    @property
    def wide_gamut(self) -> bool:
        return self.primaries == "bt2020" or self.matrix in ("bt2020nc", "bt2020c")


@dataclass(frozen=True)
class MediaInfo:
    demuxer: str
    duration_s: float | None   # None: the container does not say (e.g. a browser recording)
    width: int                 # as displayed: rotation and pixel aspect applied
    height: int
    video_index: int
    video_codec: str
    audio_index: int | None
    fps: float | None
    size_bytes: int = 0
    colour: Colour = Colour()


def ffprobe(path: str, cwd: str) -> dict:
    argv = ["ffprobe", "-v", "error", "-protocol_whitelist", "file", "-format_whitelist", FORMAT_WHITELIST,
            "-show_format", "-show_streams", "-of", "json", path]
    try:
        done = sandbox.run(argv, cwd=cwd, timeout_s=PROBE_TIMEOUT_S, max_file_bytes=64 * 1024 * 1024,
                           cpu_s=PROBE_TIMEOUT_S)
    except sandbox.TimedOut as exc:
        raise Rejected("not_a_video", "We could not read this file as a video.", str(exc)) from None
    if done.returncode != 0:
        if "not on whitelist" in done.stderr_tail:
            playlist = any(w in done.stderr_tail for w in ("[hls", "[concat", "m3u8", "[dash"))
            raise Rejected("unsupported_format", "Playlists and streaming links are not accepted: upload the video "
                           "file itself (MP4, MOV or WebM)." if playlist else
                           "This file type is not supported: upload an MP4, MOV or WebM video.", done.stderr_tail)
        raise Rejected("not_a_video", "We could not read this file as a video. It may be damaged or incomplete.",
                       done.stderr_tail)
    try:
        return json.loads(done.stdout)
    except ValueError:
        raise Rejected("not_a_video", "We could not read this file as a video.", "ffprobe output is not JSON") from None


def inspect(probe: dict, limits: Limits) -> MediaInfo:
    """The source's facts, or Rejected with a reason its owner can act on."""
    fmt = probe.get("format") or {}
    demuxer = DEMUXERS.get(fmt.get("format_name", ""))
    if demuxer is None:
        raise Rejected("unsupported_format", "This file type is not supported: upload an MP4, MOV or WebM video.",
                       f"format {fmt.get('format_name')!r}")
    streams = probe.get("streams") or []
    if len(streams) > limits.max_streams:
        raise Rejected("too_many_streams", f"This video has {len(streams)} tracks; at most {limits.max_streams} "
                       "are accepted.")
    videos = [s for s in streams if s.get("codec_type") == "video"
              and not (s.get("disposition") or {}).get("attached_pic")]  # cover art is not a second video
    audios = [s for s in streams if s.get("codec_type") == "audio"]
    if not videos:
        raise Rejected("not_a_video", "This file has no video track.")
    if len(videos) > 1:
        raise Rejected("too_many_streams", "This file holds more than one video track; upload a single video.")
    video = videos[0]
    codec = video.get("codec_name") or "unknown"
    if codec not in VIDEO_CODECS:
        raise Rejected("unsupported_codec", f"This video is encoded with {codec[:20]}, which is not supported: "
                       "use H.264, HEVC, VP8, VP9, AV1 or MPEG-4.")
    width, height = _int(video.get("width")), _int(video.get("height"))
    if not width or not height:
        raise Rejected("not_a_video", "We could not read the picture size of this video.")
    if width > limits.max_dimension or height > limits.max_dimension:
        raise Rejected("resolution_too_large", f"This video is {width}×{height}; the largest accepted is "
                       f"{limits.max_dimension}×{limits.max_dimension}.")
    duration = as_float(fmt.get("duration")) or as_float(video.get("duration"))
    if duration is not None and duration > limits.max_duration_s:
        raise Rejected("too_long", f"This video is {minutes(duration)} long; the longest accepted is "
                       f"{minutes(limits.max_duration_s)}.")
    display_w = width * _ratio(video.get("sample_aspect_ratio"), default=1.0)
    if round(rotation(video)) % 180 == 90:  # phones store portrait as landscape frames plus a display matrix
        display_w, height = height, display_w
    return MediaInfo(demuxer=demuxer, duration_s=duration, width=round(display_w), height=round(height),
                     video_index=int(video["index"]), video_codec=codec,
                     audio_index=_sound_track(audios),
                     fps=_ratio(video.get("avg_frame_rate")) or _ratio(video.get("r_frame_rate")),
                     size_bytes=_int(fmt.get("size")) or 0,
                     colour=Colour(*(str(video.get(k) or "") for k in ("color_transfer", "color_primaries",
                                                                       "color_space", "color_range"))))


def _sound_track(audios: list[dict]) -> int | None:
    """The audio stream to keep: the default one ffmpeg can decode, else the first it can.

    Phones add tracks: an iPhone with spatial audio stores an APAC track (which ffmpeg cannot
    decode) beside its AAC one, and some cameras a second language or commentary track. A
    video whose only sound is undecodable is still a video: it comes out silent.
    """
    decodable = [a for a in audios if a.get("codec_name") not in (None, "", "none", "unknown")]
    decodable.sort(key=lambda a: not (a.get("disposition") or {}).get("default"))
    return int(decodable[0]["index"]) if decodable else None


def rotation(stream: dict) -> float:
    """Degrees of the display matrix (side data), or of the older `rotate` tag."""
    for side in stream.get("side_data_list") or []:
        if "rotation" in side:
            return as_float(side["rotation"]) or 0.0
    return as_float((stream.get("tags") or {}).get("rotate")) or 0.0


def as_float(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number and abs(number) != float("inf") else None


def _int(value) -> int | None:
    number = as_float(value)
    return int(number) if number is not None else None


def _ratio(text, default: float | None = None) -> float | None:
    """'30000/1001' or '4:3' → a positive float; '0/0', 'N/A' → default."""
    try:
        num, den = str(text).replace(":", "/").split("/")
        value = float(num) / float(den)
    except (ValueError, ZeroDivisionError):
        return default
    return value if value > 0 else default


def minutes(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d} min" if seconds >= 60 else f"{seconds} s"
