"""The registry's SQLite schema and the migrations that bring older files up to date.

A registry file is recognised by its header: ``PRAGMA application_id`` is ``APPLICATION_ID``
and ``PRAGMA user_version`` is the schema version (1..``SCHEMA_VERSION``). Both live in the
database header, so they change inside the same transaction as the tables they describe.

``MIGRATIONS[v]`` brings a file from version ``v`` to ``v + 1``; a new file (version 0)
runs them all, so a fresh registry and a migrated one have the same schema by
construction. ``migrate`` runs every pending step in ONE ``BEGIN IMMEDIATE`` transaction:
a crash or error leaves the file exactly at its old version. Steps are frozen once
released; a schema change is a new step appended at the end.

Versions:

1. ``bundles``, ``prompts`` and ``flips`` (one row per bundle and flip-registry sample).
2. ``flips.condition_label`` (``Condition.label()``, e.g. ``bs=8``), filled in from the
   stored condition JSON, so queries can filter on the label the CLI shows; indexes by
   prompt and by condition label.
"""

from __future__ import annotations

from batchsafe.core.errors import BatchsafeError

import sqlite3
from collections.abc import Callable
from pathlib import Path

import orjson

from batchsafe.compiler.plan import Condition

APPLICATION_ID = 0x62735267
"""``PRAGMA application_id`` of a batchsafe registry (ASCII ``bsRg``)."""


class RegistryError(BatchsafeError):
    """Base of every registry error; its message names the file, bundle, row or prompt at fault."""


class NotARegistryError(RegistryError):
    """The file exists but is not a batchsafe registry (another SQLite database, or not SQLite)."""


class RegistryVersionError(RegistryError):
    """The file was written by a newer batchsafe whose schema this code does not know."""


def condition_label(condition_json: str | bytes) -> str:
    """``Condition.label()`` of a stored (canonical JSON) condition."""
    return Condition.model_validate(orjson.loads(condition_json)).label()


def _v1(conn: sqlite3.Connection) -> None:
    conn.execute(
        "CREATE TABLE bundles (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, kind TEXT NOT NULL, parent TEXT,"
        " experiment_id TEXT, experiment_title TEXT, plan_hash TEXT, n_samples INTEGER,"
        " n_flip_rows INTEGER NOT NULL, n_flipped INTEGER NOT NULL)")
    conn.execute(
        "CREATE TABLE prompts (id TEXT PRIMARY KEY, task TEXT NOT NULL, domain TEXT NOT NULL, dataset TEXT,"
        " records TEXT NOT NULL DEFAULT '[]', preview TEXT) WITHOUT ROWID")
    conn.execute(
        "CREATE TABLE flips (bundle TEXT NOT NULL REFERENCES bundles(id), sample TEXT NOT NULL,"
        " baseline TEXT NOT NULL, phase TEXT NOT NULL, phase_kind TEXT NOT NULL, model TEXT NOT NULL,"
        " task TEXT NOT NULL, domain TEXT NOT NULL, condition TEXT NOT NULL, prompt TEXT NOT NULL,"
        " identical INTEGER NOT NULL, baseline_score REAL NOT NULL, score REAL NOT NULL,"
        " baseline_label TEXT NOT NULL, label TEXT NOT NULL, flipped INTEGER NOT NULL, direction TEXT NOT NULL,"
        " PRIMARY KEY (bundle, sample)) WITHOUT ROWID")
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")


def _v2(conn: sqlite3.Connection) -> None:
    conn.execute("ALTER TABLE flips ADD COLUMN condition_label TEXT NOT NULL DEFAULT ''")
    # Few distinct conditions per file: label each once and update its rows together.
    for (cond,) in conn.execute("SELECT DISTINCT condition FROM flips").fetchall():
        try:
            label = condition_label(cond)
        except ValueError as exc:
            raise RegistryError(f"stored condition {cond!r} cannot be labelled: {exc}") from None
        conn.execute("UPDATE flips SET condition_label = ? WHERE condition = ?", (label, cond))
    conn.execute("CREATE INDEX flips_prompt ON flips (prompt, bundle)")
    conn.execute("CREATE INDEX flips_condition_label ON flips (condition_label)")


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_v1, _v2]
"""``MIGRATIONS[v]`` upgrades version ``v`` to ``v + 1``."""

SCHEMA_VERSION = len(MIGRATIONS)
"""The schema version this code writes and reads."""


def header(conn: sqlite3.Connection) -> tuple[int, int, int]:
    """(application_id, user_version, number of schema objects) of an open database."""
    app = conn.execute("PRAGMA application_id").fetchone()[0]
    ver = conn.execute("PRAGMA user_version").fetchone()[0]
    n = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    return app, ver, n


def check_header(path: Path | str, app: int, ver: int, n_objects: int) -> bool:
    """Whether the file needs migrating; raises when it is not a registry or is too new."""
    if app == 0 and ver == 0 and n_objects == 0:
        return True  # a new, empty database
    if app != APPLICATION_ID:
        raise NotARegistryError(f"{path}: not a batchsafe registry (an SQLite database with application_id {app}"
                                f" and {n_objects} schema objects); refusing to modify it")
    if ver > SCHEMA_VERSION:
        raise RegistryVersionError(f"{path}: registry schema version {ver} is newer than this batchsafe "
                                   f"understands ({SCHEMA_VERSION}); upgrade batchsafe to use it")
    if ver < 1:
        raise NotARegistryError(f"{path}: registry header has schema version {ver}; the file is damaged")
    return ver < SCHEMA_VERSION


def migrate(conn: sqlite3.Connection, path: Path | str) -> int:
    """Bring the database up to ``SCHEMA_VERSION`` in one transaction; return the version it had.

    ``conn`` must be in autocommit mode (``isolation_level=None``) with no open transaction.
    The header is read again under the write lock, so two processes opening one new file
    at the same time run the migrations once.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        app, ver, n = header(conn)
        if check_header(path, app, ver, n):
            for step in range(ver, SCHEMA_VERSION):
                MIGRATIONS[step](conn)
                conn.execute(f"PRAGMA user_version = {step + 1}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return ver
