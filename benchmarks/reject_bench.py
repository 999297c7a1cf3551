"""How fast `batchsafe verify` and `batchsafe validate` reject a 4 KB garbage file (issue 15).

Each command runs as a fresh process, as a user would run it, on 4,096 random bytes
(seeded, so every run sees the same file): ``verify garbage.bin`` must print one FAIL
line and exit 1, ``validate garbage.yaml`` one positioned error and exit 2.  Timed: the
wall time of the whole process (interpreter start-up included) and its CPU time (user +
system, from ``wait4``), best and median of ``repeats``.  CPU time is the steadier number
on a shared machine: wall time grows with the load average, CPU time hardly does.

Also checked per run: the process imported none of scipy / pandas / matplotlib /
statsmodels (the rejection happens before the analysis stack loads) and wrote nothing
under ``$HOME`` (pointed at an empty temporary directory).
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TARGET_S = 0.3
PROBE = ("import sys; from batchsafe.cli import main; rc = main(sys.argv[1:]); "
         "print('HEAVY', ','.join(m for m in ('scipy', 'pandas', 'matplotlib', 'statsmodels') if m in sys.modules) "
         "or '-', file=sys.stderr); sys.exit(rc)")


# Reference: what rejecting cost when the stages were imported first (the path before
# ``verification.entry``): import them, then reject the same file.
PROBE_FULL = ("import sys; import batchsafe.verification.verify; from batchsafe.cli import main; "
              "rc = main(sys.argv[1:]); print('HEAVY -', file=sys.stderr); sys.exit(rc)")


def _run_once(args: list[str], env: dict[str, str], probe: str = PROBE) -> tuple[float, float, int, str]:
    """(wall s, cpu s, exit code, stderr) of one ``python -c probe args`` process."""
    import subprocess

    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", probe, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    err = proc.stderr.read().decode() if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_utime + usage.ru_stime, proc.returncode, err


def _measure(args: list[str], want_rc: int, env: dict[str, str], home: Path, repeats: int,
             probe: str = PROBE) -> dict[str, Any]:
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu, rc, err = _run_once(args, env, probe)
        heavy = next((ln.split(" ", 1)[1] for ln in err.splitlines() if ln.startswith("HEAVY ")), "?")
        if rc != want_rc or heavy != "-" or "Traceback" in err:
            raise RuntimeError(f"{args[0]} on garbage: exit {rc} (want {want_rc}), heavy imports {heavy}: {err[-500:]}")
        walls.append(wall)
        cpus.append(cpu)
    written = sorted(str(p.relative_to(home)) for p in home.rglob("*"))
    return {"wall_s_best": round(min(walls), 3), "wall_s_median": round(statistics.median(walls), 3),
            "cpu_s_best": round(min(cpus), 3), "cpu_s_median": round(statistics.median(cpus), 3),
            "target_s": TARGET_S, "met_on_best_wall": min(walls) <= TARGET_S, "heavy_imports": [],
            "written_under_home": written}


def run(repeats: int = 7) -> dict[str, Any]:
    """Time both rejections; see the module docstring."""
    garbage = random.Random(15).randbytes(4096)
    with tempfile.TemporaryDirectory(prefix="batchsafe-reject-") as tmp:
        root = Path(tmp)
        home = root / "home"
        home.mkdir()
        (root / "garbage.bin").write_bytes(garbage)
        (root / "garbage.yaml").write_bytes(garbage)
        env = {k: v for k, v in os.environ.items() if k not in ("MPLCONFIGDIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME")}
        env["HOME"] = str(home)
        return {"load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
                "verify_garbage_4k": _measure(["verify", str(root / "garbage.bin")], 1, env, home, repeats),
                "validate_garbage_4k": _measure(["validate", str(root / "garbage.yaml")], 2, env, home, repeats),
                "reference_verify_after_importing_the_stages": _measure(
                    ["verify", str(root / "garbage.bin")], 1, {**env, "MPLCONFIGDIR": str(root / "mpl")}, home,
                    max(3, repeats // 2), PROBE_FULL)}


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
