"""Scale-out on the real embedded llama.cpp engine (SmolLM2-135M): Ray workers and --shard + merge
give outputs byte-identical to one process; killed workers and a killed driver lose nothing.

The plan is the quickstart's phases cut to CI size (test_scaleout/small_quickstart.yaml:
22 samples in 20 groups, batch sizes 1/2, a quant axis and a repeat floor). The engine is
deterministic per group, so any split of the groups over processes must give the same bytes.
Ray runs a local cluster on 127.0.0.1 with usage stats off; every test checks that no
process of the clusters it started is left behind.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import llama_cpp  # noqa: F401  (the real engine: a missing build is a failure here, not a skip)

from batchsafe.analysis.analyze import analyze_run
from batchsafe.bundles.from_run import bundle_run
from batchsafe.bundles.store import BundleStore
from batchsafe.compiler.compile import compile_spec
from batchsafe.runtime.ray_backend import run_ray
from batchsafe.runtime.shard import shard_plan
from batchsafe.verification.verify import verify

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "tests" / "runtime" / "test_scaleout" / "small_quickstart.yaml"
DATA = ROOT / "specs"  # the quickstart's own prompt files
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0"}
CLI = [sys.executable, "-m", "batchsafe.cli"]
# The ray extra is installed by make setup; it is imported by the backend itself (which sets
# its loopback-only environment first), so this test module only checks that it is there.
assert importlib.util.find_spec("ray") is not None, "ray is missing: make setup installs the ray extra"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _children() -> dict[int, int]:
    """pid -> parent pid of every process visible in /proc."""
    out = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                out[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    return out


def _descendants(root: int) -> set[int]:
    tree = _children()
    found, todo = set(), [root]
    while todo:
        p = todo.pop()
        kids = {c for c, pp in tree.items() if pp == p and c not in found}
        found |= kids
        todo += kids
    return found


def _ray_processes() -> set[int]:
    """Ray's own daemons and workers (raylet, gcs_server, ray::*) among this machine's processes."""
    pids = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if b"ray/core/src/ray/raylet" in cmd or b"gcs_server" in cmd or cmd.startswith(b"ray::"):
                pids.add(int(d.name))
    return pids


def _wait_gone(pids: set[int], timeout: float = 20) -> set[int]:
    deadline = time.monotonic() + timeout
    alive = set(pids)
    while alive and time.monotonic() < deadline:
        alive = {p for p in alive if Path(f"/proc/{p}").exists()
                 and "Z" not in (Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[:1] or ["Z"])}
        time.sleep(0.2)
    return alive


@pytest.fixture(scope="module")
def ref(smol_path, tmp_path_factory):
    """The plan, its file, and the single-process run's outputs."""
    root = tmp_path_factory.mktemp("scaleout")
    plan = compile_spec(SPEC, DATA)
    pfile = root / "plan.lock.json"
    pfile.write_bytes(plan.to_bytes())
    r = _cli("run", str(pfile), "--out", str(root / "ref"), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert len(plan.groups) == 20 and len(plan.samples) == 22
    return plan, pfile, root / "ref"


def test_shard_and_merge_equal_one_process_and_the_bundle_verifies(ref, tmp_path):
    plan, pfile, single = ref
    parts = []
    for i in range(2):
        d = tmp_path / f"shard-{i}"
        r = _cli("run", str(pfile), "--shard", f"{i}/2", "--out", str(d), "--no-progress")
        assert r.returncode == 0, r.stderr
        assert not (d / "outputs").exists() and (d / "partial.json").is_file()
        parts.append(str(d))
    r = _cli("merge", str(pfile), parts[0], "--out", str(tmp_path / "gap"))
    assert r.returncode == 1 and "gap:" in r.stderr and "missing shard(s) of 2: 1" in r.stderr
    r = _cli("merge", str(pfile), *parts, "--out", str(tmp_path / "merged"))
    assert r.returncode == 0, r.stderr
    merged = tmp_path / "merged"
    for name in ("outputs/samples.jsonl", "outputs/fillers.jsonl", "journal.jsonl"):
        assert _sha(merged / name) == _sha(single / name), name
    # The merged run is a normal run for the later stages: analyse, bundle, verify.
    store = BundleStore(tmp_path / "store")
    bid = bundle_run(merged, plan, store, extra=analyze_run(plan, merged).bundle_files())
    report = verify(bid, store, data_dir=DATA)
    assert report.ok, "\n".join(report.lines())
    ref_id = bundle_run(single, plan, store, extra=analyze_run(plan, single).bundle_files())
    for name in ("outputs/samples.jsonl", "outputs/fillers.jsonl", "plan.lock.json"):
        assert store.entry(bid, name).sha256 == store.entry(ref_id, name).sha256, name  # only volatile files differ


def test_ray_two_workers_and_a_killed_worker_lose_nothing(ref, tmp_path):
    plan, _, single = ref
    before = _ray_processes()
    manifest = shard_plan(plan, 2)
    killed: list[tuple[int, int, int]] = []

    def on_poll(state: dict[int, tuple[int, int, int]]) -> None:
        # SIGKILL one worker once it has journaled a group and still has groups to run.
        for i, (pid, groups, _) in sorted(state.items()):
            if not killed and 1 <= groups < len(manifest.shards[i].groups) - 1:
                os.kill(pid, signal.SIGKILL)
                killed.append((i, pid, groups))

    t0 = time.monotonic()
    s = run_ray(plan, tmp_path / "out", workers=2, progress=False, on_poll=on_poll)
    assert killed, "no worker was killed mid-run (the shards finished between two polls?)"
    shard, pid, groups_at_kill = killed[0]
    assert s.restarts.get(shard, 0) >= 1  # Ray restarted the actor and retried its task
    assert sorted(s.shards_run) == [0, 1]
    assert _sha(tmp_path / "out" / "outputs" / "samples.jsonl") == _sha(single / "outputs" / "samples.jsonl")
    assert _sha(tmp_path / "out" / "journal.jsonl") == _sha(single / "journal.jsonl")  # 0 lost, 0 duplicated
    part = s.partials_dir / f"shard-{shard}-of-2"
    log = (part / "logs" / "run.log").read_text()
    assert log.count("session start") == 2  # the restarted worker resumed the killed one's journal
    resumed_at = int(re.search(r"resume=True, (\d+)/\d+ groups already journaled", log.split("session start")[2])[1])
    assert groups_at_kill <= resumed_at <= groups_at_kill + 1  # the kill may land just after one more fsync
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[1][:3]
    assert not _wait_gone(_ray_processes() - before), "Ray processes left running after ray.shutdown()"
    print(f"ray run with one worker killed: {time.monotonic() - t0:.1f} s")


def test_ray_driver_killed_then_resumed(ref, tmp_path):
    plan, pfile, single = ref
    out = tmp_path / "out"
    before = _ray_processes()
    cmd = [*CLI, "run", str(pfile), "--out", str(out), "--backend", "ray", "--workers", "2", "--no-progress"]
    p = subprocess.Popen(cmd, env=ENV, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    journals = [tmp_path / "out.shards" / f"shard-{i}-of-2" / "journal.jsonl" for i in range(2)]
    deadline = time.monotonic() + 240
    spawned: set[int] = set()
    while time.monotonic() < deadline and p.poll() is None:
        spawned |= _descendants(p.pid)  # the local cluster's processes, for cleanup below
        if sum(len(j.read_bytes().splitlines()) for j in journals if j.exists()) >= 2:
            break
        time.sleep(0.2)
    assert p.poll() is None, p.communicate()[1].decode()[-2000:]
    spawned |= _descendants(p.pid)
    p.kill()
    p.communicate()
    # Ray's agents outlive a SIGKILLed driver (the raylet and workers do not): end what this test started.
    for pid in _wait_gone(spawned, timeout=5):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    done = sum(len(j.read_bytes().splitlines()) for j in journals if j.exists())
    assert 2 <= done < len(plan.groups) and not out.exists()
    r = _cli("run", str(pfile), "--out", str(out), "--backend", "ray", "--workers", "2", "--no-progress")
    assert r.returncode == 2 and "--resume" in r.stderr  # partials exist: resuming is explicit
    r = _cli("run", str(pfile), "--out", str(out), "--backend", "ray", "--workers", "2", "--no-progress", "--resume")
    assert r.returncode == 0, r.stderr
    assert _sha(out / "outputs" / "samples.jsonl") == _sha(single / "outputs" / "samples.jsonl")
    assert _sha(out / "journal.jsonl") == _sha(single / "journal.jsonl")
    r = _cli("run", str(pfile), "--out", str(out), "--backend", "ray", "--workers", "2", "--no-progress", "--resume")
    assert r.returncode == 0 and "already complete" in r.stdout
    assert not _wait_gone(_ray_processes() - before), "Ray processes left running"
