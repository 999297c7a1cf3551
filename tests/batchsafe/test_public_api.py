"""The curated public API: every name in ``batchsafe.__all__`` resolves, lazily."""

import subprocess
import sys

import batchsafe


def test_every_public_name_resolves() -> None:
    for name in batchsafe.__all__:
        assert getattr(batchsafe, name) is not None, name
    assert batchsafe.analyze is batchsafe.analyze_bundle and batchsafe.rescore is batchsafe.rescore_bundle
    assert {"compile_spec", "load_plan", "run_plan", "analyze", "make_bundle", "open_bundle", "verify",
            "diff_bundles", "rescore"} <= set(batchsafe.__all__)
    assert "vllm" in batchsafe.ENGINES and "refusal" in batchsafe.SCORERS


def test_importing_the_package_loads_no_stage() -> None:
    code = ("import sys, batchsafe; loaded = [m for m in sys.modules if m.startswith('batchsafe.') and "
            "not m.startswith('batchsafe.core')]; print(loaded); sys.exit(1 if loaded else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout


def test_unknown_name_is_an_attribute_error() -> None:
    try:
        batchsafe.no_such_thing  # noqa: B018
    except AttributeError as exc:
        assert "no_such_thing" in str(exc)
    else:
        raise AssertionError("expected AttributeError")
