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

.PHONY: setup test bundle compile schema bench clean

setup: $(VENV)/.setup-done

# First run compiles llama-cpp-python from source: about 10-15 minutes on 2 cores.
$(VENV)/.setup-done: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@echo "installing batchsafe with the embedded llama.cpp engine (first time: ~10-15 min compile on 2 cores)"
	$(BIN)/python -m pip install --quiet -e '.[test,embedded]'
	touch $@

test: setup
	$(BIN)/python -m pytest -q

compile: setup
	$(BIN)/batchsafe compile $(SPEC) $(if $(DATA),--data-dir $(DATA)) -o $(OUT)/$(notdir $(basename $(SPEC))).plan.lock.json

bundle: setup
	$(BIN)/batchsafe bundle make $(SPEC) $(if $(DATA),--data-dir $(DATA)) --out $(OUT)

schema: setup
	$(BIN)/python -m batchsafe.schemas

bench: setup
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(OUT) .pytest_cache .hypothesis
