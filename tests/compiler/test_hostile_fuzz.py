"""Property test: YAML-level mutations of real specs never crash ``validate``.

Each example takes a real spec and applies a few mutations a hurried editor or a hostile
author could make (delete or duplicate a line, re-indent it, insert YAML punctuation, cut
the file short, splice in an anchor/alias or a huge number).  ``validate`` must either
accept it (exit 0) or reject it (exit 2) with every diagnostic positioned as
``file:line:col`` inside the file; any other exception, a Traceback, a position past the
end of the file or an unpositioned line fails the property.
"""

from __future__ import annotations

import re
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchsafe.cli import main

ROOT = Path(__file__).resolve().parents[2]
SPECS = {name: (ROOT / name).read_text() for name in
         ("specs/quickstart.yaml", "specs/vllm_cpu.yaml", "tests/compiler/test_compile/mini.yaml")}
SNIPPETS = ["[", "]", "{", "}", ":", ": ", ", ", "- ", "'", '"', "&a ", "*a", "<<: *a", "!!int ", "!custom ", "\t", "#",
            "? ", "|", ">", "%YAML 1.2", "---", "~", "null", "9" * 40, "1e999", "\u202e", "\x07", "\\u0000", "  ", "\n"]
DIAG = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): error\[[a-z0-9-]+\]")


@st.composite
def mutated(draw):
    name = draw(st.sampled_from(sorted(SPECS)))
    lines = SPECS[name].split("\n")
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["delete", "duplicate", "indent", "dedent", "insert", "truncate", "replace"]))
        if op == "delete" and len(lines) > 1:
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "indent":
            lines[i] = "  " * draw(st.integers(1, 3)) + lines[i]
        elif op == "dedent":
            lines[i] = lines[i].lstrip()
        elif op == "insert":
            at = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:at] + draw(st.sampled_from(SNIPPETS)) + lines[i][at:]
        elif op == "truncate":
            lines = lines[: i + 1]
            lines[-1] = lines[-1][: draw(st.integers(0, len(lines[-1])))]
        elif op == "replace" and ":" in lines[i]:
            key = lines[i].split(":", 1)[0]
            lines[i] = key + ": " + draw(st.sampled_from(SNIPPETS[17:]))
    return name, "\n".join(lines)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=mutated())
def test_mutated_spec_is_accepted_or_rejected_with_positions(case, tmp_path, monkeypatch, capsys) -> None:
    name, text = case
    # Keep the spec's folder so that relative `root: spec` data and `extends` still resolve.
    src_dir = (ROOT / name).parent
    monkeypatch.chdir(src_dir)
    spec = tmp_path / "mutated.yaml"
    spec.write_text(text, encoding="utf-8")
    code = main(["validate", str(spec)])
    cap = capsys.readouterr()
    out = cap.err + cap.out
    assert "Traceback" not in out
    assert code in (0, 2), out
    if code == 0:
        return
    n_lines = text.count("\n") + 1
    diags = [ln for ln in out.splitlines() if not ln.startswith("    ") and not re.fullmatch(r"\d+ errors?", ln)]
    assert diags, out
    for ln in diags:
        m = DIAG.match(ln)
        assert m, f"unpositioned diagnostic: {ln!r}"
        if m["file"] == str(spec):
            assert 1 <= int(m["line"]) <= n_lines + 1 and int(m["col"]) >= 1, ln
