"""The verification report: one PASS / FAIL / SKIP line per stage, each failure named precisely."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from batchsafe.core.artifact import artifact

VERIFY_SCHEMA_VERSION = 1
MAX_LISTED = 25
"""Problems listed per stage; the rest are counted (a corrupt 31k-sample file must not flood the terminal)."""

Status = Literal["PASS", "FAIL", "SKIP"]


class Stage(BaseModel):
    """The outcome of one verification stage."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    name: str
    """Stage name: integrity, schemas, plan, coverage, rescoring, statistics, targets, replay."""
    status: Status = "PASS"
    """PASS: everything checked holds; FAIL: something differs; SKIP: could not be checked (says why)."""
    summary: str = ""
    """One line: what was checked, or why it was skipped."""
    problems: list[str] = Field(default_factory=list)
    """The first MAX_LISTED problems, each naming the file, sample or number that differs."""
    n_problems: int = 0
    """How many problems there were in all."""

    def fail(self, message: str) -> None:
        """Record one problem (the stage fails)."""
        self.status = "FAIL"
        self.n_problems += 1
        if len(self.problems) < MAX_LISTED:
            self.problems.append(message)

    def skip(self, why: str) -> Stage:
        """Mark the stage skipped because of ``why``."""
        self.status, self.summary = "SKIP", why
        return self


@artifact("verify report", version=VERIFY_SCHEMA_VERSION)  # printed by verify --json, not a bundle file
class VerifyReport(BaseModel):
    """Everything ``batchsafe verify`` found; ``--json`` prints it."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    schema_version: Literal[1] = VERIFY_SCHEMA_VERSION
    """Version of this report format."""
    where: str
    """The bundle as given (store and id, directory or archive)."""
    bundle_id: str | None
    """Id recomputed from the manifest bytes (None when no manifest could be read)."""
    claimed_id: str | None = None
    """Id the location claims (store directory name, --id), if any."""
    kind: str | None = None
    parent: str | None = None
    stages: list[Stage] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No stage failed."""
        return all(s.status != "FAIL" for s in self.stages)

    def lines(self) -> list[str]:
        """The human-readable report: a PASS/FAIL/SKIP line per stage, problems indented under it."""
        out = [f"bundle {self.bundle_id or '?'} ({self.kind or '?'}) at {self.where}"]
        if self.parent:
            out.append(f"parent {self.parent}")
        for s in self.stages:
            out.append(f"{s.status} {s.name}: {s.summary}".rstrip(": "))
            out += [f"    {p}" for p in s.problems]
            if s.n_problems > len(s.problems):
                out.append(f"    ... and {s.n_problems - len(s.problems)} more")
        failed = [s.name for s in self.stages if s.status == "FAIL"]
        out.append(f"FAILED: {', '.join(failed)}" if failed else "verified: every stage passed")
        return out
