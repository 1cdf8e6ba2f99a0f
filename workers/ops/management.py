"""A small client for the RabbitMQ management HTTP API (stdlib only).

It sees what AMQP cannot: policies applied to a queue, unacknowledged counts, consumers of every
queue at once. URL from `RABBITMQ_MANAGEMENT_URL`, else http://<amqp host>:15672 with the AMQP
URL's user and password; the vhost is the AMQP URL's path (`%2F` is "/").
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
    def __init__(self, base_url: str, user: str, password: str, vhost: str, timeout_s: float = 3.0):
        self.base_url, self.vhost, self.timeout_s = base_url.rstrip("/"), vhost, timeout_s
        self._auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    @classmethod
    def from_env(cls, amqp_url: str | None = None, timeout_s: float = 3.0) -> "Management":
        amqp = urllib.parse.urlsplit(amqp_url or os.environ.get("RABBITMQ_URL", "amqp://127.0.0.1:5672/%2F"))
        user = urllib.parse.unquote(amqp.username or "guest")
        password = urllib.parse.unquote(amqp.password or "guest")
        explicit = os.environ.get("RABBITMQ_MANAGEMENT_URL")
        if explicit:
            mgmt = urllib.parse.urlsplit(explicit)
            if mgmt.username:  # credentials in the management URL win, and stay out of the base URL
                user, password = urllib.parse.unquote(mgmt.username), urllib.parse.unquote(mgmt.password or "")
            netloc = mgmt.hostname + (f":{mgmt.port}" if mgmt.port else "")
            base = urllib.parse.urlunsplit((mgmt.scheme, netloc, mgmt.path, "", ""))
        else:
            base = f"http://{amqp.hostname or '127.0.0.1'}:{DEFAULT_PORT}"
        return cls(base, user, password, _vhost(amqp.geturl()), timeout_s)

    @property
    def where(self) -> str:
        """The API's address without credentials: safe to print."""
        return self.base_url

    def _get(self, path: str):
        request = urllib.request.Request(self.base_url + path, headers={"Authorization": self._auth})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise ManagementUnavailable(f"management API at {self.where} answered HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ManagementUnavailable(f"management API at {self.where} unreachable: {reason}") from None

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
