"""Judge-vs-heuristic agreement: send rubric prompts through any engine, compare labels.

The LLM judge is a second opinion, not the primary label source (as in TR138 §15): each
refusal-scored sample's output is wrapped in the refusal rubric, sent through an Engine
(the same interface the runtime drives, so any registered engine can judge), parsed with
``llm_judge@1.0`` and compared with the heuristic scorer's label. Cohen's kappa comes from
statsmodels (via ``analysis.stats.effects.cohen_kappa``, the one kappa: None when every label is the same).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from batchsafe.analysis.scorers import build_judge_request, parse_judge_reply, score
from batchsafe.compiler.plan import Plan
from batchsafe.runtime.engine import Engine, GenRequest

JUDGE_REF = "llm_judge@1.0"


def judge_agreement(plan: Plan, outputs: Mapping[str, Mapping[str, Any]], engine: Engine, *,
                    max_tokens: int = 8, batch: int = 1, limit: int | None = None) -> dict[str, Any]:
    """Judge every refusal-scored sample with ``engine``; agreement and kappa vs the heuristic.

    ``outputs``: sample id -> output record (``text``). ``batch``: requests per engine call
    (sent as one prompt-list group when > 1). Unparsed judge replies are counted and
    excluded from kappa. Returns counts, agreement, kappa and one row per judged sample.
    """
    prompts = {p.id: p for p in plan.prompts}
    todo = []
    for s in plan.samples:
        p = prompts[s.prompt]
        if s.id in outputs and p.scorer.startswith("refusal@"):
            todo.append((s, p))
    todo = todo[:limit] if limit is not None else todo
    rows: list[dict[str, Any]] = []
    for start in range(0, len(todo), max(1, batch)):
        chunk = todo[start:start + max(1, batch)]
        requests = []
        for s, p in chunk:
            user = next((m.content for m in reversed(p.messages) if m.role == "user"), None)
            msgs = build_judge_request(outputs[s.id]["text"], p.meta, "refusal", prompt=user)
            requests.append(GenRequest(key=f"judge:{s.id}", messages=tuple((m["role"], m["content"]) for m in msgs),
                                       max_tokens=max_tokens))
        results = engine.run_group(requests, "prompt_list" if len(requests) > 1 else "sequential")
        for (s, p), res in zip(chunk, results, strict=True):
            judge = parse_judge_reply(res.text, "refusal")
            heuristic = score(p.scorer, outputs[s.id]["text"], p.meta)
            rows.append({"sample": s.id, "heuristic": heuristic.label, "judge": judge.label, "reply": res.text[:80]})
    parsed = [r for r in rows if r["judge"] != "unparsed"]
    agree = sum(r["judge"] == r["heuristic"] for r in parsed)
    kappa = None
    if parsed:
        from batchsafe.analysis.stats.effects import cohen_kappa

        kappa = cohen_kappa(a=[r["heuristic"] for r in parsed], b=[r["judge"] for r in parsed])["kappa"]
    return {
        "judge": JUDGE_REF,
        "engine": type(engine).__name__,
        "judged": len(rows),
        "unparsed": len(rows) - len(parsed),
        "agreement": agree / len(parsed) if parsed else None,
        "kappa": kappa,
        "rows": rows,
    }
