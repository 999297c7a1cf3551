"""The persistent flip registry: which prompts flipped in which bundles, kept in one SQLite file.

``open_registry(path)`` creates or opens the file and migrates it (``registry.migrations``);
``Registry.add`` records a bundle's flip rows (all of them, flipped or not, so "flipped in
k of n bundles" can be computed), ``query`` lists prompts that flipped in at least k
bundles, ``show`` one prompt's rows across bundles, ``bundles`` what has been added.

Every write is one ``BEGIN IMMEDIATE`` transaction: an add that fails or is killed half
way leaves nothing behind, and two processes adding to one file take turns (they wait up
to ``BUSY_TIMEOUT_S`` for each other's lock). Bundles are content-addressed, so adding a
bundle again changes nothing and says so. Bundle contents are validated before the write
lock is taken (``registry.ingest``), so a slow or bad bundle does not block other writers.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self, get_args

import orjson

from batchsafe.analysis.records import Direction
from batchsafe.bundles.store import BundleStore
from batchsafe.verification.source import BundleSource, open_bundle

from .ingest import FLIP_COLUMNS, read_bundle
from .migrations import NotARegistryError, RegistryError, check_header, header, migrate
from .models import (
    AddResult,
    BundleInfo,
    HistoryRow,
    PromptFlipSummary,
    PromptHistory,
    PromptInfo,
)

BUSY_TIMEOUT_S = 60.0
"""How long a writer waits for another process's transaction before giving up."""
DIRECTIONS = tuple(get_args(Direction))
DOMAINS = ("safety", "capability")


class UnknownPromptError(RegistryError, LookupError):
    """``show`` was given a prompt id (or prefix) that matches no registered prompt, or several."""


def open_registry(path: str | Path) -> Registry:
    """Open (creating if needed) the registry at ``path``, migrated to the current schema.

    Raises ``NotARegistryError`` for a file that is not a batchsafe registry (left
    untouched), ``RegistryVersionError`` for one written by a newer batchsafe.
    """
    path = Path(path)
    if path.exists() and not path.is_file():
        raise NotARegistryError(f"{path}: not a regular file")
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), isolation_level=None, timeout=BUSY_TIMEOUT_S)
    try:
        conn.execute("PRAGMA foreign_keys = ON")
        try:
            state = header(conn)
        except sqlite3.OperationalError as exc:
            raise RegistryError(f"{path}: cannot read the registry: {exc}") from None
        except sqlite3.DatabaseError as exc:
            raise NotARegistryError(f"{path}: not a batchsafe registry ({exc})") from None
        if check_header(path, *state):
            try:
                migrate(conn, path)
            except sqlite3.Error as exc:
                raise RegistryError(f"{path}: cannot migrate the registry: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    return Registry(path, conn)


def _upsert_prompts(conn: sqlite3.Connection, prompts: list[tuple[Any, ...]]) -> None:
    # A prompt first seen in a bundle without a plan gets its dataset and preview from a
    # later bundle that has one; known metadata is never overwritten (ids are content hashes).
    conn.executemany(
        "INSERT INTO prompts (id, task, domain, dataset, records, preview) VALUES (?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (id) DO UPDATE SET dataset = excluded.dataset, records = excluded.records, "
        "preview = excluded.preview WHERE prompts.dataset IS NULL AND excluded.dataset IS NOT NULL", prompts)


class Registry:
    """An open registry file (see the module docstring); use as a context manager or ``close()``."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        """The registry file."""
        self._conn = conn

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self._conn.close()

    @property
    def schema_version(self) -> int:
        """The file's schema version (``PRAGMA user_version``)."""
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    @contextlib.contextmanager
    def _transaction(self, mode: str = "IMMEDIATE") -> Iterator[sqlite3.Connection]:
        # SQLite errors (a lock held past BUSY_TIMEOUT_S, a full disk) become RegistryError
        # naming the file; everything else propagates unchanged after the rollback.
        try:
            self._conn.execute(f"BEGIN {mode}")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:  # SQLite may already have rolled back (e.g. disk full)
                    self._conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise RegistryError(f"{self.path}: {exc}") from exc

    # --- writing --------------------------------------------------------------------

    def _existing(self, bid: str) -> AddResult | None:
        row = self._conn.execute("SELECT kind, n_flip_rows, n_flipped FROM bundles WHERE id = ?", (bid,)).fetchone()
        if row is None:
            return None
        n_prompts = self._conn.execute("SELECT count(DISTINCT prompt) FROM flips WHERE bundle = ?", (bid,)).fetchone()
        return AddResult(bundle=bid, added=False, kind=row[0], flip_rows=row[1], flipped=row[2], prompts=n_prompts[0],
                         new_prompts=0)

    def add(self, src: BundleSource) -> AddResult:
        """Record bundle ``src``: its identity, every row of its flips.jsonl, its prompts' metadata.

        Idempotent: a bundle already registered is not read again and the result says
        ``added=False``. Raises ``BundleContentError`` for a bundle without
        ``analysis/flips.jsonl`` or with a malformed row (nothing is written), and
        ``bundles.store.CorruptBundleError`` when a file does not match its manifest.
        """
        bid = src.bundle_id
        done = self._existing(bid)
        if done is not None:
            return done
        rows = read_bundle(src)
        with self._transaction() as conn:
            done = self._existing(bid)  # another process may have added it while we were reading
            if done is not None:
                return done
            before = conn.execute("SELECT count(*) FROM prompts").fetchone()[0]
            conn.execute("INSERT INTO bundles (id, kind, parent, experiment_id, experiment_title, plan_hash, n_samples,"
                         " n_flip_rows, n_flipped) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows.bundle)
            conn.executemany(f"INSERT INTO flips ({', '.join(FLIP_COLUMNS)}) "
                             f"VALUES ({', '.join('?' * len(FLIP_COLUMNS))})", rows.flips)
            _upsert_prompts(conn, rows.prompts)
            after = conn.execute("SELECT count(*) FROM prompts").fetchone()[0]
        return AddResult(bundle=bid, added=True, kind=rows.bundle[1], flip_rows=rows.bundle[7],
                         flipped=rows.bundle[8], prompts=len(rows.prompts), new_prompts=after - before)

    def add_ref(self, ref: str | Path, store: BundleStore | str | Path | None = None) -> AddResult:
        """``add`` the bundle ``ref``: an archive, a bundle directory, or an id (prefix) in ``store``."""
        with open_bundle(ref, store) as src:
            return self.add(src)

    # --- reading --------------------------------------------------------------------

    def bundles(self) -> list[BundleInfo]:
        """Every registered bundle, in the order they were added."""
        rows = self._conn.execute(
            "SELECT seq, id, kind, parent, experiment_id, experiment_title, plan_hash, n_samples, n_flip_rows,"
            " n_flipped FROM bundles ORDER BY seq").fetchall()
        return [BundleInfo(order=i, bundle=r[1], kind=r[2], parent=r[3], experiment_id=r[4], experiment_title=r[5],
                           plan_hash=r[6], samples=r[7], flip_rows=r[8], flipped=r[9]) for i, r in enumerate(rows, 1)]

    def query(self, min_bundles: int = 1, model: str | None = None, phase_kind: str | None = None,
              condition: str | None = None, direction: str | None = None, domain: str | None = None,
              task: str | None = None) -> list[PromptFlipSummary]:
        """Prompts that flipped in at least ``min_bundles`` distinct bundles, most bundles first, then by id.

        ``model``, ``phase_kind``, ``condition`` (a ``Condition.label()`` such as ``bs=8``),
        ``domain`` and ``task`` select the rows that count, flipped or not; ``direction``
        selects which flipped rows count as flips (``bundles_observed`` ignores it).
        ``min_bundles=0`` lists every prompt with a matching row. Unknown ``direction`` or
        ``domain`` values, or a negative ``min_bundles``, raise ``RegistryError``.
        """
        if isinstance(min_bundles, bool) or not isinstance(min_bundles, int) or min_bundles < 0:
            raise RegistryError(f"min_bundles must be a non-negative integer, not {min_bundles!r}")
        if direction is not None and direction not in DIRECTIONS:
            raise RegistryError(f"unknown direction {direction!r}; one of: {', '.join(DIRECTIONS)}")
        if domain is not None and domain not in DOMAINS:
            raise RegistryError(f"unknown domain {domain!r}; one of: {', '.join(DOMAINS)}")
        params: dict[str, Any] = {"k": min_bundles, "direction": direction}
        where = ["1"]
        for col, value in (("model", model), ("phase_kind", phase_kind), ("condition_label", condition),
                           ("domain", domain), ("task", task)):
            if value is not None:
                where.append(f"f.{col} = :{col}")
                params[col] = value
        cond = " AND ".join(where)
        hit = "f.flipped = 1" + (" AND f.direction = :direction" if direction is not None else "")
        with self._transaction("DEFERRED") as conn:  # one snapshot for both statements
            counts = conn.execute(
                f"SELECT f.prompt, min(f.task), min(f.domain), count(DISTINCT CASE WHEN {hit} THEN f.bundle END) AS nb,"
                f" count(DISTINCT f.bundle), coalesce(sum({hit}), 0), count(*) FROM flips f WHERE {cond}"
                f" GROUP BY f.prompt HAVING nb >= :k ORDER BY nb DESC, f.prompt", params).fetchall()
            hits = conn.execute(
                f"SELECT DISTINCT f.prompt, f.model, f.condition_label, f.direction, b.seq, f.bundle"
                f" FROM flips f JOIN bundles b ON b.id = f.bundle WHERE {hit} AND {cond}", params).fetchall()
        detail: dict[str, tuple[set[str], set[str], set[str], dict[str, int]]] = {}
        for prompt, m, c, d, seq, b in hits:
            sets = detail.setdefault(prompt, (set(), set(), set(), {}))
            sets[0].add(m), sets[1].add(c), sets[2].add(d)
            sets[3][b] = seq
        out = []
        for prompt, task_, domain_, nb, no, fr, nrows in counts:
            models, conds, dirs, bundles = detail.get(prompt, (set(), set(), set(), {}))
            out.append(PromptFlipSummary(
                prompt=prompt, task=task_, domain=domain_, bundles_flipped=nb, bundles_observed=no, flipped_rows=fr,
                observed_rows=nrows, models=sorted(models), conditions=sorted(conds), directions=sorted(dirs),
                bundles=sorted(bundles, key=bundles.__getitem__)))
        return out

    def resolve_prompt(self, ref: str) -> str:
        """The registered prompt id equal to ``ref``, or the only one starting with it."""
        if self._conn.execute("SELECT 1 FROM prompts WHERE id = ?", (ref,)).fetchone():
            return ref
        found = [r[0] for r in self._conn.execute(
            "SELECT id FROM prompts WHERE substr(id, 1, length(:r)) = :r ORDER BY id LIMIT 3", {"r": ref})] if ref else []
        if len(found) == 1:
            return found[0]
        if not found:
            raise UnknownPromptError(f"prompt {ref!r} is not in the registry {self.path}")
        raise UnknownPromptError(f"prompt prefix {ref!r} matches several prompts ({', '.join(found[:2])}, ...); "
                                 f"give more of the id")

    def show(self, prompt_id: str) -> PromptHistory:
        """Every row of one prompt (id or unique prefix) across bundles, with its metadata.

        Raises ``UnknownPromptError`` when no (or more than one) registered prompt matches.
        """
        with self._transaction("DEFERRED") as conn:
            pid = self.resolve_prompt(prompt_id)
            meta = conn.execute("SELECT id, task, domain, dataset, records, preview FROM prompts WHERE id = ?",
                                (pid,)).fetchone()
            rows = conn.execute(
                "SELECT f.bundle, b.experiment_id, f.sample, f.baseline, f.phase, f.phase_kind, f.model,"
                " f.condition_label, f.baseline_label, f.label, f.baseline_score, f.score, f.flipped, f.direction,"
                " f.identical FROM flips f JOIN bundles b ON b.id = f.bundle WHERE f.prompt = ?"
                " ORDER BY b.seq, f.phase, f.model, f.condition_label, f.sample", (pid,)).fetchall()
        info = PromptInfo(prompt=meta[0], task=meta[1], domain=meta[2], dataset=meta[3],
                          records=orjson.loads(meta[4]), preview=meta[5])
        history = [HistoryRow(bundle=r[0], experiment_id=r[1], sample=r[2], baseline=r[3], phase=r[4], phase_kind=r[5],
                              model=r[6], condition=r[7], baseline_label=r[8], label=r[9], baseline_score=r[10],
                              score=r[11], flipped=bool(r[12]), direction=r[13], identical=bool(r[14])) for r in rows]
        return PromptHistory(prompt=info, bundles_observed=len({r.bundle for r in history}),
                             bundles_flipped=len({r.bundle for r in history if r.flipped}), rows=history)
