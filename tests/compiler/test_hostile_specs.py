"""Hostile and malformed specs (issue 15): each class of problem is reported where it is caused.

Every case is a mutation of the compiler fixture spec (``test_compile/mini.yaml``) written
to ``CASE.yaml`` in a temporary directory (and, for ``extends`` cases, a ``base.yaml``
beside it).  ``validate``'s stderr must equal ``test_hostile/CASE.expected`` (regenerate
with ``BATCHSAFE_REGEN_GOLDEN=1`` and review the diff) and each case also states the one
fact it is about (primary line:col, the note), so a regenerated golden cannot silently
move an error back to where it was.  ``compile`` must reject the same spec with the same
spec-only diagnostics.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from batchsafe.cli import main

ROOT = Path(__file__).resolve().parents[2]
MINI = (ROOT / "tests/compiler/test_compile/mini.yaml").read_text()
DATA = ROOT / "tests/compiler/test_compile/data"
GOLDEN = Path(__file__).with_name("test_hostile")
# Codes only the data/selection stages can produce: compile may add these, validate cannot.
DATA_CODES = {"missing-file", "hash-mismatch", "dataset-format", "missing-data-dir", "selection-too-large",
              "prior-mismatch"}
BIDI_CONTROL = re.compile("[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u061c\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


def sub(old: str, new: str, text: str = MINI) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def after_seed(extra: str) -> str:
    return sub("seed: 7\n", "seed: 7\n" + extra)


BS = "    axes: {batch_sizes: [1, 2, 4]}"
DEEP_BLOCK = "".join("  " * i + f"k{i}:\n" for i in range(70)) + "  " * 70 + "v: 1\n"
# Each anchor nests the previous one 20 levels deeper: legal to the composer, 100 deep once built.
ALIAS_CHAIN = "".join(f"x{i}: &a{i} " + "[" * 20 + (f"*a{i - 1}" if i else "1") + "]" * 20 + "\n" for i in range(5))

# name -> (spec text, base text or None, "line:col" of the first diagnostic, text its block must contain)
CASES: dict[str, tuple[str, str | None, str, str]] = {
    # 1. syntax errors inside a construct: primary at the construct's start, give-up point as a note
    "syntax_flow_mapping": (sub("decoding: {temperature: 0.0, max_tokens: 16, warmup: 1}",
                                "decoding: {temperature: 0.0, max_tokens: 16, warmup: 1"), None, "5:11",
                            "note: the parser gave up at line 6"),
    "syntax_flow_sequence": (sub(BS, "    axes: {batch_sizes: [1, 2, 4}"), None, "57:25", "note: the parser gave up"),
    "syntax_double_quote": (MINI + 'description: "never closed\n', None, "105:14", "note: the parser gave up at line 106"),
    "syntax_single_quote": (sub("  local: {kind: llamacpp, n_threads: 1}", "  local: {kind: 'llamacpp, n_threads: 1}"),
                            None, "49:17", "a quoted string is not closed"),
    "syntax_missing_colon": (sub("seed: 7\n", "seed 7\nnote: x\n"), None, "4:1", "note: the parser gave up at line 5"),
    # 2. nesting limit: at the line where it is crossed
    "nesting_flow": (after_seed("deep: " + "[" * 100 + "]" * 100 + "\n"), None, "5:70", "nested more than 64"),
    "nesting_block": (after_seed(DEEP_BLOCK), None, "68:127", "nested more than 64"),
    "nesting_through_aliases": (after_seed(ALIAS_CHAIN), None, "8:", "nested more than 64"),
    # 3. values through aliases at the alias, recursive aliases at the alias, non-string keys at the key
    "alias_wrong_value": (sub(BS, "    axes: {batch_sizes: *bs}", after_seed("x-sizes: &bs [1, 0, 4]\n")), None, "58:25",
                          "note: the value comes through an alias; the anchor side is at line 5, col 18"),
    "alias_mapping_value": (sub(BS, "    axes: *ax", after_seed("x-axes: &ax {batch_sizes: [1, -2]}\n")), None, "58:11",
                            "anchor side is at line 5, col 31"),
    "alias_merge_key": (sub(BS, "    axes: {<<: *ax}", after_seed("x-axes: &ax {batch_sizes: [1, 2], repeats: 0}\n")),
                        None, "58:16", "anchor side is at line 5, col 44"),
    "alias_recursive_list": (after_seed("loop: &l [1, *l]\n"), None, "5:14", "recursive alias"),
    "alias_recursive_mapping": (after_seed("loop: &m {a: {b: *m}}\n"), None, "5:18", "recursive alias"),
    "key_integer": (after_seed("3: x\n"), None, "5:1", "mapping keys must be strings, got integer"),
    "key_boolean": (sub("  advbench:\n", "  true:\n"), None, "7:3", "mapping keys must be strings, got boolean"),
    "key_null": (after_seed("~: x\n"), None, "5:1", "mapping keys must be strings, got null"),
    "key_flow_sequence": (after_seed("[a, b]: 1\n"), None, "5:1", "mapping keys must be plain strings"),
    # 4. extends deletions that remove something required: at the deleting null
    "extends_delete_required_top": ("extends: base.yaml\n\nexperiment: null\n", MINI, "3:1",
                                    "note: reported at the deleting null"),
    "extends_delete_kind_axis": ("extends: base.yaml\nphases:\n  - id: p1\n    axes: {batch_sizes: null}\n", MINI,
                                 "4:12", "a batch_size phase needs axes.batch_sizes"),
    "extends_delete_referenced_dataset": ("extends: base.yaml\ndatasets:\n  arc: null\n", MINI, "3:3",
                                          "unknown dataset 'arc'"),
    "extends_delete_required_nested": ("extends: base.yaml\ntasks:\n  adv: {render: null}\n", MINI, "3:9",
                                       "missing required key 'render'"),
    # 5. spec-only checks that compile used to find late: validate finds them too
    "baseline_value": (sub("baseline: {batch_size: 1}", "baseline: {batch_size: 3}"), None, "95:28",
                       "baseline batch_size 3 is not one of the axis values 1, 4"),
    "baseline_axis": (sub("baseline: {batch_size: 1}", "baseline: {quant: Q8_0}"), None, "95:16",
                      "baseline axis 'quant' is not an axis of this phase"),
    "baseline_type": (sub("baseline: {concurrency: 1}", "baseline: {concurrency: '1'}"), None, "76:29",
                      "baseline concurrency '1' is not one of the axis values 1, 2"),
    "sha256_on_glob": (sub('{path: "mmlu/test/*_test.csv"}', '{path: "mmlu/test/*_test.csv", sha256: "sha256:'
                           + "0" * 64 + '"}'), None, "14:75", "sha256 cannot pin a glob"),
    "data_path_absolute": (sub("{path: arc/ARC-Test.jsonl}", "{path: /etc/passwd}"), None, "15:43",
                           "must stay inside the data directory"),
    "data_path_escaping": (sub("{path: arc/ARC-Test.jsonl}", "{path: arc/../../../x.jsonl}"), None, "15:43",
                           "must stay inside the data directory"),
    "target_unknown_phase": (sub("metric: plan.samples", "metric: stats.p9.flip_rate.safety"), None, "104:25",
                             "names phase 'p9', which the plan does not have"),
    "target_unknown_model": (sub("metric: plan.samples", "metric: stats.p1.identity.by_model.m7.bs2"), None, "104:25",
                             "names model 'm7', which no phase runs"),
    "target_unknown_plan_metric": (sub("metric: plan.samples", "metric: plan.sample"), None, "104:25",
                                   "did you mean 'samples'?"),
    # 6. duplicate axis values: positioned, before they become duplicate sample ids
    "duplicate_batch_size": (sub(BS, "    axes: {batch_sizes: [1, 2, 2, 4]}"), None, "57:32",
                             "batch_sizes lists 2 twice (also item [1])"),
    "duplicate_quant": (sub("axes: {quants: [Q8_0, Q2_K], concurrency: [1, 2]}",
                            "axes: {quants: [Q8_0, Q2_K, Q8_0], concurrency: [1, 2]}"), None, "75:33",
                        "quants lists 'Q8_0' twice"),
    "duplicate_kernel_id": (sub('        - {id: invariant, env: {VLLM_BATCH_INVARIANT: "1"}}',
                                '        - {id: default, env: {VLLM_BATCH_INVARIANT: "1"}}'), None, "94:11",
                            "kernel lists 'default' twice"),
    "duplicate_cobatch_condition": (sub("conditions: [solo, benign, adversarial]",
                                        "conditions: [solo, benign, solo]"), None, "66:36",
                                    "cobatch.conditions lists 'solo' twice"),
    # 7. ranges and what messages echo
    "seed_too_large": (sub("seed: 7", f"seed: {2 ** 63}"), None, "4:7", "is outside 0 <= seed < 2^63"),
    "seed_negative": (sub("seed: 7", "seed: -1"), None, "4:7", "seed -1 is outside 0 <= seed < 2^63"),
    "select_seed_huge": (sub("select: {count: 2}}\n  mmlu", "select: {count: 2, seed: " + "9" * 300 + "}}\n  mmlu"),
                         None, "30:", "999999999999... (300 digits)"),
    "integer_5000_digits": (sub("seed: 7", "seed: " + "7" * 5000), None, "4:7", "(5,000 characters) as !!int"),
    "integer_over_int64": (sub("n_threads: 1", f"n_threads: {2 ** 64}"), None, "49:38", "does not fit 64 bits"),
    "engine_int_over_int32": (sub("  local: {kind: llamacpp, n_threads: 1}", "  local: {kind: llamacpp, n_ctx: 4294967296}"),
                              None, "49:34", "engine setting 4294967296 does not fit 32 bits"),
    "echo_long_value": (sub("format: arc_jsonl", "format: " + "k" * 5000), None, "15:17", "'kkkkkkkk"),
    "echo_bidi_key": (after_seed('"\u202eevil\u2066": 1\n'), None, "5:1", "\\u202eevil\\u2066"),
    "echo_control_value": (sub("format: arc_jsonl", 'format: "arc\\x07\\u200b_jsonl"'), None, "15:17",
                           "'arc\\x07\\u200b_jsonl' is not one of"),
}


def _write(tmp_path: Path, name: str) -> str:
    text, base, _, _ = CASES[name]
    if base is not None:
        (tmp_path / "base.yaml").write_text(base)
    (tmp_path / f"{name}.yaml").write_text(text)
    return f"{name}.yaml"


def _run(args: list[str], capsys) -> tuple[int, str]:
    code = main(args)
    cap = capsys.readouterr()
    return code, cap.err + cap.out


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_spec_is_reported_where_it_is_caused(name, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")
    spec = _write(tmp_path, name)
    code, err = _run(["validate", spec], capsys)
    expected = GOLDEN / f"{name}.expected"
    if os.environ.get("BATCHSAFE_REGEN_GOLDEN"):
        expected.parent.mkdir(exist_ok=True)
        expected.write_text(err)
    assert code == 2, err
    assert err == expected.read_text()
    _, _, where, fact = CASES[name]
    blocks = sorted(b for b in _diags(err) if fact in b)
    assert blocks, (fact, err)  # the diagnostic this case is about, wherever it sorts
    pos = blocks[0].split(": error[", 1)[0].split(":", 1)[1]  # "line:col"
    assert pos.startswith(where) if where.endswith(":") else pos == where, (where, blocks[0])
    assert "Traceback" not in err
    assert not BIDI_CONTROL.search(err), repr(err)
    assert max(len(tok) for tok in err.split()) <= 90, "an echoed value was not capped"


def _diags(text: str) -> set[str]:
    """Diagnostic blocks (first line + note/hint lines), keyed by their first line."""
    blocks, cur = [], []
    for line in text.splitlines():
        if line.startswith("    ") and cur:
            cur.append(line)
        elif ": error[" in line:
            cur = [line]
            blocks.append(cur)
    return {"\n".join(b) for b in blocks}


@pytest.mark.parametrize("name", sorted(CASES))
def test_compile_rejects_what_validate_rejects_with_the_same_spec_errors(name, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    spec = _write(tmp_path, name)
    vcode, verr = _run(["validate", spec], capsys)
    ccode, cerr = _run(["compile", spec, "--data-dir", str(DATA), "-o", str(tmp_path / "plan.json")], capsys)
    assert vcode == ccode == 2, (verr, cerr)
    assert not (tmp_path / "plan.json").exists()
    spec_only = {b for b in _diags(cerr) if re.search(r"error\[([a-z-]+)\]", b)[1] not in DATA_CODES}
    assert spec_only == _diags(verr)


def test_validate_and_compile_agree_on_sound_specs(monkeypatch, capsys) -> None:
    monkeypatch.chdir(ROOT)
    for spec in ("specs/quickstart.yaml", "specs/tr138_v2.yaml", "specs/vllm_cpu.yaml", "tests/compiler/test_compile/mini.yaml"):
        code, err = _run(["validate", spec], capsys)
        assert code == 0, err


def test_stats_and_plan_names_match_the_analysis_and_the_plan() -> None:
    from batchsafe.analysis.stats.core import RESERVED
    from batchsafe.compiler.spec_checks import PLAN_SUMMARY_KEYS, STATS_RESERVED
    from batchsafe.compiler.compile import compile_spec

    assert STATS_RESERVED == RESERVED
    plan = compile_spec(ROOT / "tests/compiler/test_compile/mini.yaml", DATA)
    assert PLAN_SUMMARY_KEYS == set(plan.summary())


def test_plan_invariant_refuses_duplicate_sample_and_group_ids() -> None:
    from batchsafe.compiler.compile import compile_spec
    from batchsafe.compiler.plan_invariants import PlanInvariantError, assert_plan_invariants, plan_problems

    plan = compile_spec(ROOT / "tests/compiler/test_compile/mini.yaml", DATA)
    assert plan_problems(plan) == []
    dup_sample = plan.model_copy(update={"samples": plan.samples + plan.samples[:1]})
    dup_group = plan.model_copy(update={"groups": plan.groups + plan.groups[-1:]})
    moved = plan.model_copy(update={"samples": [plan.samples[0].model_copy(update={"position": 7})] + plan.samples[1:]})
    for bad, text in ((dup_sample, "sample id(s) occur more than once"), (dup_group, "group id(s) occur more than once"),
                      (moved, "is not member 7 of group")):
        with pytest.raises(PlanInvariantError, match=re.escape(text)):
            assert_plan_invariants(bad)
    assert PlanInvariantError.exit_code == 1


def test_positions_and_user_text_are_printed_verbatim(tmp_path, monkeypatch, capsys) -> None:
    # rich would turn ":100:" (line 100 of a file) or a ":smile:" in user text into emoji.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text("#\n" * 99 + "x: [1\n")
    code, err = _run(["validate", "s.yaml"], capsys)
    assert code == 2 and err.startswith("s.yaml:100:4: error[yaml-syntax]"), err
    (tmp_path / "t.yaml").write_text(MINI.replace("engine: vllm\n", "engine: ':smile:'\n", 1))
    code, err = _run(["validate", "t.yaml"], capsys)
    assert code == 2 and "':smile:' does not match" in err, err
