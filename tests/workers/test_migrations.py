"""Every database's migrations go up, all the way down and up again, to the same schema; a
rollback that destroys data says what it loses."""
from __future__ import annotations

import re

import pytest

from tests.support.db import query
from workers.ops import migrate

SCHEMA = """
SELECT 'column', table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable
  FROM information_schema.columns WHERE table_schema = 'public' AND table_name NOT LIKE '\\_yoyo%%'
    AND table_name NOT LIKE 'yoyo%%'
UNION ALL SELECT 'index', indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename NOT LIKE '%%yoyo%%'
UNION ALL SELECT 'constraint', conrelid::regclass || ' ' || pg_get_constraintdef(oid) FROM pg_constraint
  WHERE connamespace = 'public'::regnamespace AND conrelid::regclass::text NOT LIKE '%%yoyo%%'
UNION ALL SELECT 'function', p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')' FROM pg_proc p
  WHERE p.pronamespace = 'public'::regnamespace
ORDER BY 1, 2"""


@pytest.mark.parametrize("domain", migrate.domains())
def test_migrations_go_up_down_and_up_to_the_same_schema(domain, make_database):
    url = make_database(domain, migrated=False)
    applied = migrate.apply(domain, url)
    schema = query(url, SCHEMA)
    assert applied >= 2 and any(kind == "column" for kind, _ in schema)

    assert migrate.rollback(domain, url, count=0) == applied  # every one, newest first
    assert query(url, SCHEMA) == []  # nothing of ours is left behind
    assert all(not ok for _, ok in migrate.status(domain, url))

    assert migrate.apply(domain, url) == applied
    assert query(url, SCHEMA) == schema


def test_a_rollback_that_destroys_data_says_what_it_loses():
    destructive = re.compile(r"^\s*(DROP TABLE|ALTER TABLE .* DROP COLUMN|UPDATE|DELETE)", re.M | re.I)
    silent = [path.relative_to(migrate.MIGRATIONS_DIR).as_posix()
              for path in sorted(migrate.MIGRATIONS_DIR.glob("*/*.rollback.sql"))
              if destructive.search(path.read_text()) and not path.read_text().startswith("-- loses: ")]
    assert silent == []
