"""The ffmpeg commands of a job, built with ffmpeg-python into argument lists."""
from __future__ import annotations

from dataclasses import dataclass

import ffmpeg

from workers.transcode.limits import Limits
from workers.transcode.probe import FORMAT_WHITELIST, Colour, MediaInfo

# 720p: the short side at most 720 and the long side at most 1280, whichever way up
SHORT_SIDE, LONG_SIDE = 720, 1280
MAX_FPS = 60
# Tone mapping (_to_sdr) is the costliest step per output frame: at 30 fps an HDR clip costs
# what an SDR one does at 60 (4 s of 4K60 HLG: 3.5 s here, against 5.3 s at 60 fps and 3.2 s
# for SDR at 60), so the longest 4K60 HDR video fits TRANSCODE_TIMEOUT_S as SDR ones do.
HDR_MAX_FPS = 30
THUMBNAIL_AT_S = 1.0
THUMBNAIL_WINDOW_S = 0.5  # a frame must start in [at, at + window)
_GLOBAL = ("-nostdin", "-hide_banner", "-nostats", "-loglevel", "error")
# ffprobe's colour names → zscale's; a value not listed falls back to what phones write
_ZSCALE_TRANSFER = {"arib-std-b67": "arib-std-b67", "smpte2084": "smpte2084", "bt709": "709",
                    "bt2020-10": "2020_10", "bt2020-12": "2020_12", "smpte170m": "601"}
_ZSCALE_PRIMARIES = {"bt2020": "2020", "bt709": "709"}
_ZSCALE_MATRIX = {"bt2020nc": "2020_ncl", "bt2020c": "2020_cl", "bt709": "709"}
_ZSCALE_RANGE = {"tv": "limited", "pc": "full"}
# HDR reference white (BT.2408: 203 cd/m², 75 % of an HLG signal) becomes 1.0 in linear light,
# what the tonemap filter takes as SDR white
HDR_REFERENCE_WHITE = 203


@dataclass(frozen=True)
class Plan:
    width: int            # of the rendition, as displayed (ffmpeg autorotates before our filters)
    height: int
    thumbnail_at_s: float
    fps_cap: int | None   # a high-speed clip is brought down to this


def plan(info: MediaInfo) -> Plan:
    """Fit the displayed picture into 720p, never upscaling, with even sides (yuv420p needs them)."""
    scale = min(1.0, SHORT_SIDE / min(info.width, info.height), LONG_SIDE / max(info.width, info.height))
    # ~1 s in (the first frame is often black), earlier for a short clip; when the container does not
    # say how long it is, 1 s and the fallback of job.py if the clip turns out shorter
    at = min(THUMBNAIL_AT_S, info.duration_s / 2) if info.duration_s else THUMBNAIL_AT_S
    return Plan(width=_even(info.width * scale), height=_even(info.height * scale), thumbnail_at_s=round(at, 3),
                fps_cap=_fps_cap(info))


def _fps_cap(info: MediaInfo) -> int | None:
    """The rendition's frame rate limit, when the source goes beyond it (+0.5: 30000/1001 is 30)."""
    cap = HDR_MAX_FPS if info.colour.hdr else MAX_FPS
    return cap if info.fps and info.fps > cap + 0.5 else None


def transcode(source: str, info: MediaInfo, plan: Plan, limits: Limits, rendition: str,
              thumbnail: str | None = None) -> list[str]:
    """One run: H.264/AAC MP4 (+faststart) and, from the same decoded frames, a JPEG thumbnail."""
    src = ffmpeg.input(source, f=info.demuxer, format_whitelist=FORMAT_WHITELIST, protocol_whitelist="file",
                       threads=limits.threads)
    video = src[str(info.video_index)]  # by index: cover art or data tracks are never picked up
    if plan.fps_cap:
        video = video.filter("fps", plan.fps_cap)
    # One pixel format before the split: left to negotiation, the JPEG branch's full-range format
    # wins and every frame of the rendition pays a range conversion (+30 % CPU on 1080p).
    video = _to_sdr(video.filter("scale", plan.width, plan.height), info.colour)
    video = video.filter("format", "yuv420p").filter("setsar", 1)
    branches = video.split() if thumbnail else [video]
    streams = [branches[0]] + ([src[str(info.audio_index)]] if info.audio_index is not None else [])
    outputs = [ffmpeg.output(
        *streams, rendition, format="mp4", vcodec="libx264", preset="veryfast", crf=23, pix_fmt="yuv420p",
        acodec="aac", audio_bitrate="128k", ac=2, movflags="+faststart", threads=limits.threads,
        map_metadata=-1, map_chapters=-1,  # no GPS position or device names in what the feed serves
        t=limits.max_duration_s + 1)]     # whatever the container claims about its duration
    if thumbnail:
        # trim closes the branch after its window, so later frames stop there instead of being
        # converted for a JPEG output that has finished (output-side -ss would convert them all)
        shot = branches[1].filter("trim", start=plan.thumbnail_at_s, end=plan.thumbnail_at_s + THUMBNAIL_WINDOW_S)
        outputs.append(ffmpeg.output(shot, thumbnail, format="image2", vcodec="mjpeg", update=1, vframes=1,
                                     **{"q:v": 3}))
    return ffmpeg.merge_outputs(*outputs).global_args(*_GLOBAL).compile()


def thumbnail(rendition: str, limits: Limits, out: str) -> list[str]:
    """The first frame of the rendition: when the combined run found no frame at the chosen time."""
    src = ffmpeg.input(rendition, f="mov", format_whitelist=FORMAT_WHITELIST, protocol_whitelist="file",
                       threads=limits.threads)
    return (ffmpeg.output(src.video, out, format="image2", vcodec="mjpeg", update=1, vframes=1, **{"q:v": 3})
            .global_args(*_GLOBAL).compile())


def _to_sdr(video, colour: Colour):
    """BT.709 SDR from an HDR or wide-gamut source, after scaling: fewer pixels to convert.

    Phones record HDR by default (iPhones HLG, many Androids PQ). The feed serves one 8-bit
    rendition and a JPEG, which cannot say they are HDR: read as SDR, their whites came out light
    grey and their colours pale. Mobius tone mapping leaves shadows and mid-tones as they are and
    compresses what is brighter, so highlights stay distinct instead of clipping to one white.
    An HDR clip takes about 2.5× as long (10 s of 1080p HLG: 4.9 s instead of 2.0 s here); SDR
    sources pass through untouched. The source's tags are given explicitly: zscale refuses
    untagged frames.
    """
    if not (colour.hdr or colour.wide_gamut):
        return video
    source = {"tin": _ZSCALE_TRANSFER.get(colour.transfer, "709"),
              "pin": _ZSCALE_PRIMARIES.get(colour.primaries, "2020"),
              "min": _ZSCALE_MATRIX.get(colour.matrix, "2020_ncl"),
              "rin": _ZSCALE_RANGE.get(colour.range, "limited")}
    if colour.hdr:
        video = (video.filter("zscale", **source, t="linear", npl=HDR_REFERENCE_WHITE, p="709")
                 .filter("format", "gbrpf32le").filter("tonemap", "mobius", desat=0))
        source = {}
    return video.filter("zscale", **source, t="709", p="709", m="709", r="limited")


def _even(x: float) -> int:
    return max(2, round(x) // 2 * 2)
