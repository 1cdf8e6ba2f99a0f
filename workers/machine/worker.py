"""Machine worker: private notes per user and gym machine, equipment preferences per user.

A note changes only by its author; edits are newest-wins by envelope timestamp and deletion is
final, so replicas seeing a note's events in any order end with the same note. Preferences are
replaced whole, newest event wins.
"""
from __future__ import annotations

import orjson

from shared.envelope import Envelope, canonical_id, rfc3339
from shared.errors import Forbidden, InvalidEvent, NotYet, TransientError
from workers.runtime.handler import Context, Request, WorkerSpec
from shared.paging import page
from workers.machine.sql import AFTER_NOTE, CREATE_NOTE, DELETE_NOTE, NOTES_PAGE, PREFS, UPDATE_NOTE, UPSERT_PREFS



# ---- notes ----------------------------------------------------------------------------------

def create_note(ctx: Context, event: Envelope) -> None:
    data = event.data
    note_id = canonical_id(data["note_id"])
    cur = ctx.cursor
    cur.execute(CREATE_NOTE, {"note": note_id, "author": event.user_id, "machine": data["machine_id"],
                              "gym": canonical_id(data["gym_id"]) if data.get("gym_id") else None, "body": data["body"],
                              "ts": event.timestamp, "version": event.version_key})
    author, created_at = cur.fetchone()
    if created_at is not None:
        _announce(ctx, event, note_id, data["machine_id"], "created", created_at)
    elif author is None:  # created by a concurrent transaction: next time we see whose it is
        raise TransientError(f"note {note_id} was being created concurrently")
    elif author != event.user_id:
        raise Forbidden(f"note {note_id} belongs to another user")
    # else: the author sent this note again under a new event id; it stands as first created


def update_note(ctx: Context, event: Envelope) -> None:
    note_id = canonical_id(event.data["note_id"])
    _change(ctx, event, note_id, UPDATE_NOTE, "updated", body=event.data["body"])


def delete_note(ctx: Context, event: Envelope) -> None:
    _change(ctx, event, canonical_id(event.data["note_id"]), DELETE_NOTE, "deleted")


def _change(ctx: Context, event: Envelope, note_id: str, statement: str, action: str, **params) -> None:
    cur = ctx.cursor
    cur.execute(statement, {"note": note_id, "author": event.user_id, "ts": event.timestamp,
                            "version": event.version_key, **params})
    author, machine_id, updated_at = cur.fetchone()
    if author is None:  # its create may still be on another replica
        raise NotYet(f"note {note_id} does not exist (yet)")
    if author != event.user_id:
        raise Forbidden(f"note {note_id} belongs to another user")
    if updated_at is not None:
        _announce(ctx, event, note_id, machine_id, action, updated_at)
    # else: deleted, or a newer edit stands: nothing changes, nothing to announce


def _announce(ctx: Context, event: Envelope, note_id: str, machine_id: str, action: str, at) -> None:
    ctx.emit("machine.note.persisted", {"note_id": note_id, "machine_id": machine_id, "author_id": event.user_id,
                                        "action": action, "updated_at": rfc3339(at)}, cause=event)


def read_notes(ctx: Context, request: Request) -> dict:
    """The caller's own notes on one machine: there is no way to ask for anyone else's."""
    machine_id = request.params["machine_id"]
    rows, next_cursor = page(ctx.cursor, NOTES_PAGE, AFTER_NOTE, {"author": request.user_id, "machine": machine_id},
                              request.params)
    notes = [{"note_id": note_id, "machine_id": machine, "gym_id": gym_id, "body": body,
              "created_at": rfc3339(created_at), "updated_at": rfc3339(updated_at)}
             for note_id, machine, gym_id, body, updated_at, created_at in rows]
    return {"machine_id": machine_id, "notes": notes, "next_cursor": next_cursor}


# ---- equipment preferences ------------------------------------------------------------------

def update_prefs(ctx: Context, event: Envelope) -> None:
    prefs = event.data["prefs"]
    both = set(prefs.get("preferred_machine_ids", ())) & set(prefs.get("avoided_machine_ids", ()))
    if both:
        raise InvalidEvent(f"machines both preferred and avoided: {sorted(both)[:5]}",
                           field="data.prefs.avoided_machine_ids")
    # One statement with RETURNING rather than a batched upsert (WorkerSpec.batched): the outcome is only
    # for prefs that landed, and batched rows cannot say which did. Prefs change rarely.
    cur = ctx.cursor
    cur.execute(UPSERT_PREFS, {"user": event.user_id, "prefs": orjson.dumps(prefs).decode(),
                               "version": event.version_key, "ts": event.timestamp})
    row = cur.fetchone()
    if row is not None:
        ctx.emit("equipment.prefs.persisted", {"user_id": event.user_id, "version": rfc3339(row[0])}, cause=event)


def read_prefs(ctx: Context, request: Request) -> dict:
    cur = ctx.cursor
    cur.execute(PREFS, (request.user_id,))
    row = cur.fetchone()
    if row is None:
        return {"prefs": {}, "version": None}
    return {"prefs": row[0], "version": rfc3339(row[1])}


HANDLERS = {
    "machine.note.created": create_note,
    "machine.note.updated": update_note,
    "machine.note.deleted": delete_note,
    "equipment.prefs.updated": update_prefs,
}

# Answered at once to a waiting caller, off machine.queries.
QUERIES = {
    "machine.notes": read_notes,
    "equipment.prefs": read_prefs,
}

WORKER = WorkerSpec(name="machine", database="machine", handlers=HANDLERS, queries=QUERIES,
                    description="private notes per gym machine, equipment preferences")
