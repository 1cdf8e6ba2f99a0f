"""The pure part of a transcode job (workers/transcode/): which uploads are refused and why, the
rendition's size and frame rate, the ffmpeg command's safety options, and the job's limits."""
from __future__ import annotations

import pytest

from workers.transcode import commands, probe
from workers.transcode.errors import Rejected
from workers.transcode.limits import Limits

LIMITS = Limits(max_duration_s=600, max_dimension=4096, max_streams=8, timeout_s=600, threads=2)


def video(**overrides) -> dict:
    return {"index": 0, "codec_type": "video", "codec_name": "h264", "width": 1920, "height": 1080,
            "avg_frame_rate": "30000/1001", **overrides}


def probed(*streams, format_name="mov,mp4,m4a,3gp,3g2,mj2", duration="12.5") -> dict:
    return {"format": {"format_name": format_name, "duration": duration, "size": "123456"},
            "streams": list(streams) or [video()]}


def refused(probe_result: dict) -> Rejected:
    with pytest.raises(Rejected) as rejected:
        probe.inspect(probe_result, LIMITS)
    return rejected.value


def test_an_ordinary_phone_clip_is_accepted_with_its_facts():
    info = probe.inspect(probed(video(), {"index": 1, "codec_type": "audio", "codec_name": "aac"}), LIMITS)
    assert (info.demuxer, info.width, info.height, info.video_codec, info.audio_index) == ("mov", 1920, 1080, "h264", 1)
    assert info.duration_s == 12.5 and info.fps == pytest.approx(29.97, abs=0.01) and info.size_bytes == 123456


@pytest.mark.parametrize("probe_result, code, says", [
    (probed(format_name="hls"), "unsupported_format", "MP4, MOV or WebM"),
    (probed({"index": 0, "codec_type": "audio", "codec_name": "aac"}), "not_a_video", "no video track"),
    (probed(video(), video(index=1)), "too_many_streams", "more than one video track"),
    (probed(*[video()] + [{"index": i, "codec_type": "data"} for i in range(1, 9)]), "too_many_streams", "9 tracks"),
    (probed(video(codec_name="theora")), "unsupported_codec", "theora"),
    (probed(video(width=8000, height=4000)), "resolution_too_large", "8000×4000"),
    (probed(video(width=0)), "not_a_video", "picture size"),
    (probed(duration="601"), "too_long", "10:01 min"),
])
def test_an_unusable_upload_is_rejected_with_a_reason_its_owner_can_act_on(probe_result, code, says):
    rejection = refused(probe_result)
    assert rejection.code == code
    assert says in rejection.reason


def test_cover_art_is_not_a_second_video_and_undecodable_sound_is_skipped():
    cover = video(index=1, codec_name="mjpeg", disposition={"attached_pic": 1})
    apac = {"index": 2, "codec_type": "audio", "codec_name": "none", "disposition": {"default": 1}}
    aac = {"index": 3, "codec_type": "audio", "codec_name": "aac"}
    info = probe.inspect(probed(video(), cover, apac, aac), LIMITS)
    assert (info.video_index, info.audio_index) == (0, 3)
    assert probe.inspect(probed(video(), apac), LIMITS).audio_index is None  # silent, still a video


def test_a_portrait_phone_video_is_measured_as_displayed():
    rotated = video(width=1920, height=1080, side_data_list=[{"rotation": -90}])
    info = probe.inspect(probed(rotated), LIMITS)
    assert (info.width, info.height) == (1080, 1920)
    assert probe.rotation(video(tags={"rotate": "90"})) == 90.0


def test_hdr_and_wide_gamut_are_recognised():
    hlg = probe.inspect(probed(video(color_transfer="arib-std-b67", color_primaries="bt2020")), LIMITS).colour
    assert hlg.hdr and hlg.wide_gamut
    sdr = probe.inspect(probed(video(color_transfer="bt709")), LIMITS).colour
    assert not sdr.hdr and not sdr.wide_gamut


def test_the_rendition_fits_720p_never_upscales_and_has_even_sides():
    info = probe.inspect(probed(video(width=3840, height=2160)), LIMITS)
    assert (commands.plan(info).width, commands.plan(info).height) == (1280, 720)
    portrait = probe.inspect(probed(video(width=1080, height=1920)), LIMITS)
    assert (commands.plan(portrait).width, commands.plan(portrait).height) == (720, 1280)
    small = probe.inspect(probed(video(width=641, height=361)), LIMITS)
    assert (commands.plan(small).width, commands.plan(small).height) == (640, 360)


def test_the_thumbnail_is_a_second_in_or_half_way_through_a_short_clip():
    assert commands.plan(probe.inspect(probed(duration="12"), LIMITS)).thumbnail_at_s == 1.0
    assert commands.plan(probe.inspect(probed(duration="0.8"), LIMITS)).thumbnail_at_s == 0.4


def test_high_frame_rates_are_capped_lower_for_hdr():
    assert commands.plan(probe.inspect(probed(video(avg_frame_rate="120/1")), LIMITS)).fps_cap == 60
    assert commands.plan(probe.inspect(probed(video(avg_frame_rate="60/1")), LIMITS)).fps_cap is None
    hdr60 = probed(video(avg_frame_rate="60/1", color_transfer="smpte2084"))
    assert commands.plan(probe.inspect(hdr60, LIMITS)).fps_cap == 30


def test_the_ffmpeg_command_only_opens_local_whitelisted_files_and_strips_metadata():
    info = probe.inspect(probed(), LIMITS)
    argv = commands.transcode("/scratch/source", info, commands.plan(info), LIMITS, "/scratch/720p.mp4",
                              thumbnail="/scratch/thumb.jpg")
    assert argv[0] == "ffmpeg" and "-nostdin" in argv
    assert argv[argv.index("-protocol_whitelist") + 1] == "file"
    assert argv[argv.index("-format_whitelist") + 1] == probe.FORMAT_WHITELIST
    assert argv[argv.index("-f") + 1] == "mov"  # pinned to the probed demuxer
    assert argv[argv.index("-map_metadata") + 1] == "-1"  # no GPS position in what the feed serves
    assert argv[argv.index("-t") + 1] == "601"  # whatever the container claims about its duration
    assert "/scratch/720p.mp4" in argv and "/scratch/thumb.jpg" in argv


def test_the_cpu_limit_covers_every_thread_for_the_whole_timeout():
    assert Limits(timeout_s=100, threads=3).cpu_s == 410
    assert Limits.from_env().threads >= 1


@pytest.mark.parametrize("text, value", [("30000/1001", 30000 / 1001), ("4:3", 4 / 3), ("0/0", None),
                                         ("N/A", None), ("-1/2", None)])
def test_ratios_from_ffprobe(text, value):
    assert probe._ratio(text) == (pytest.approx(value) if value else None)


def test_durations_read_as_people_say_them():
    assert (probe.minutes(45), probe.minutes(600), probe.minutes(61.4)) == ("45 s", "10:00 min", "1:01 min")
    assert (probe.as_float("nan"), probe.as_float("inf"), probe.as_float("2.5")) == (None, None, 2.5)
