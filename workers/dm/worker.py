"""Direct messages: conversations between users, their messages, and how far each participant has read.

Only participants send, mark read or read a conversation. Message bodies travel in events and
pages but never in a log line: errors name ids, never text.
"""
from __future__ import annotations

import base64
import binascii

from shared.envelope import Envelope, canonical_id, rfc3339
from shared.errors import Forbidden, InvalidEvent, NotFound, NotYet
from workers.runtime.handler import Context, Request, WorkerSpec
from workers.dm.sql import (BEFORE_SEQ, CONVERSATION_MEMBERS, INSERT_MESSAGE, LOCK_CONVERSATION, MESSAGE_OWNER,
                            MESSAGE_PAGE, MOVE_READ_MARKER, READ_CHECK, START_CONVERSATION, STARTED_BY)



# ---- commands -------------------------------------------------------------------------------

def start_conversation(ctx: Context, event: Envelope) -> None:
    data = event.data
    conversation_id, starter = canonical_id(data["conversation_id"]), event.user_id
    others = [canonical_id(p) for p in data["participant_ids"]]
    if len(set(others)) != len(others):  # the schema's uniqueItems compares text, not UUIDs
        raise InvalidEvent("participant_ids lists a user twice", field="data.participant_ids")
    if starter in others:
        raise InvalidEvent("participant_ids lists the other users; the sender takes part anyway",
                           field="data.participant_ids")
    members = [starter, *others]
    cur = ctx.cursor
    cur.execute(START_CONVERSATION, {"conv": conversation_id, "starter": starter, "title": data.get("title"),
                                     "members": members})
    if cur.fetchone() is None:
        cur.execute(STARTED_BY, (conversation_id,))
        if cur.fetchone()[0] != starter:
            raise Forbidden(f"conversation {conversation_id} was started by another user")
        return  # started before by this user: it stands as it was
    persisted = {"conversation_id": conversation_id, "participant_ids": members}
    if data.get("title") is not None:
        persisted["title"] = data["title"]
    ctx.emit("dm.conversation.persisted", persisted, cause=event)


def send_message(ctx: Context, event: Envelope) -> None:
    data = event.data
    conversation_id, message_id = canonical_id(data["conversation_id"]), canonical_id(data["message_id"])
    sender = event.user_id
    cur = ctx.cursor
    cur.execute(LOCK_CONVERSATION, (conversation_id,))
    row = cur.fetchone()
    if row is None:  # its dm.conversation.started may still be on another replica: retried, then dead-lettered
        raise NotYet(f"conversation {conversation_id} is not known (yet)")
    last_seq, members = row
    if sender not in members:
        raise Forbidden(f"user is not a participant of conversation {conversation_id}")
    cur.execute(INSERT_MESSAGE, {"msg": message_id, "conv": conversation_id, "seq": last_seq + 1,
                                 "sender": sender, "body": data["body"]})
    stored = cur.fetchone()
    if stored is None:  # the message_id is taken: this message sent again, or someone else's
        cur.execute(MESSAGE_OWNER, (message_id,))
        if tuple(cur.fetchone()) != (conversation_id, sender):
            raise Forbidden(f"message {message_id} belongs to another sender or conversation")
        return
    ctx.emit("dm.message.persisted", {
        "conversation_id": conversation_id, "message_id": message_id, "sender_id": sender, "body": data["body"],
        "created_at": rfc3339(stored[0]), "recipient_ids": [m for m in members if m != sender]}, cause=event)


def mark_read(ctx: Context, event: Envelope) -> None:
    args = {"conv": canonical_id(event.data["conversation_id"]), "msg": canonical_id(event.data["message_id"]),
            "reader": event.user_id}
    cur = ctx.cursor
    cur.execute(MOVE_READ_MARKER, args)
    if cur.fetchone() is not None:
        return
    cur.execute(READ_CHECK, args)
    known, participant, message_conversation = cur.fetchone()
    if not known:
        raise NotYet(f"conversation {args['conv']} is not known (yet)")
    if not participant:
        raise Forbidden(f"user is not a participant of conversation {args['conv']}")
    if message_conversation is None:  # sent on another replica and not committed yet
        raise NotYet(f"message {args['msg']} is not known (yet)")
    if message_conversation != args["conv"]:
        raise InvalidEvent(f"message {args['msg']} is not in conversation {args['conv']}", field="data.message_id")
    # the marker is at this message or past it already: it never moves back


# ---- reads ----------------------------------------------------------------------------------

def read_messages(ctx: Context, request: Request) -> dict:
    params = request.params
    conversation_id = canonical_id(params["conversation_id"])
    cur = ctx.cursor
    cur.execute(CONVERSATION_MEMBERS, (conversation_id,))
    members = cur.fetchall()
    if not members:
        raise NotFound(f"conversation {conversation_id} does not exist")
    if request.user_id not in {user for _, user, _ in members}:
        raise Forbidden("only the participants of a conversation can read it")
    args, after = {"conv": conversation_id, "limit": params["limit"] + 1}, ""
    if params.get("cursor"):
        args["seq"], after = _decode_cursor(params["cursor"]), BEFORE_SEQ
    cur.execute(MESSAGE_PAGE.format(after=after), args)
    rows = cur.fetchall()
    next_cursor = _encode_cursor(rows[params["limit"] - 1][4]) if len(rows) > params["limit"] else None
    return {"conversation_id": conversation_id, "title": members[0][0],
            "messages": [{"message_id": m, "sender_id": s, "body": b, "created_at": rfc3339(t)}
                         for m, s, b, t, _ in rows[:params["limit"]]],
            "next_cursor": next_cursor,
            "read_up_to": {user: message for _, user, message in members}}


def _encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"dm|{seq}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        tag, seq = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().split("|")
        if tag == "dm" and seq.isascii() and seq.isdigit():
            return int(seq)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        pass
    raise InvalidEvent("cursor is not one this API gave out", field="cursor")


HANDLERS = {
    "dm.conversation.started": start_conversation,
    "dm.message.sent": send_message,
    "dm.message.read": mark_read,
}

# Answered at once to a waiting caller, off dm.queries.
QUERIES = {
    "dm.messages": read_messages,
}

WORKER = WorkerSpec(name="dm", database="dm", handlers=HANDLERS, queries=QUERIES,
                    description="direct messages: conversations, messages, read markers")
