"""The dm worker's statements. A message's place in its conversation (seq) is assigned under the
conversation row's lock, so seqs run 1, 2, 3… in commit order and a page cursor on seq is stable."""
from __future__ import annotations

# No row back: the conversation_id is taken (by this starter before, or by someone else).
START_CONVERSATION = """
WITH c AS (
    INSERT INTO conversations (conversation_id, started_by, title) VALUES (%(conv)s, %(starter)s, %(title)s)
    ON CONFLICT (conversation_id) DO NOTHING
    RETURNING conversation_id
), p AS (
    INSERT INTO participants (conversation_id, user_id)
    SELECT c.conversation_id, u FROM c, unnest(%(members)s::uuid[]) AS u
)
SELECT conversation_id FROM c
"""

STARTED_BY = "SELECT started_by::text FROM conversations WHERE conversation_id = %s"

# Locked until commit: messages of one conversation take turns, whichever replica has them.
LOCK_CONVERSATION = """
SELECT c.last_seq,
       ARRAY(SELECT p.user_id::text FROM participants p WHERE p.conversation_id = c.conversation_id ORDER BY 1)
FROM conversations c WHERE c.conversation_id = %s
FOR UPDATE OF c
"""

# Runs under the conversation's lock with %(seq)s = last_seq + 1. No row back: the message_id is
# taken, and nothing moved. The sender has read what they wrote, so their marker follows.
INSERT_MESSAGE = """
WITH m AS (
    INSERT INTO messages (message_id, conversation_id, seq, sender_id, body)
    VALUES (%(msg)s, %(conv)s, %(seq)s, %(sender)s, %(body)s)
    ON CONFLICT (message_id) DO NOTHING
    RETURNING message_id, seq, created_at
), numbered AS (
    UPDATE conversations c SET last_seq = m.seq FROM m WHERE c.conversation_id = %(conv)s
), seen AS (
    UPDATE participants p SET read_seq = m.seq, read_message_id = m.message_id, read_at = m.created_at
    FROM m
    WHERE p.conversation_id = %(conv)s AND p.user_id = %(sender)s AND (p.read_seq IS NULL OR p.read_seq < m.seq)
)
SELECT created_at FROM m
"""

MESSAGE_OWNER = "SELECT conversation_id::text, sender_id::text FROM messages WHERE message_id = %s"

# Forward only: the WHERE is re-checked on the locked row, so of two concurrent reads by the
# same participant the older message can never land last. No row back: nothing moved.
MOVE_READ_MARKER = """
UPDATE participants p SET read_seq = m.seq, read_message_id = m.message_id, read_at = now()
FROM messages m
WHERE p.conversation_id = %(conv)s AND p.user_id = %(reader)s
  AND m.message_id = %(msg)s AND m.conversation_id = p.conversation_id
  AND (p.read_seq IS NULL OR p.read_seq < m.seq)
RETURNING p.read_seq
"""

# Why a read marker did not move: (conversation known, reader takes part, the message's conversation).
READ_CHECK = """
SELECT EXISTS (SELECT 1 FROM conversations WHERE conversation_id = %(conv)s),
       EXISTS (SELECT 1 FROM participants WHERE conversation_id = %(conv)s AND user_id = %(reader)s),
       (SELECT conversation_id::text FROM messages WHERE message_id = %(msg)s)
"""

# No rows: an unknown conversation. Otherwise one row per participant with their read marker.
CONVERSATION_MEMBERS = """
SELECT c.title, p.user_id::text, p.read_message_id::text
FROM conversations c JOIN participants p ON p.conversation_id = c.conversation_id
WHERE c.conversation_id = %s
ORDER BY p.user_id
"""

# Newest first by seq; a cursor holds its place while new messages arrive at the top.
MESSAGE_PAGE = """
SELECT message_id::text, sender_id::text, body, created_at, seq
FROM messages
WHERE conversation_id = %(conv)s {after}
ORDER BY seq DESC
LIMIT %(limit)s
"""
BEFORE_SEQ = "AND seq < %(seq)s"
