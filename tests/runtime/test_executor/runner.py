"""Run ``batchsafe run`` with the fake engine (for kill -9 and Ctrl-C tests in a subprocess).

Usage: python runner.py PLAN --out DIR [--resume]; FAKE_SLEEP_S sets a per-group delay.
The real CLI runs; only the default engine factory is replaced by the fake one.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fakes

import batchsafe.runtime.executor
from batchsafe.cli import main

batchsafe.runtime.executor.default_engine_factory = lambda plan: fakes.FakeFactory(  # type: ignore[assignment]
    sleep_s=float(os.environ.get("FAKE_SLEEP_S", "0")))

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:], "--no-progress"]))
