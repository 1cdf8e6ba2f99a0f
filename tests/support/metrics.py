"""Scraping a process's /metrics and reading samples the way a Prometheus query would."""
from __future__ import annotations

import http.client
import json

from prometheus_client.parser import text_string_to_metric_families


class Samples:
    """One scrape: `value(name, **labels)` sums the samples of `name` whose labels include those."""

    def __init__(self, text: str):
        self.text = text
        self.samples = [s for family in text_string_to_metric_families(text) for s in family.samples]

    def value(self, name: str, **labels: str) -> float:
        return sum(s.value for s in self.samples
                   if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))

    def names(self) -> set[str]:
        return {s.name for s in self.samples}


def get(port: int, path: str, timeout: float = 5.0) -> tuple[int, str, bytes]:
    """(status, content type, body) of a GET on 127.0.0.1:port."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read()
    finally:
        conn.close()


def get_json(port: int, path: str) -> tuple[int, dict]:
    status, _, body = get(port, path)
    return status, json.loads(body)


def scrape(port: int, path: str = "/metrics") -> Samples:
    status, content_type, body = get(port, path)
    assert status == 200, (status, body[:500])
    assert content_type.startswith("text/plain"), content_type
    return Samples(body.decode())


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return after.value(name, **labels) - before.value(name, **labels)
