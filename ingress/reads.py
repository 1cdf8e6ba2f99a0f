"""The GET routes the app's screens read: each becomes a query answered by the worker owning the data."""
from __future__ import annotations

import functools
import re
import uuid
from dataclasses import dataclass
from urllib.parse import parse_qs

from ingress.batch import Rejected

DEFAULT_LIMIT, MAX_LIMIT = 20, 50
ACCESS_TOKEN_HEADER = "HTTP_X_FEED_ACCESS_TOKEN"


_UUID = "([0-9a-fA-F-]{36})"
_NAME = "([A-Za-z0-9_.:-]{1,64})"  # ids the app does not mint as UUIDs (a gym machine's code)


@dataclass(frozen=True)
class Route:
    route: str               # as logged and documented; {x} marks the path's id
    query: str               # the query name the worker answers
    id_param: str | None     # the query parameter the path's id becomes
    paged: bool = True       # takes limit and cursor
    feed: bool = False       # takes X-Feed-Access-Token
    uuid_id: bool = True
    summary: str = ""

    @property
    def pattern(self) -> re.Pattern:
        return _pattern(self.route, self.uuid_id)


@functools.cache
def _pattern(route: str, uuid_id: bool) -> re.Pattern:
    return re.compile("^" + re.sub(r"\{\w+\}", _UUID if uuid_id else _NAME, route) + "$")


ROUTES = (
    Route("/api/v1/feeds/{owner_id}/posts", "feed.posts", "owner_id", feed=True,
          summary="A page of a feed, newest first: posts with caption, like and comment counts and short-lived "
                  "signed URLs of the renditions and thumbnail. Pages stay stable while new posts arrive."),
    Route("/api/v1/posts/{post_id}/comments", "post.comments", "post_id", feed=True,
          summary="A page of a post's comment threads, oldest first, replies nested; a deleted comment keeps "
                  "its place without its text."),
    Route("/api/v1/programs", "program.list", None,
          summary="A page of the caller's programs, newest first, each with its workouts."),
    Route("/api/v1/programs/{program_id}", "program.get", "program_id", paged=False,
          summary="One of the caller's programs with its workouts (owner only)."),
    Route("/api/v1/workout-sessions/{session_id}", "workout_session.get", "session_id", paged=False,
          summary="One of the caller's workout sessions with its logged sets (owner only)."),
    Route("/api/v1/conversations/{conversation_id}/messages", "dm.messages", "conversation_id",
          summary="A page of a conversation's messages, newest first (participants only)."),
    Route("/api/v1/machines/{machine_id}/notes", "machine.notes", "machine_id", uuid_id=False,
          summary="A page of the caller's notes on a gym machine, newest first."),
    Route("/api/v1/equipment-prefs", "equipment.prefs", None, paged=False,
          summary="The caller's equipment preferences."),
    Route("/api/v1/reminders", "reminder.list", None,
          summary="A page of the caller's workout reminders, newest set first, each with its next occurrence; "
                  "workout_reminders says whether any fires (the app setting)."),
    Route("/api/v1/ai/prompts/{prompt_id}", "ai.prompt.get", "prompt_id", paged=False,
          summary="One of the caller's AI prompts with its status and answer (owner only)."),
)


@dataclass(frozen=True)
class Query:
    name: str
    body: dict


def match(path: str) -> Route | None:
    return next((r for r in ROUTES if r.pattern.match(path)), None)


def query(environ, subject: str) -> Query:
    route = match(environ["PATH_INFO"])
    params = {}
    if route.id_param:
        resource = route.pattern.match(environ["PATH_INFO"]).group(1)
        try:
            params[route.id_param] = str(uuid.UUID(resource)) if route.uuid_id else resource
        except ValueError:
            raise Rejected(404, "not_found", f"{route.id_param} is not a UUID") from None
    try:
        args = parse_qs(environ.get("QUERY_STRING", ""), max_num_fields=10)
    except ValueError:
        raise Rejected(400, "bad_request", "too many query parameters") from None
    if route.paged:
        params["limit"] = _limit(args.get("limit"))
    cursor = args.get("cursor") if route.paged else None
    if cursor:
        if len(cursor[-1]) > 200 or not re.fullmatch(r"[A-Za-z0-9_-]+", cursor[-1]):
            raise Rejected(400, "bad_request", "cursor is not one this API gave out", "cursor")
        params["cursor"] = cursor[-1]
    token = environ.get(ACCESS_TOKEN_HEADER, "").strip() if route.feed else ""
    if token:
        if len(token) > 4096:
            raise Rejected(400, "bad_request", "X-Feed-Access-Token is too long", "X-Feed-Access-Token")
        params["access_token"] = token
    return Query(route.query, {"user_id": subject, "params": params})


def _limit(values: list[str] | None) -> int:
    if not values:
        return DEFAULT_LIMIT
    try:
        limit = int(values[-1])
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIMIT:
        raise Rejected(400, "bad_request", f"limit must be an integer from 1 to {MAX_LIMIT}", "limit")
    return limit
