"""Ctrl-C a real `batchsafe run` mid-plan, and check a resumed run has every sample once.

Shared by the real-engine tests of every launch kind (process, container): the contract is
the same whatever serves the plan.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, Callable


def sync_phase(engine: str) -> str:
    """One synchronized phase at batch sizes 1 and 2 on ``engine``, with the vllm_cpu spec's
    tasks and model: the plan of the real-engine kill and Ctrl-C tests."""
    return textwrap.dedent(f"""\
        phases:
          - id: p1
            kind: batch_size
            models: [smollm2-135m]
            engine: {engine}
            tasks: [advbench_refusal, borderline]
            dispatch: synchronized
            axes: {{batch_sizes: [1, 2]}}
        """)


SYNC_1_2 = sync_phase("vllm")
"""The phase on the engine named vllm (the vLLM process, container and offline tests)."""


def start_run(plan: Any, tmp_path: Path, after_groups: int = 2, wait_s: float = 400,
              env: dict[str, str] | None = None) -> tuple[subprocess.Popen, list[str], Path]:
    """Write ``plan`` and start `batchsafe run` on it in a subprocess; return (process, its
    command line, run directory) once ``after_groups`` journal lines exist, the run still going."""
    from batchsafe.runtime.journal import JOURNAL_FILE

    plan_path = tmp_path / "plan.lock.json"
    plan_path.write_bytes(plan.to_bytes())
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "batchsafe.cli", "run", str(plan_path), "--out", str(run_dir), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    journal = run_dir / JOURNAL_FILE
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and proc.poll() is None:
        if journal.is_file() and len(journal.read_bytes().splitlines()) >= after_groups:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    return proc, cmd, run_dir


def interrupt_run(plan: Any, tmp_path: Path, after_groups: int = 2, wait_s: float = 400) -> tuple[Path, str]:
    """Start `batchsafe run` on ``plan`` in a subprocess, SIGINT it once ``after_groups`` journal
    lines exist, and return (run directory, its stderr) after asserting exit 130 and the
    resume hint."""
    proc, _, run_dir = start_run(plan, tmp_path, after_groups, wait_s)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "resume with" in err, err[-2000:]
    return run_dir, err


def assert_each_sample_once(plan: Any, run_dir: Path) -> None:
    """The finished run's outputs hold every planned sample exactly once (0 lost, 0 duplicated)."""
    rows = [json.loads(x) for x in (run_dir / "outputs" / "samples.jsonl").read_text().splitlines()]
    assert sorted(r["sample"] for r in rows) == sorted(s.id for s in plan.samples)


def run_killing_server(plan: Any, run_dir: Path, kill: Callable[[dict], object], after_groups: int,
                       wait_s: float = 400) -> tuple[Any, list[object]]:
    """``run_plan`` in this process while a thread waits for ``after_groups`` journal lines, then
    calls ``kill`` once with the first launch record (parsed JSON). Returns the run summary and
    what ``kill`` returned (empty if it never fired)."""
    from batchsafe.runtime.executor import run_plan
    from batchsafe.runtime.journal import JOURNAL_FILE

    killed: list[object] = []

    def killer() -> None:
        journal = run_dir / JOURNAL_FILE
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if journal.is_file() and len(journal.read_bytes().splitlines()) >= after_groups:
                killed.append(kill(json.loads(next((run_dir / "launch").glob("001-*.json")).read_text())))
                return
            time.sleep(0.05)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    summary = run_plan(plan, run_dir, progress=False)
    t.join()
    return summary, killed
