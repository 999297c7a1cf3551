"""Launch kind ``container`` against a real dockerd and a real loopback registry (no mocks).

``make test`` starts both (tools/docker_ci.sh up: a private dockerd on its own socket,
exported as DOCKER_HOST, and docker-registry on 127.0.0.1:5000) and stops them after
pytest. The image is built locally (tests/runtime/test_container/image.py: a debootstrapped
Debian rootfs with llama_cpp.server), pushed to the registry, removed locally and pulled
back by digest. With ``CI=true`` a missing daemon fails these tests instead of skipping.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

try:
    import docker
except ImportError:  # `make setup` installs it (extra "container"); CI must not skip quietly
    if os.environ.get("CI", "").lower() == "true":
        raise
    pytest.skip("the docker package is not installed (pip install 'batchsafe[container]')", allow_module_level=True)

from batchsafe.runtime.launch.container import ContainerServer, prepare, resolve_image  # noqa: E402
from batchsafe.runtime.launch.container_handle import LABEL  # noqa: E402
from batchsafe.runtime.launch.process import LaunchError  # noqa: E402
from batchsafe.runtime.launch.record import LaunchRecord  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).parent / "test_container"
REGISTRY_REPO = "127.0.0.1:5000/batchsafe/smol-server"
_spec = importlib.util.spec_from_file_location("batchsafe_test_container_image", HERE / "image.py")
image_mod = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(image_mod)  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def client():
    """The daemon at DOCKER_HOST; fails (CI=true) or skips when there is none."""
    try:
        c = docker.from_env(timeout=300)
        c.ping()
    except Exception as exc:
        msg = f"no Docker daemon at {os.environ.get('DOCKER_HOST', '(DOCKER_HOST unset)')}: {exc}; run `make docker-up`"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    yield c
    c.close()


@pytest.fixture(scope="module")
def pinned(client) -> str:
    """``127.0.0.1:5000/batchsafe/smol-server@sha256:…``: built, pushed, then removed locally."""
    tag = image_mod.ensure_image(client)
    image_mod.ensure_model_dir()
    img = client.images.get(tag)
    img.tag(REGISTRY_REPO, "latest")
    for line in client.images.push(REGISTRY_REPO, "latest", stream=True, decode=True):
        assert "error" not in line, line
    img.reload()
    [ref] = [d for d in img.attrs["RepoDigests"] if d.startswith(REGISTRY_REPO + "@")]
    _remove_local(client, ref)
    return ref


def _remove_local(client, ref: str) -> None:
    """Forget every local name of the image (the build tag stays cached: it is another image id only
    if its inputs changed), so the next launch must pull ``ref`` back by digest."""
    for name in (ref, f"{REGISTRY_REPO}:latest"):
        try:
            client.images.remove(name)
        except docker.errors.ImageNotFound:
            pass
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get(ref)


def spec_for(tmp_path: Path, ref: str, extra: str = "") -> Path:
    shutil.copytree(REPO / "specs" / "quickstart", tmp_path / "quickstart", dirs_exist_ok=True)
    path = tmp_path / "smol_container.yaml"
    path.write_text((HERE / "smol_container.yaml").read_text().replace(f"{REGISTRY_REPO}@IMAGE_DIGEST", ref) + extra)
    return path


def labelled(client) -> list:
    return client.containers.list(all=True, filters={"label": LABEL})


def test_image_is_pulled_back_by_digest_and_runs(client, pinned, tmp_path) -> None:
    from batchsafe.compiler.compile import compile_spec

    plan = compile_spec(spec_for(tmp_path, pinned))
    img = resolve_image(client, pinned)  # not local: pulled by digest from the loopback registry
    assert pinned in img.attrs["RepoDigests"]
    req = prepare(plan, "vllm", plan.models[0], None)
    srv = ContainerServer(req, tmp_path / "run")
    try:
        c = client.containers.get(srv.record.container.container_id)
        assert c.attrs["HostConfig"]["NetworkMode"] == "host"
        assert [(m["Destination"], m["RW"]) for m in c.attrs["Mounts"]] == [("/model", False)]
        assert c.labels[LABEL] == "1" and c.attrs["Image"] == img.id
    finally:
        srv.finish("closed")
    rec = LaunchRecord.from_bytes((tmp_path / "run" / srv.record.file_name()).read_bytes())
    assert rec.kind == "container" and rec.stop_reason == "closed" and rec.container.repo_digest == pinned
    assert rec.container.image_id == img.id and rec.container.daemon_version
    assert rec.argv[rec.argv.index("--port") + 2:] == ["--seed", "42"]
    assert rec.weights_digest == plan.models[0].hf_weights_sha256
    with pytest.raises(docker.errors.NotFound):
        client.containers.get(rec.container.container_id)  # stopped and removed


def test_a_container_that_exits_at_start_is_a_launch_error_with_its_code_and_log(client, pinned, tmp_path) -> None:
    from batchsafe.compiler.compile import compile_spec

    plan = compile_spec(spec_for(tmp_path, pinned))
    req = prepare(plan, "vllm", plan.models[0], None)
    req.flags = [*req.flags, "--dtype", "float32"]  # the test image cannot honour it: its entrypoint exits 2
    with pytest.raises(LaunchError) as exc:
        ContainerServer(req, tmp_path / "run")
    msg = str(exc.value)
    assert "exited with code 2 before it was ready" in msg and "unsupported argument '--dtype'" in msg, msg
    [rec] = [LaunchRecord.from_bytes(p.read_bytes()) for p in (tmp_path / "run" / "launch").glob("*.json")]
    assert rec.stop_reason == "failed" and rec.exit_code == 2 and not labelled(client)


def test_a_wrong_digest_fails_before_any_sample_naming_both(client, pinned, tmp_path) -> None:
    from batchsafe.compiler.compile import compile_spec
    from batchsafe.runtime.executor import RunError, run_plan

    wrong = pinned.split("@")[0] + "@sha256:" + "0" * 64
    plan = compile_spec(spec_for(tmp_path, wrong))
    run_dir = tmp_path / "run"
    with pytest.raises(RunError) as exc:
        run_plan(plan, run_dir, progress=False)
    msg = str(exc.value)
    assert "sha256:" + "0" * 64 in msg and pinned.split("@")[1] in msg, msg
    assert "docker run" in msg and "the plan pins digest" in msg
    assert not (run_dir / "outputs").exists() and not list(run_dir.glob("launch/*.json"))
    # The launcher refuses it too (the preflight is not its only guard).
    with pytest.raises(LaunchError, match="the plan pins digest sha256:0{64}.*available: sha256:"):
        ContainerServer(prepare(plan, "vllm", plan.models[0], None), tmp_path / "run2")
    assert not labelled(client)


def test_preflight_names_a_missing_daemon_and_an_unreachable_registry(pinned, tmp_path, monkeypatch) -> None:
    from batchsafe.compiler.compile import compile_spec
    from batchsafe.runtime.bindings import preflight

    elsewhere = "127.0.0.1:5999/batchsafe/smol-server@" + pinned.split("@")[1]  # nothing listens on 5999
    plan = compile_spec(spec_for(tmp_path, elsewhere))
    text = "\n".join(preflight(plan))
    assert "not available locally and its registry (127.0.0.1:5999) cannot be reached" in text, text
    assert "to run by hand: DOCKER_HOST=" in text and f" {elsewhere} --model /model " in text
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-daemon.sock")
    text = "\n".join(preflight(plan))
    assert f"no Docker daemon reachable at unix://{tmp_path}/no-daemon.sock" in text, text
    assert "docker run --rm -d" in text


def test_end_to_end_bundle_records_the_digest_that_ran_and_verifies(client, pinned, tmp_path) -> None:
    from batchsafe.pipeline import make_bundle
    from batchsafe.verification.verify import verify

    result = make_bundle(spec_for(tmp_path, pinned), out_root=tmp_path / "runs", progress=False)
    rep = verify(result.bundle_id, store=result.store)
    stages = {s.name: s for s in rep.stages}
    assert stages["stack"].status == "PASS", stages["stack"].problems
    assert all(s.status != "FAIL" for s in rep.stages), [(s.name, s.problems) for s in rep.stages]
    [rec] = [LaunchRecord.from_bytes(p.read_bytes()) for p in (result.run_dir / "launch").glob("*.json")]
    assert rec.container.repo_digest == pinned and rec.stop_reason == "closed"
    rows = [json.loads(x) for x in (result.run_dir / "outputs" / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and all(r["text"] for r in rows)
    assert not labelled(client)


def test_a_container_killed_mid_run_is_restarted_and_nothing_is_lost_or_doubled(client, pinned, tmp_path) -> None:
    from interrupt_run import assert_each_sample_once, run_killing_server

    from batchsafe.compiler.compile import compile_spec

    plan = compile_spec(spec_for(tmp_path, pinned))
    run_dir = tmp_path / "run"

    def kill(rec: dict) -> str:
        client.containers.get(rec["container"]["container_id"]).kill()  # docker kill: SIGKILL
        return rec["container"]["container_id"]

    summary, killed = run_killing_server(plan, run_dir, kill, after_groups=2, wait_s=300)
    assert killed, "the container was never killed"
    assert summary.complete and summary.retries >= 1
    assert_each_sample_once(plan, run_dir)
    recs = sorted((LaunchRecord.from_bytes(p.read_bytes()) for p in (run_dir / "launch").glob("*.json")),
                  key=lambda r: r.seq)
    assert [r.stop_reason for r in recs] == ["died", "closed"] and recs[0].exit_code == 128 + signal.SIGKILL
    assert recs[0].container.container_id == killed[0] != recs[1].container.container_id
    assert not labelled(client)


def test_killing_the_launching_process_removes_its_container(client, pinned, tmp_path) -> None:
    """kill -9 of the process that started the container: its reaper removes the container."""
    from batchsafe.compiler.compile import compile_spec

    plan_path = tmp_path / "plan.lock.json"
    plan_path.write_bytes(compile_spec(spec_for(tmp_path, pinned)).to_bytes())
    code = textwrap.dedent(f"""
        import json, time
        from pathlib import Path
        from batchsafe.compiler.plan import load_plan
        from batchsafe.runtime.launch.container import ContainerServer, prepare
        plan = load_plan(Path({str(plan_path)!r}))
        srv = ContainerServer(prepare(plan, "vllm", plan.models[0], None), Path({str(tmp_path / 'run')!r}))
        print(json.dumps({{"id": srv.record.container.container_id}}), flush=True)
        time.sleep(600)
    """)
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    line = parent.stdout.readline()
    assert line, "the parent did not launch a container"
    cid = json.loads(line)["id"]
    assert client.containers.get(cid).status == "running"
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            client.containers.get(cid)
        except docker.errors.NotFound:
            break
        time.sleep(0.25)
    else:
        client.containers.get(cid).remove(force=True)
        pytest.fail("the container outlived its killed launcher by 30 s")


def test_ctrl_c_removes_the_container_and_the_run_resumes_exactly(client, pinned, tmp_path) -> None:
    """SIGINT to `batchsafe run`: exit 130 after the current group, the container is gone, and
    `--resume` (a new container) finishes with every sample exactly once."""
    from interrupt_run import assert_each_sample_once, interrupt_run

    from batchsafe.compiler.compile import compile_spec
    from batchsafe.runtime.executor import run_plan

    plan = compile_spec(spec_for(tmp_path, pinned))
    run_dir, _ = interrupt_run(plan, tmp_path, wait_s=300)
    [rec] = [LaunchRecord.from_bytes(p.read_bytes()) for p in (run_dir / "launch").glob("*.json")]
    assert rec.stop_reason == "closed" and not labelled(client)
    summary = run_plan(plan, run_dir, resume=True, progress=False)
    assert summary.complete
    assert_each_sample_once(plan, run_dir)


def test_a_labelled_container_whose_owner_is_gone_is_swept(client, pinned) -> None:
    import socket

    from batchsafe.runtime.launch.container_handle import OWNER_LABEL, reap_orphans

    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that no longer runs
    c = client.containers.run(pinned, entrypoint=["sleep", "600"], detach=True, network_mode="host",
                              labels={LABEL: "1", OWNER_LABEL: f"{socket.gethostname()}:{dead.pid}"})
    try:
        assert reap_orphans(client) == [c.name]  # (a live owner's container is kept: test_container_unit)
        with pytest.raises(docker.errors.NotFound):
            client.containers.get(c.id)
    finally:
        try:
            c.remove(force=True)
        except docker.errors.NotFound:
            pass


def test_zz_no_batchsafe_container_is_left(client) -> None:
    """Runs last in this module: every launch above stopped and removed its container."""
    left = [(c.name, c.status) for c in labelled(client)]
    assert left == [], left
