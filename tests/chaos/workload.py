"""The seeded workload: which events, in which order, by which path, and what each must do.

Every event's effect is one row keyed by an id the event carries, so it can be counted:

    settings  user.settings.submitted, one new user per event  → user_settings.user_id
              (a newest-wins upsert per user counts nothing per event unless each user is new)
    program   program.created                                  → programs.program_id
    dm        dm.message.sent into a conversation made for the run → messages.message_id
    video     comment.created on a post made for the run       → comments.comment_id

Some events must be refused by the worker itself (dead-lettered with a reason), none by the
ingress's schema check: a settings form that breaks its schema, sent straight to the exchange
(the worker validates every event: reason invalid); a program whose workouts repeat an id
(invalid); a message from a user who is not in the conversation (forbidden); a comment on a
post that does not exist (not_found). A few ingress events carry a token signed with the wrong
key: the ingress must refuse them (401) and nothing may come of them.

All of it derives from the seed: the same seed gives the same ids, payloads, order and paths."""
from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field

WORKERS = ("settings", "program", "dm", "video")
INGRESS, DIRECT = "ingress", "direct"
EFFECT, DEAD, REFUSED = "effect", "dead", "refused"  # what the event must come to
# (table, key column) of each worker's one row per event
EFFECT_ROWS = {"settings": ("user_settings", "user_id"), "program": ("programs", "program_id"),
               "dm": ("messages", "message_id"), "video": ("comments", "comment_id")}
DEAD_REASONS = {"settings": "invalid", "program": "invalid", "dm": "forbidden", "video": "not_found"}
# the outcome event each applied event is relayed as (from its outbox row); settings emits none
OUTCOMES = {"program": "program.persisted", "dm": "dm.message.persisted", "video": "comment.persisted"}


@dataclass(frozen=True)
class Planned:
    index: int
    worker: str
    path: str                 # INGRESS or DIRECT
    expect: str               # EFFECT, DEAD or REFUSED
    event: dict = field(hash=False)
    key: str = ""             # the id of its effect row

    @property
    def id(self) -> str:
        return self.event["client_generated_id"]


@dataclass(frozen=True)
class Fixtures:
    """Made in the databases before the run: posts to comment on, conversations to write in."""
    posts: tuple[tuple[str, str, str], ...]            # (post_id, video_id, owner_id)
    conversations: tuple[tuple[str, tuple[str, str]], ...]  # (conversation_id, (member, member))


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def fixtures(seed: int, posts: int = 20, conversations: int = 20) -> Fixtures:
    rng = random.Random(f"fixtures/{seed}")
    return Fixtures(
        posts=tuple((_uuid(rng), _uuid(rng), _uuid(rng)) for _ in range(posts)),
        conversations=tuple((_uuid(rng), (_uuid(rng), _uuid(rng))) for _ in range(conversations)))


def plan(seed: int, events: int, timestamp: str, reject_share: float = 0.01, refuse_share: float = 0.01,
         fixed: Fixtures | None = None) -> list[Planned]:
    """`events` events for the four workers, half through the ingress, half straight to the
    exchange; about `reject_share` must be dead-lettered and `refuse_share` refused by the
    ingress, at least one of each per worker once there are 100 events. `timestamp` is every
    event's envelope timestamp (it plays no part in what is counted)."""
    rng = random.Random(f"events/{seed}")
    fixed = fixed or fixtures(seed)
    out = []
    for index in range(events):
        worker = WORKERS[index % len(WORKERS)] if index < 4 * len(WORKERS) else rng.choice(WORKERS)
        expect = EFFECT
        if events >= 100 and index < len(WORKERS):
            expect = DEAD  # one of each rejection early on, so short runs have them too
        elif events >= 100 and len(WORKERS) <= index < 2 * len(WORKERS):
            expect = REFUSED
        else:
            roll = rng.random()
            expect = DEAD if roll < reject_share else REFUSED if roll < reject_share + refuse_share else EFFECT
        path = INGRESS if rng.random() < 0.5 else DIRECT
        if expect == REFUSED:
            path = INGRESS  # a wrong token: only the ingress checks tokens
        if expect == DEAD and worker == "settings":
            path = DIRECT  # the ingress checks schemas too: it would refuse it (422) itself
        event_id, user = _uuid(rng), _uuid(rng)
        worker_event, key = _EVENTS[worker](rng, fixed, user, expect == DEAD)
        event_type, data, user = worker_event
        body = {"schema_version": "1.0.0", "event_type": event_type, "client_generated_id": event_id,
                "user_id": user, "timestamp": timestamp, "source_service": "frontend", "data": data}
        out.append(Planned(index, worker, path, expect, body, key))
    return out


def _settings(rng, fixed, user, reject):
    data = {"weight": {"value": round(rng.uniform(45, 140), 1), "unit": "kg"}, "age": rng.randint(16, 80),
            "training_days_per_week": rng.randint(0, 7)}
    if reject:
        data["age"] = 500  # above the schema's maximum: the worker's own validation refuses it
    return ("user.settings.submitted", data, user), user


def _program(rng, fixed, user, reject):
    program_id = _uuid(rng)
    data = {"program_id": program_id, "name": f"plan {rng.randint(1, 10**6)}"}
    if reject:
        workout = _uuid(rng)  # the same workout_id twice: schema-valid, refused by the handler
        data["workouts"] = [{"workout_id": workout, "name": "a", "exercises": []},
                            {"workout_id": workout, "name": "b", "exercises": []}]
    return ("program.created", data, user), program_id


def _dm(rng, fixed, user, reject):
    conversation, members = rng.choice(fixed.conversations)
    message_id = _uuid(rng)
    sender = user if reject else rng.choice(members)  # a stranger to the conversation: forbidden
    data = {"conversation_id": conversation, "message_id": message_id, "body": f"m{rng.randint(1, 10**9)}"}
    return ("dm.message.sent", data, sender), message_id


def _video(rng, fixed, user, reject):
    post_id = _uuid(rng) if reject else rng.choice(fixed.posts)[0]  # no such post: not_found
    comment_id = _uuid(rng)
    return ("comment.created", {"comment_id": comment_id, "post_id": post_id,
                                "body": f"c{rng.randint(1, 10**9)}"}, user), comment_id


_EVENTS = {"settings": _settings, "program": _program, "dm": _dm, "video": _video}
