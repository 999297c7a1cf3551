"""Running the statistics stage on the second core while the rescoring stage runs on the first.

The two stages are independent: statistics recomputes everything from the recorded scores
(parsing ``scores.jsonl`` when rescoring has not already produced byte-identical records,
which give the same values), rescoring re-scores the outputs. A forked child inherits the
parsed bundle (no pickling of inputs) and sends back only what later stages read: the
stage, the recomputed statistics and targets, and the names it found damaged.

The result is the sequential one, or it is not used: when rescoring marks a file damaged
(``ctx.bad`` changes), statistics would have been skipped for it, so the child's answer is
dropped and the stage runs again in this process; so it is when the child fails for any
reason (no ``fork``, too little memory for a copy-on-write child, a crash, a pickling
error). An exception the stage raised in the child is raised here, as it would have been.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from typing import Any

from .checks import Context
from .guard import guarded
from .report import Stage

__all__ = ["SERIAL_ENV", "ForkedStage"]


def _available_bytes() -> int:
    try:
        with open("/proc/meminfo", "rb") as fh:
            for line in fh:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 1 << 62


SERIAL_ENV = "BATCHSAFE_VERIFY_SERIAL"
"""Set to 1 to run every verify stage in this process, one after the other."""


def _worth_forking() -> bool:
    # A child touches (and so copies) a good part of the parent's heap; only fork when a
    # full copy fits in the memory left, and there is a second core to run it on.
    return os.environ.get(SERIAL_ENV, "") in ("", "0") and hasattr(os, "fork") and (os.cpu_count() or 1) > 1 and _available_bytes() > 2 * _rss_bytes()


class ForkedStage:
    """``guarded(name, fn, ctx)`` started in a child process now, its result taken by :meth:`join`."""

    def __init__(self, name: str, fn: Callable[[Context], Stage], ctx: Context) -> None:
        self.name, self.fn = name, fn
        self.bad_before = set(ctx.bad)
        self.pid: int | None = None
        if not _worth_forking():
            return
        r, w = os.pipe()
        try:
            pid = os.fork()
        except OSError:
            os.close(r)
            os.close(w)
            return
        if pid == 0:  # the child: run the stage, send the result, leave without any clean-up
            try:
                os.close(r)
                try:
                    st = guarded(name, fn, ctx)
                    payload = pickle.dumps(("ok", st, ctx.stats, ctx.targets, ctx.bad), pickle.HIGHEST_PROTOCOL)
                except BaseException as exc:  # noqa: BLE001 - handed to the parent, which raises it
                    payload = pickle.dumps(("error", exc), pickle.HIGHEST_PROTOCOL)
                with os.fdopen(w, "wb") as fh:
                    fh.write(payload)
            finally:
                os._exit(0)
        os.close(w)
        self.pid, self.read_fd = pid, r

    def join(self, ctx: Context) -> Stage | None:
        """The stage as the sequential run gives it (see the module docstring)."""
        answer: Any = None
        if self.pid is not None:
            try:
                with os.fdopen(self.read_fd, "rb") as fh:
                    data = fh.read()
                _, status = os.waitpid(self.pid, 0)
                if data and status == 0:
                    answer = pickle.loads(data)
            except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError):
                answer = None
        if answer is not None and answer[0] == "error":
            if set(ctx.bad) == self.bad_before:
                raise answer[1]
            answer = None
        if answer is None or set(ctx.bad) != self.bad_before:
            return guarded(self.name, self.fn, ctx)
        _, st, stats, targets, bad = answer
        ctx.stats, ctx.targets = stats, targets
        ctx.bad |= bad
        return st
