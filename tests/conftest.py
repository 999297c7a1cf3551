"""Shared by every test package: the hand-made run of the compiler fixture plan.

``tests/analysis/test_analyze/fake_run.py`` builds deterministic runs, analyses and bundles
without a model; many packages' tests need one, so its folder is put on ``sys.path`` here
and they ``import fake_run``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "analysis" / "test_analyze"))
