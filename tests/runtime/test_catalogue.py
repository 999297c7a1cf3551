"""The engine catalogue is the one declaration every other place reads; each engine is
declared in its own module (spec block, checks, capabilities, adapter)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Literal, get_args

import pytest
from jsonschema import Draft202012Validator

from batchsafe.compiler.checks import ENGINE_MODES
from batchsafe.compiler.plan import Group
from batchsafe.compiler.spec import Phase, spec_json_schema
from batchsafe.compiler.spec_refs import EngineSpec
from batchsafe.runtime.bindings import SERVER_PROBES
from batchsafe.runtime.engine import EngineError, engine_class, registered_engines
from batchsafe.runtime.engines.catalogue import DISPATCH_MODES, ENGINES, engine
from batchsafe.runtime.engines.config import EngineConfig


def test_the_spec_accepts_exactly_the_declared_kinds() -> None:
    union = get_args(get_args(EngineSpec)[0])
    assert sorted(get_args(m.model_fields["kind"].annotation)[0] for m in union) == sorted(ENGINES)
    assert sorted(_engine_schema()["discriminator"]["mapping"]) == sorted(ENGINES)


def _engine_schema() -> dict:
    schema = spec_json_schema()
    (one,) = schema["properties"]["engines"]["patternProperties"].values()
    return {"$defs": schema["$defs"], **one}


def test_a_kind_without_an_adapter_is_refused_by_the_schema() -> None:
    validator = Draft202012Validator(_engine_schema())
    assert not list(validator.iter_errors({"kind": "llamacpp"}))
    assert list(validator.iter_errors({"kind": "no_such_engine"}))


def test_modes_and_capabilities_come_from_the_declaration() -> None:
    assert get_args(Phase.model_fields["dispatch"].annotation) == DISPATCH_MODES
    assert get_args(Group.model_fields["mode"].annotation) == DISPATCH_MODES
    assert ENGINE_MODES == {k: e.modes for k, e in ENGINES.items()}
    assert "concurrent" in ENGINE_MODES["llamacpp"]  # the old preflight fallback omitted it
    for kind, info in ENGINES.items():
        cls = engine_class(kind)
        assert cls.name == kind and cls.capabilities is info.capabilities
        # Adapters build themselves from the plan; llama.cpp through the default factory,
        # which fetches and quantizes its GGUF file through the model store.
        assert hasattr(cls, "from_plan") == (kind != "llamacpp")


def test_default_endpoints_are_declared_once() -> None:
    for kind in ("vllm", "ollama"):
        info = ENGINES[kind]
        assert info.config.model_fields["endpoint"].default == info.default_endpoint == SERVER_PROBES[kind][1]
    assert "llamacpp" not in SERVER_PROBES
    from batchsafe.runtime.shard import EMBEDDED_KINDS

    # in-process kinds, as declared (no server to share)
    assert EMBEDDED_KINDS == {k for k, e in ENGINES.items() if e.default_endpoint is None} >= {"llamacpp"}


class _XConfig(EngineConfig):
    kind: Literal["x"]


def test_declarations_are_checked_and_unknown_kinds_named() -> None:
    with pytest.raises(ValueError, match="modes"):
        engine("x", config=_XConfig, display="x", summary="", modes=("batched",))
    with pytest.raises(RuntimeError, match="declared twice"):
        engine("vllm", config=_XConfig, display="x", summary="", modes=("sequential",))
    with pytest.raises(ValueError, match="Literal\\['y'\\]"):
        engine("y", config=_XConfig, display="y", summary="", modes=("sequential",))
    with pytest.raises(EngineError, match="registered: " + ", ".join(sorted(ENGINES))):
        engine_class("no_such_engine")
    assert set(ENGINES) <= set(registered_engines())


def test_each_engine_is_declared_in_its_own_module_with_its_spec_block() -> None:
    for kind, info in ENGINES.items():
        cls = info.factory()
        # adapter, declaration and spec block live in one module: adding an engine is one file
        assert info.target == f"{cls.__module__}:{cls.__qualname__}"
        assert info.config.__module__ == cls.__module__, kind
        assert issubclass(info.config, EngineConfig)


def test_reading_the_catalogue_loads_no_heavy_dependency() -> None:
    # The compiler reads the catalogue (and so imports the engine modules for their spec
    # blocks); the HTTP client, llama.cpp and torch stay unloaded until an engine runs.
    code = ("import sys, batchsafe.compiler.compile, batchsafe.runtime.engines.catalogue as c; "
            "print(sorted(c.ENGINES)); "
            "print(sorted(m for m in ('httpx', 'llama_cpp', 'torch', 'transformers', 'vllm') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    kinds, heavy = r.stdout.strip().splitlines()
    assert kinds == str(sorted(ENGINES)) and heavy == "[]"


def test_engines_command_lists_the_catalogue(capsys) -> None:
    from batchsafe.cli import main

    assert main(["engines", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["kind"] for r in rows] == list(ENGINES)
    by_kind = {r["kind"]: r for r in rows}
    assert by_kind["llamacpp"]["extras"] == ["embedded"] and by_kind["vllm"]["default_endpoint"] == "http://127.0.0.1:8000"
