"""yoyo migrations: `migrations/_runtime` (runtime tables) then `migrations/<domain>`, per database."""
from __future__ import annotations

import os
from pathlib import Path

import psycopg2
from psycopg2 import sql
from yoyo import get_backend, read_migrations

from shared.config import database_url

MIGRATIONS_DIR = Path(os.environ.get("MIGRATIONS_DIR", Path(__file__).resolve().parents[2] / "migrations"))


def domains() -> list[str]:
    return sorted(p.name for p in MIGRATIONS_DIR.iterdir() if p.is_dir() and not p.name.startswith("_"))


def _yoyo_url(url: str) -> str:
    return url  # yoyo reads postgresql:// URLs with psycopg2


def ensure_database(url: str) -> bool:
    """Create the database named in `url` if missing (dev and tests); True if created."""
    dsn = psycopg2.extensions.parse_dsn(url)
    name = dsn.pop("dbname")
    admin = psycopg2.connect(**{**dsn, "dbname": "postgres"})
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone():
                return False
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            return True
    finally:
        admin.close()


def _migrations(domain: str):
    return read_migrations(str(MIGRATIONS_DIR / "_runtime"), str(MIGRATIONS_DIR / domain))


def apply(domain: str, url: str | None = None) -> int:
    """Apply pending migrations; returns how many ran."""
    backend = get_backend(_yoyo_url(url or database_url(domain)))
    migrations = _migrations(domain)
    with backend.lock():
        pending = backend.to_apply(migrations)
        backend.apply_migrations(pending)
    return len(pending)


def rollback(domain: str, url: str | None = None, count: int = 1) -> int:
    """Roll back the newest `count` applied migrations of this database."""
    backend = get_backend(_yoyo_url(url or database_url(domain)))
    migrations = _migrations(domain)
    with backend.lock():
        applied = backend.to_rollback(migrations)
        chosen = applied[:count] if count > 0 else applied
        backend.rollback_migrations(chosen)
    return len(chosen)


def status(domain: str, url: str | None = None) -> list[tuple[str, bool]]:
    """Every migration of this database in order, with whether it is applied (`migrate version`)."""
    backend = get_backend(_yoyo_url(url or database_url(domain)))
    migrations = _migrations(domain)
    waiting = {m.id for m in backend.to_apply(migrations)}
    return [(m.id, m.id not in waiting) for m in migrations]


def pending(domain: str, url: str | None = None) -> list[str]:
    backend = get_backend(_yoyo_url(url or database_url(domain)))
    return [m.id for m in backend.to_apply(_migrations(domain))]
