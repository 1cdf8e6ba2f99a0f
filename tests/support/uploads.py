"""Uploading a file with a presigned POST form, as a browser does (multipart/form-data)."""
from __future__ import annotations

import urllib.error
import urllib.request
import uuid


def post_form(upload: dict, data: bytes, filename: str = "clip.mp4", content_type: str | None = None,
              override: dict | None = None) -> tuple[int, bytes]:
    """POST `data` with the form's fields (optionally overridden); returns (status, body)."""
    boundary = f"----spotter{uuid.uuid4().hex}"
    fields = {**upload["fields"], **(override or {})}
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    file_type = content_type or fields.get("Content-Type", "application/octet-stream")
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
                 f"Content-Type: {file_type}\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    request = urllib.request.Request(upload["url"], data=b"".join(parts), method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
