"""What ends a transcode job as `media.failed` rather than a retry."""
from __future__ import annotations

# The codes of media.failed (shared/schemas/events/media.failed.json)
CODES = frozenset({"not_a_video", "unsupported_format", "unsupported_codec", "too_long", "resolution_too_large",
                   "too_many_streams", "transcode_failed", "timeout", "source_missing"})


class Rejected(Exception):
    """The upload cannot become a video: retrying cannot help, the owner is told why."""

    def __init__(self, code: str, reason: str, detail: str = ""):
        assert code in CODES, code
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason[:300]  # shown to the user
        self.detail = detail[-500:]  # for the log only (ffmpeg's last words)
