"""Launch kind ``container`` without a daemon: request building (argv, env, mounts, GPU
requests), the ``docker run`` line, digest parsing, the stack check of container records,
preflight with no daemon, the test image's entrypoint, and the specs that use containers.
The same paths run against a real dockerd in test_container_real.py."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

from batchsafe.compiler.compile import compile_spec
from batchsafe.runtime.launch.container import ContainerRequest, prepare, split_ref
from batchsafe.runtime.launch.process import LaunchError
from batchsafe.runtime.launch.record import ContainerInfo, LaunchRecord
from batchsafe.runtime.launch.vllm_process import server_args
from batchsafe.verification.report import Stage
from batchsafe.verification.stack import check_record

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).parent / "test_container"
DIGEST = "sha256:" + "ab" * 32
IMAGE = f"127.0.0.1:5000/batchsafe/smol-server@{DIGEST}"


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    d = tmp_path_factory.mktemp("spec")
    shutil.copytree(REPO / "specs" / "quickstart", d / "quickstart")
    (d / "s.yaml").write_text((HERE / "smol_container.yaml").read_text().replace(
        "127.0.0.1:5000/batchsafe/smol-server@IMAGE_DIGEST", IMAGE))
    return compile_spec(d / "s.yaml")


def request(plan, **kw) -> ContainerRequest:
    req = prepare(plan, "vllm", plan.models[0], None)
    for k, v in kw.items():
        setattr(req, k, v)
    return req


def test_the_container_gets_the_process_launchers_arguments_and_only_the_plans_env(plan) -> None:
    req = request(plan)
    assert req.image == IMAGE and req.gpus is False  # VLLM_TARGET_DEVICE=cpu
    cmd = req.command(8123)
    assert cmd == server_args("/model", "HuggingFaceTB/SmolLM2-135M-Instruct", 8123, ["--seed", "42"])
    kw = req.run_kwargs(8123, "n", {"batchsafe.launch": "1"})
    assert kw["environment"] == {"VLLM_TARGET_DEVICE": "cpu", "LLAMA_N_THREADS": "1"}
    assert kw["network_mode"] == "host" and kw["device_requests"] is None and kw["init"] is True
    [(src, bind)] = kw["volumes"].items()
    assert bind == {"bind": "/model", "mode": "ro"} and src.endswith("models/smollm2-135m-instruct-gguf")


def test_a_gpu_engine_asks_for_all_gpus_and_records_it(plan) -> None:
    req = request(plan, env={"VLLM_BATCH_INVARIANT": "0"}, gpus=True)
    [dr] = req.run_kwargs(8000, "n", {})["device_requests"]
    assert dr["Count"] == -1 and dr["Capabilities"] == [["gpu"]]
    assert req.device_requests() == [{"driver": "", "count": -1, "device_ids": [], "capabilities": [["gpu"]],
                                      "options": {}}]
    assert " --gpus all " in req.docker_run(8000)
    from batchsafe.runtime.launch.container import wants_gpus

    assert wants_gpus({}) and wants_gpus({"VLLM_TARGET_DEVICE": "cuda"}) and not wants_gpus({"VLLM_TARGET_DEVICE": "CPU"})


def test_without_a_model_folder_the_server_fetches_the_pinned_revision(plan, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    req = request(plan, model_dir=None, revision="12fd25f77366fa6b3b4b768ec3050bf629380bac")
    cmd = req.command(9000)
    assert cmd[:2] == ["--model", "HuggingFaceTB/SmolLM2-135M-Instruct"] and "--revision" in cmd
    assert cmd.index("--revision") < cmd.index("--port")  # the plan's flags stay after --port N
    assert req.mounts() == [{"source": str(tmp_path / "hf"), "target": "/root/.cache/huggingface", "mode": "rw"}]


def test_docker_run_is_a_command_a_user_can_paste(plan, monkeypatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///tmp/d.sock")
    line = request(plan).docker_run(8123, "bs-1")
    assert line.startswith("DOCKER_HOST=unix:///tmp/d.sock docker run --rm -d --name bs-1 --init --network host ")
    assert ":/model:ro -e LLAMA_N_THREADS=1 -e VLLM_TARGET_DEVICE=cpu " + IMAGE + " --model /model " in line
    assert line.endswith("--host 127.0.0.1 --port 8123 --seed 42")


def test_only_digest_pins_are_launched() -> None:
    assert split_ref(IMAGE) == ("127.0.0.1:5000/batchsafe/smol-server", DIGEST)
    for bad in ("vllm/vllm-openai:latest", "repo@sha256:abc", "@" + DIGEST, "repo@sha256:" + "G" * 64):
        with pytest.raises(LaunchError, match="not pinned as repo@sha256"):
            split_ref(bad)


def test_preflight_without_a_daemon_says_so_and_prints_the_docker_run_line(plan, monkeypatch, tmp_path) -> None:
    from batchsafe.runtime.bindings import preflight

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/none.sock")
    problems = preflight(plan)
    text = "\n".join(problems)
    assert f"no Docker daemon reachable at unix://{tmp_path}/none.sock" in text, text
    assert "to run by hand: DOCKER_HOST=unix://" in text and f"docker run --rm -d --init --network host" in text


def record(plan, **container) -> LaunchRecord:
    req = request(plan)
    cmd = req.command(9)
    info = dict(image=IMAGE, repo_digest=IMAGE, image_id="sha256:" + "c" * 64, container_id="x", name="n",
                command=cmd, env=dict(req.env), network_mode="host", mounts=req.mounts(), docker_run="docker run")
    info.update(container)
    return LaunchRecord(seq=1, engine="vllm", kind="container", argv=cmd, env=dict(req.env), endpoint="http://x",
                        weights_files={}, weights_digest=plan.models[0].hf_weights_sha256, log="logs/x.log",
                        served_model=req.served_name, container=ContainerInfo(**info))


def problems(plan, rec) -> list[str]:
    st = Stage(name="stack")
    check_record(plan, rec, st)
    return st.problems


def test_stack_check_passes_the_plans_digest_and_names_both_on_another(plan) -> None:
    assert problems(plan, record(plan)) == []
    other = "127.0.0.1:5000/batchsafe/smol-server@sha256:" + "cd" * 32
    [msg] = problems(plan, record(plan, repo_digest=other))
    assert "the container ran " + other in msg and "cd" * 32 in msg and DIGEST in msg
    rw = [{"source": "/m", "target": "/model", "mode": "rw"}]
    assert any("mounted writable" in p for p in problems(plan, record(plan, mounts=rw)))
    as_process = record(plan).model_copy(update={"kind": "process"})
    assert any("a process launch, the plan says launch.kind container" in p for p in problems(plan, as_process))
    bare = record(plan).model_copy(update={"container": None})
    assert any("without its container section" in p for p in problems(plan, bare))


def test_the_test_images_entrypoint_refuses_flags_it_cannot_honour(capsys) -> None:
    spec = importlib.util.spec_from_file_location("batchsafe_test_serve", HERE / "serve.py")
    serve = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(serve)  # type: ignore[union-attr]
    assert serve.main(["--model", "/m", "--dtype", "float32"]) == 2
    assert "unsupported argument '--dtype'" in capsys.readouterr().err
    assert serve.main(["--served-model-name", "x"]) == 2
    assert serve.main(["--model", "/nonexistent-dir-xyz"]) == 2


def test_tr138_v2_launches_the_pinned_vllm_image_on_the_gpus() -> None:
    from batchsafe.compiler.compile import load_spec

    spec, _ = load_spec(REPO / "specs" / "tr138_v2.yaml")
    eng = spec.engines["vllm"]
    assert eng.launch is not None and eng.launch.kind == "container" and "@sha256:" in eng.image
    assert "VLLM_TARGET_DEVICE" not in eng.env  # so the launcher requests --gpus all


def test_only_containers_of_a_gone_owner_on_this_host_count_as_orphans() -> None:
    import os
    import socket
    import subprocess

    from batchsafe.runtime.launch.container_handle import _owner_gone

    dead = subprocess.Popen(["true"])
    dead.wait()
    host = socket.gethostname()
    assert _owner_gone(f"{host}:{dead.pid}")
    assert not _owner_gone(f"{host}:{os.getpid()}")  # alive: keep
    assert not _owner_gone(f"other-host:{dead.pid}")  # another machine's container on a shared daemon
    assert not _owner_gone("") and not _owner_gone(f"{host}:x")


def test_a_container_for_an_engine_the_plan_lacks_is_refused(plan) -> None:
    with pytest.raises(LaunchError, match="the plan defines no engine 'nope'"):
        prepare(plan, "nope", plan.models[0], None)
