"""The engine catalogue is the one declaration every other place reads."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import get_args

import pytest
from jsonschema import Draft202012Validator

from batchsafe.compiler.checks import ENGINE_MODES
from batchsafe.compiler.plan import Group
from batchsafe.compiler.spec import OllamaEngine, Phase, VLLMEngine, spec_json_schema
from batchsafe.compiler.spec_refs import EngineSpec
from batchsafe.runtime.bindings import SERVER_PROBES
from batchsafe.runtime.engine import EngineError, engine_class, registered_engines
from batchsafe.runtime.engines.catalogue import DISPATCH_MODES, ENGINES, engine


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
    assert list(validator.iter_errors({"kind": "transformers"}))  # described once, never implemented


def test_modes_and_capabilities_come_from_the_declaration() -> None:
    assert get_args(Phase.model_fields["dispatch"].annotation) == DISPATCH_MODES
    assert get_args(Group.model_fields["mode"].annotation) == DISPATCH_MODES
    assert ENGINE_MODES == {k: e.modes for k, e in ENGINES.items()}
    assert "concurrent" in ENGINE_MODES["llamacpp"]  # the old preflight fallback omitted it
    for kind, info in ENGINES.items():
        cls = engine_class(kind)
        assert cls.name == kind and cls.capabilities is info.capabilities
        # Server adapters build themselves from the plan; the embedded one via the default factory.
        assert hasattr(cls, "from_plan") == (info.default_endpoint is not None)


def test_default_endpoints_are_declared_once() -> None:
    assert VLLMEngine.model_fields["endpoint"].default == ENGINES["vllm"].default_endpoint == SERVER_PROBES["vllm"][1]
    assert OllamaEngine.model_fields["endpoint"].default == ENGINES["ollama"].default_endpoint == SERVER_PROBES["ollama"][1]
    assert "llamacpp" not in SERVER_PROBES
    from batchsafe.runtime.shard import EMBEDDED_KINDS

    assert EMBEDDED_KINDS == {"llamacpp"}  # in-process kinds, as declared (no server to share)


def test_declarations_are_checked_and_unknown_kinds_named() -> None:
    with pytest.raises(ValueError, match="modes"):
        engine("x", "m:C", display="x", summary="", modes=("batched",))
    with pytest.raises(RuntimeError, match="declared twice"):
        engine("vllm", "m:C", display="x", summary="", modes=("sequential",))
    with pytest.raises(EngineError, match="registered: llamacpp, ollama, vllm"):
        engine_class("transformers")
    assert set(ENGINES) <= set(registered_engines())


def test_importing_the_catalogue_loads_no_adapter() -> None:
    code = ("import sys, batchsafe.compiler.spec, batchsafe.runtime.engines.catalogue as c; "
            "print(sorted(m for m in sys.modules if m.startswith('batchsafe.runtime.engines.') and m != c.__name__))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]"


def test_engines_command_lists_the_catalogue(capsys) -> None:
    from batchsafe.cli import main

    assert main(["engines", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["kind"] for r in rows] == list(ENGINES)
    assert rows[0]["extras"] == ["embedded"] and rows[1]["default_endpoint"] == "http://127.0.0.1:8000"
