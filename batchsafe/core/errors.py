"""The one exception root: every error batchsafe raises on purpose is a ``BatchsafeError``.

Each class carries the process exit code the command line returns for it (DVC's
``DvcException`` is the model), so ``batchsafe.cli.main`` catches the root once instead of
mapping classes to codes by hand. Classes that were ``ValueError``s before keep that base
too, so callers that catch ``ValueError`` still do.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = ["EXIT_OK", "EXIT_FAIL", "EXIT_USAGE", "EXIT_INTERRUPTED", "BatchsafeError"]

EXIT_OK = 0
"""Success (verify: every stage passed; diff: no gate tripped)."""
EXIT_FAIL = 1
"""A check failed or a run failed after it started (engine died, verification FAIL)."""
EXIT_USAGE = 2
"""Bad input: a malformed spec, plan, bundle, CSV or argument; nothing was changed."""
EXIT_INTERRUPTED = 130
"""Ctrl-C or SIGTERM; a run stopped this way resumes where it stopped."""


class BatchsafeError(Exception):
    """Root of every deliberate batchsafe error; ``exit_code`` is what the CLI returns for it."""

    exit_code: ClassVar[int] = EXIT_USAGE
    """Exit status of the ``batchsafe`` command when this error ends it."""

    def render(self) -> list[str]:
        """The lines the command line prints on stderr for this error."""
        return [f"error: {self}"]
