"""`make bench`: run every benchmark and print a JSON report (copy the numbers into BENCHMARKS.md)."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

from benchmarks import compile_bench


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
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "os": platform.platform()}


def main() -> int:
    """Run the benchmarks against $BATCHSAFE_DATA (default ../shared/data)."""
    data = Path(os.environ.get("BATCHSAFE_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
    if not data.is_dir():
        print(f"benchmarks need the public datasets: set BATCHSAFE_DATA (tried {data})", file=sys.stderr)
        return 2
    report = {"machine": machine(), "compile": compile_bench.run(data)}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
