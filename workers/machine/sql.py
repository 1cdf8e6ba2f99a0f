"""The machine worker's statements. Each note change is one statement that both tries the change
and reports the note's author as it stood, so the handler learns "changed", "not yours",
"unknown" or "nothing to do" in one round trip."""
from __future__ import annotations

# Versions are "<UTC timestamp>/<event id>"; compared byte-wise (COLLATE "C"), later sorts higher.

# (author before this statement, updated_at if inserted). Neither: another transaction created
# this note_id while we ran, so our snapshot cannot say whose it is.
CREATE_NOTE = """
WITH created AS (
    INSERT INTO machine_notes (note_id, author_id, machine_id, gym_id, body, created_at, updated_at, version)
    VALUES (%(note)s, %(author)s, %(machine)s, %(gym)s, %(body)s, %(ts)s, %(ts)s, %(version)s)
    ON CONFLICT (note_id) DO NOTHING
    RETURNING updated_at
)
SELECT (SELECT author_id::text FROM machine_notes WHERE note_id = %(note)s), (SELECT updated_at FROM created)
"""

# The data-modifying CTE runs whatever the outer query reads; the outer query sees the note as
# it was before (same snapshot), which is all it needs: the author never changes. The row lock
# taken by UPDATE makes concurrent edits of one note take turns, and the WHERE is re-checked
# against the winner's row, so an older edit never lands after a newer one.
_CHANGE_AND_REPORT = """
WITH changed AS ({change})
SELECT n.author_id::text, c.machine_id, c.updated_at
FROM (VALUES (1)) AS one (x)
LEFT JOIN machine_notes n ON n.note_id = %(note)s
LEFT JOIN changed c ON true
"""

UPDATE_NOTE = _CHANGE_AND_REPORT.format(change="""
    UPDATE machine_notes SET body = %(body)s, updated_at = %(ts)s, version = %(version)s
    WHERE note_id = %(note)s AND author_id = %(author)s AND deleted_at IS NULL
      AND version < %(version)s COLLATE "C"
    RETURNING machine_id, updated_at
""")

# Deletion is final whatever its timestamp: the text goes, the row stays as a tombstone.
DELETE_NOTE = _CHANGE_AND_REPORT.format(change="""
    UPDATE machine_notes SET body = NULL, deleted_at = %(ts)s, updated_at = %(ts)s
    WHERE note_id = %(note)s AND author_id = %(author)s AND deleted_at IS NULL
    RETURNING machine_id, updated_at
""")

# The author's live notes on one machine, newest first; (created_at, note_id) orders every note,
# so a cursor keeps its place while new notes arrive. created_at at index 5: see shared.paging.page.
NOTES_PAGE = """
SELECT note_id::text, machine_id, gym_id::text, body, updated_at, created_at
FROM machine_notes
WHERE author_id = %(author)s AND machine_id = %(machine)s AND deleted_at IS NULL {after}
ORDER BY created_at DESC, note_id DESC
LIMIT %(limit)s
"""
AFTER_NOTE = "AND (created_at, note_id) < (%(ts)s, %(id)s)"

# A row back: these prefs are now the user's (no row: a newer event's prefs stand).
UPSERT_PREFS = """
INSERT INTO equipment_prefs AS p (user_id, prefs, version, updated_at)
VALUES (%(user)s, %(prefs)s::jsonb, %(version)s, %(ts)s)
ON CONFLICT (user_id) DO UPDATE SET
    prefs = EXCLUDED.prefs, version = EXCLUDED.version, updated_at = EXCLUDED.updated_at
WHERE p.version < EXCLUDED.version
RETURNING updated_at
"""

PREFS = "SELECT prefs, updated_at FROM equipment_prefs WHERE user_id = %s"
