"""One measurement per fresh process, so that its peak RSS is its own (issue 16).

``python -m benchmarks.measure verify STORE ID [--repeat N]``: wall times of ``verify``
(no recompilation) and, in the same process and run, of one ``orjson.loads`` pass over
the bundle's JSON and JSON-lines files (read from the store, one call per JSON value);
``python -m benchmarks.measure diff STORE A B``: wall times of ``diff_bundles``;
``python -m benchmarks.measure compile SPEC DATA``: wall time of ``compile_spec``.
Each prints one JSON object with the peak RSS (``VmHWM``) of the whole process, imports
and inputs included, and the CPU seconds of each timed call (children included). :func:`run_child` runs one and parses its answer.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB.

    ``VmHWM`` of /proc/self/status: the high-water mark of this process image. Not
    ``ru_maxrss``, which Linux carries over exec from the parent that spawned us (a child
    of a 600 MB parent reports at least 600 MB).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


CPU: list[float] = []
"""CPU seconds (user + system, this process and its waited-for children) of each timed call, in order."""


def _cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _times(fn, repeat: int) -> list[float]:
    """Wall seconds of ``repeat`` calls of ``fn``; their CPU seconds are appended to :data:`CPU`."""
    out = []
    for _ in range(repeat):
        c, t = _cpu(), time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
        CPU.append(_cpu() - c)
    return out


def orjson_pass(store: Any, bundle_id: str) -> tuple[float, int]:
    """Seconds to read every JSON/JSON-lines file of the bundle and ``orjson.loads`` each value once; bytes parsed."""
    import orjson

    names = {store.object_path(e.sha256): e.name for e in store.manifest(bundle_id).files
             if e.name.endswith((".json", ".jsonl"))}
    paths = list(names)
    t = time.perf_counter()
    nbytes = 0
    for p in paths:
        raw = p.read_bytes()
        nbytes += len(raw)
        if names[p].endswith(".jsonl"):
            for line in raw.splitlines():
                orjson.loads(line)
        else:
            orjson.loads(raw)
    return time.perf_counter() - t, nbytes


def _verify(store_dir: str, bundle_id: str, repeat: int, warmup: bool = True) -> dict[str, Any]:
    from batchsafe.bundles.store import BundleStore
    from batchsafe.verification.verify import verify

    store = BundleStore(store_dir)
    if warmup:  # imports (pandas, scipy, statsmodels: ~2 s of CPU), page cache
        ok = verify(bundle_id, store, recompile=False)
        if not ok.ok:
            return {"ok": False, "lines": ok.lines()}
    walls, passes, nbytes = [], [], 0
    pass_cpu = []
    reports = []
    for _ in range(repeat):  # alternated, so that both see the same load
        walls += _times(lambda: reports.append(verify(bundle_id, store, recompile=False)), 1)
        if not reports[-1].ok:
            return {"ok": False, "lines": reports[-1].lines()}
        c = _cpu()
        s, nbytes = orjson_pass(store, bundle_id)
        pass_cpu.append(_cpu() - c)
        passes.append(s)
    return {"ok": True, "verify_s": walls, "orjson_pass_s": passes, "json_bytes": nbytes,
            "orjson_pass_cpu_s": pass_cpu}


def _diff(store_dir: str, a: str, b: str, repeat: int, warmup: bool = True) -> dict[str, Any]:
    from batchsafe.bundles.store import BundleStore
    from batchsafe.verification.diff import diff_bundles
    from batchsafe.verification.source import from_store

    store = BundleStore(store_dir)
    src_a, src_b = from_store(store, a), from_store(store, b)
    if warmup:
        diff_bundles(src_a, src_b)
    return {"diff_s": _times(lambda: diff_bundles(src_a, src_b), repeat)}


def _compile(spec: str, data: str, repeat: int) -> dict[str, Any]:
    from batchsafe.compiler.compile import compile_spec

    plan = None

    def once() -> None:
        nonlocal plan
        plan = compile_spec(spec, data)

    walls = _times(once, repeat)
    assert plan is not None
    return {"compile_s": walls, "samples": len(plan.samples), "groups": len(plan.groups)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.measure")
    ap.add_argument("what", choices=("verify", "diff", "compile"))
    ap.add_argument("args", nargs="+")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-warmup", dest="warmup", action="store_false",
                    help="time the first call too (imports included); for the 300k bundles")
    ns = ap.parse_args(argv)
    if ns.what == "verify":
        out = _verify(*ns.args, repeat=ns.repeat, warmup=ns.warmup)
    elif ns.what == "diff":
        out = _diff(*ns.args, repeat=ns.repeat, warmup=ns.warmup)
    else:
        out = _compile(*ns.args, repeat=ns.repeat)
    out["peak_rss_mb"] = peak_rss_mb()
    out["cpu_s"] = CPU  # wall times inflate with other processes' load; CPU time much less so
    print(json.dumps(out))
    return 0


def run_child(what: str, *args: str, repeat: int = 3, warmup: bool = True) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter and return its JSON answer (plus median/min)."""
    flags = ["--repeat", str(repeat)] + ([] if warmup else ["--no-warmup"])
    proc = subprocess.run([sys.executable, "-m", "benchmarks.measure", what, *args, *flags],
                          cwd=ROOT, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmarks.measure {what} failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in [k for k, v in out.items() if k.endswith("_s") and isinstance(v, list)]:
        out[key.removesuffix("_s") + "_median_s"] = statistics.median(out[key])
        out[key.removesuffix("_s") + "_min_s"] = min(out[key])
    return out


if __name__ == "__main__":
    sys.exit(main())
