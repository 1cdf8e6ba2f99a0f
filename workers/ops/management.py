"""A small client for the RabbitMQ management HTTP API (stdlib only).

It sees what AMQP cannot: policies applied to a queue, unacknowledged counts, consumers of every
queue at once. URL from `RABBITMQ_MANAGEMENT_URL`, else http://<amqp host>:15672 with the AMQP
URL's user and password; the vhost is the AMQP URL's path (`%2F` is "/"). Several nodes (either
variable comma-separated): each request goes to the first node that answers.
"""
from __future__ import annotations

import base64
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request

DEFAULT_PORT = 15672
QUEUE_FIELDS = ("name", "type", "arguments", "policy", "operator_policy", "effective_policy_definition",
                "messages_ready", "messages_unacknowledged", "messages", "consumers", "state",
                "message_bytes", "message_bytes_ready")


class ManagementUnavailable(Exception):
    """The management API did not answer (plugin off, network, credentials, 5xx)."""


def _vhost(amqp_url: str) -> str:
    path = urllib.parse.urlsplit(amqp_url).path
    return urllib.parse.unquote(path[1:]) if len(path) > 1 else "/"


class Management:
    """The API of one node, or of each node of a cluster: a request goes to the first that answers."""

    def __init__(self, base_url: str | list[str], user: str, password: str, vhost: str, timeout_s: float = 3.0):
        bases = [base_url] if isinstance(base_url, str) else list(base_url)
        self.base_urls = [b.rstrip("/") for b in bases]
        self.vhost, self.timeout_s = vhost, timeout_s
        self._auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    @classmethod
    def from_env(cls, amqp_url: str | None = None, timeout_s: float = 3.0) -> "Management":
        """RABBITMQ_MANAGEMENT_URL (comma-separated for several nodes), else port 15672 of each
        host of the AMQP URL(s) (RABBITMQ_URL), with the first AMQP URL's user, password and vhost."""
        amqp_urls = [u.strip() for u in (amqp_url or os.environ.get("RABBITMQ_URL", "amqp://127.0.0.1:5672/%2F")).split(",")]
        amqp = urllib.parse.urlsplit(amqp_urls[0])
        user = urllib.parse.unquote(amqp.username or "guest")
        password = urllib.parse.unquote(amqp.password or "guest")
        explicit = os.environ.get("RABBITMQ_MANAGEMENT_URL")
        bases = []
        if explicit:
            for entry in explicit.split(","):
                mgmt = urllib.parse.urlsplit(entry.strip())
                if mgmt.username:  # credentials in the management URL win, and stay out of the base URL
                    user, password = urllib.parse.unquote(mgmt.username), urllib.parse.unquote(mgmt.password or "")
                netloc = mgmt.hostname + (f":{mgmt.port}" if mgmt.port else "")
                bases.append(urllib.parse.urlunsplit((mgmt.scheme, netloc, mgmt.path, "", "")))
        else:
            hosts = dict.fromkeys(urllib.parse.urlsplit(u).hostname or "127.0.0.1" for u in amqp_urls)
            bases = [f"http://{host}:{DEFAULT_PORT}" for host in hosts]
        return cls(bases, user, password, _vhost(amqp.geturl()), timeout_s)

    @property
    def where(self) -> str:
        """The API's address(es) without credentials: safe to print."""
        return ",".join(self.base_urls)

    def _get(self, path: str):
        """The first node's answer; the next node's when one cannot answer (down, 5xx)."""
        error = None
        for base in self.base_urls:
            try:
                return self._get_from(base, path)
            except ManagementUnavailable as exc:
                error = exc
        raise error

    def _get_from(self, base: str, path: str):
        request = urllib.request.Request(base + path, headers={"Authorization": self._auth})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise ManagementUnavailable(f"management API at {base} answered HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ManagementUnavailable(f"management API at {base} unreachable: {reason}") from None

    def _vq(self) -> str:
        return urllib.parse.quote(self.vhost, safe="")

    def queue(self, name: str) -> dict | None:
        """The queue's type, arguments, effective policy and counts; None when it does not exist."""
        info = self._get(f"/api/queues/{self._vq()}/{urllib.parse.quote(name, safe='')}")
        return None if info is None else _normalise(info)

    def policies(self) -> tuple[list[dict], list[dict]]:
        """(policies, operator policies) of the vhost."""
        return (self._get(f"/api/policies/{self._vq()}") or [],
                self._get(f"/api/operator-policies/{self._vq()}") or [])

    def applied_policies(self, queue_name: str, policies: tuple[list[dict], list[dict]] | None = None
                         ) -> tuple[dict, list[str]]:
        """(effective definition, names) of the policies that apply to this queue, worked out from
        the policy store: a queue's own `effective_policy_definition` comes with its statistics,
        seconds late for a queue just declared or a policy just set. `policies`: what
        `policies()` answered, to work out several queues from one reading."""
        user, operator = policies if policies is not None else self.policies()
        chosen = [p for p in (_winner(user, queue_name), _winner(operator, queue_name)) if p]
        definition = dict(chosen[0]["definition"]) if chosen and chosen[0] in user else {}
        if len(chosen) == 2 or (chosen and chosen[0] in operator):
            for key, value in chosen[-1]["definition"].items():  # the stricter numeric value wins
                mine = definition.get(key)
                both_numbers = isinstance(mine, (int, float)) and isinstance(value, (int, float))
                definition[key] = min(mine, value) if both_numbers else value
        return definition, [p["name"] for p in chosen]

    def queues(self) -> dict[str, dict]:
        """name → queue info, for every queue of the vhost."""
        return {q["name"]: _normalise(q) for q in self._get(f"/api/queues/{self._vq()}") or []}


def _winner(policies: list[dict], queue_name: str) -> dict | None:
    """The policy RabbitMQ applies to this queue: matching pattern, highest priority."""
    matching = [p for p in policies if p.get("apply-to") in ("queues", "all", "quorum_queues")
                and re.search(p.get("pattern", ""), queue_name)]
    return max(matching, key=lambda p: p.get("priority", 0), default=None)


def _normalise(info: dict) -> dict:
    out = {key: info.get(key) for key in QUEUE_FIELDS}
    out["arguments"] = info.get("arguments") or {}
    # without a policy the API answers [] rather than {}
    out["effective_policy_definition"] = info.get("effective_policy_definition") or {}
    for key in ("messages_ready", "messages_unacknowledged", "messages", "consumers", "message_bytes",
                "message_bytes_ready"):
        out[key] = int(info.get(key) or 0)
    return out


def queue(name: str) -> dict | None:
    return Management.from_env().queue(name)


def queues() -> dict[str, dict]:
    return Management.from_env().queues()
