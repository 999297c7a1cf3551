"""The light front door of ``batchsafe verify``: reject bad input before the analysis stack loads.

``verification.verify`` imports the stages, which import the analysis (pandas, scipy,
statsmodels, matplotlib): about 1.5 s before the first byte of the bundle is read.
Someone handed a garbage file should hear so at once, so this module imports only what
opening a bundle needs, and loads the stages once the bundle has opened:

1. a file that is neither a tar nor a gzip stream is refused from its first bytes
   (:func:`sniff_archive`), before even the archive reader is imported;
2. ``open_bundle`` (the hostile-input archive reader, the manifest parser) runs next; a
   bundle it refuses becomes the same one-stage FAIL report ``verification.verify``
   gives;
3. only then are the stages imported and run.

matplotlib keeps a config and font cache under ``$HOME`` (``~/.config/matplotlib``,
``~/.cache/matplotlib``); verify writes nothing under ``$HOME``, so unless the user set
``MPLCONFIGDIR`` it is pointed at a temporary directory removed at exit.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["sniff_archive", "verify", "unopened_report", "UnopenedReport", "private_mpl_dir"]

_TAR_MAGIC = (b"ustar\x0000", b"ustar  \x00")  # POSIX/pax and GNU, at offset 257
_SNIFF_BYTES = 512


def sniff_archive(path: Path) -> str | None:
    """Why the regular file ``path`` cannot be a bundle archive, from its first bytes; None if it may be."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(_SNIFF_BYTES)
    except OSError as exc:
        return f"{path}: cannot be read ({exc.strerror or exc})"
    if head[:2] == b"\x1f\x8b":  # gzip: the tar header is checked by the archive reader after inflating
        return None
    if len(head) < _SNIFF_BYTES:
        return f"{path}: {len(head)} bytes, too short for a tar archive (a header block is 512 bytes)"
    if head[257:265] not in _TAR_MAGIC:
        return f"{path}: not a bundle archive (no gzip signature and no ustar/pax/GNU tar header at byte 0)"
    return None


def unopened_report(where: str, claimed_id: str | None, problem: str) -> Any:
    """The report of a bundle that could not be opened: one failed ``integrity`` stage."""
    from .report import Stage, VerifyReport

    rep = VerifyReport(where=where, bundle_id=None, claimed_id=claimed_id)
    st = Stage(name="integrity")
    st.fail(problem)
    st.summary = UNOPENED
    rep.stages.append(st)
    return rep


UNOPENED = "the bundle could not be opened"


class UnopenedReport:
    """``unopened_report`` without loading pydantic (about a third of a rejection's start-up).

    Prints (``lines``, ``model_dump_json``) exactly what the ``VerifyReport`` would (a test
    compares them); any other attribute is read from the real report, built on first use.
    """

    ok = False

    def __init__(self, where: str, claimed_id: str | None, problem: str) -> None:
        self.where, self.claimed_id, self.problem = where, claimed_id, problem
        self._full: Any = None

    def full(self) -> Any:
        """The equivalent ``VerifyReport``."""
        if self._full is None:
            self._full = unopened_report(self.where, self.claimed_id, self.problem)
        return self._full

    def lines(self) -> list[str]:
        """The human-readable report (``VerifyReport.lines``)."""
        return [f"bundle ? (?) at {self.where}", f"FAIL integrity: {UNOPENED}", f"    {self.problem}", "FAILED: integrity"]

    def model_dump_json(self, indent: int | None = None) -> str:
        """The ``--json`` report (``VerifyReport.model_dump_json``)."""
        import json

        stage = {"name": "integrity", "status": "FAIL", "summary": UNOPENED, "problems": [self.problem], "n_problems": 1}
        data = {"schema_version": 1, "where": self.where, "bundle_id": None, "claimed_id": self.claimed_id,
                "kind": None, "parent": None, "stages": [stage]}
        return json.dumps(data, indent=indent, ensure_ascii=False, separators=None if indent else (",", ":"))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.full(), name)


def private_mpl_dir() -> None:
    """Point matplotlib at a temporary config directory (removed at exit) unless MPLCONFIGDIR is set."""
    if os.environ.get("MPLCONFIGDIR"):
        return
    tmp = tempfile.mkdtemp(prefix="batchsafe-mpl-")
    atexit.register(shutil.rmtree, tmp, True)
    os.environ["MPLCONFIGDIR"] = tmp


def verify(ref: str | os.PathLike[str], store: Any = None, *, claimed_id: str | None = None,
           limits: Any = None, **options: Any) -> Any:
    """``verification.verify.verify``, with bad input rejected before the stages are imported."""
    p = Path(ref)
    if p.is_file() and (problem := sniff_archive(p)) is not None:
        return UnopenedReport(str(ref), claimed_id, problem)
    from batchsafe.bundles.archive import Limits

    from .source import SourceError, open_bundle

    try:
        with open_bundle(ref, store, claimed_id=claimed_id, limits=limits or Limits()) as src:
            private_mpl_dir()
            from .verify import verify_source

            return verify_source(src, **options)
    except SourceError as exc:
        return unopened_report(str(ref), claimed_id, str(exc))
