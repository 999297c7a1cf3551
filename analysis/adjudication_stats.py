"""Statistics of an adjudication round: inter-rater kappa, majority labels, confirmed flips, report.

Kappas come from ``statsmodels.stats.inter_rater`` (``cohens_kappa`` on the confusion
table of two raters, ``fleiss_kappa`` on the ``aggregate_raters`` table of three or more),
always on the items that *every* compared rater labelled: both statistics assume each
item is rated by the same raters, and silently mixing in half-rated items would change
what the number means. A kappa is None (with a note) where it is undefined: no common
items, or every rating in one category (the formula is 0/0 there, however perfect the
agreement looks).

The human verdict on an item is its majority label: a strict plurality among its raters
that is not "unclear"; a tie or an "unclear" plurality leaves the item unresolved. A
decided item whose verdict differs from the baseline's scorer label is a *confirmed*
flip; one whose verdict equals it is a *false* flip (the scorer, not the model, changed),
which is the TR138 audit's 49 -> 44 correction done by people instead of a fixed scorer.
"""

from __future__ import annotations

import itertools
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from .adjudication_models import (
    AdjudicationSummary,
    Binomial,
    DirectionAudit,
    FlipAudit,
    HeuristicAgreement,
    KappaBlock,
    LabelRecord,
    RaterCount,
)
from .records import UNSAFE_DIRECTIONS, FlipRow
from .stats._num import num, rate
from .stats.flips import SAFE_DIRECTIONS
from .stats.tests import binomial

UNCLEAR = "unclear"


def _by_item(records: Iterable[LabelRecord]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = defaultdict(dict)
    for r in records:
        out[r.item][r.rater] = r.human_label
    return out


def _observed(rows: Sequence[Sequence[str]]) -> float | None:
    """Share of agreeing pairs of ratings within items (for two raters: plain percent agreement)."""
    agree = total = 0
    for labels in rows:
        for a, b in itertools.combinations(labels, 2):
            total += 1
            agree += a == b
    return rate(agree, total)


def kappa_block(records: Iterable[LabelRecord], raters: Sequence[str]) -> KappaBlock:
    """Cohen's (two raters) or Fleiss' (three or more) kappa of ``raters`` on the items all of them labelled."""
    from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

    from batchsafe.analysis.stats.effects import cohen_kappa

    raters = sorted(raters)
    if len(raters) < 2:
        raise ValueError("a kappa needs at least two raters")
    method = "cohen" if len(raters) == 2 else "fleiss"
    by_item = _by_item(records)
    items = sorted(i for i, labs in by_item.items() if all(r in labs for r in raters))
    rows = [[by_item[i][r] for r in raters] for i in items]
    cats = sorted({lab for row in rows for lab in row})
    base = {"method": method, "raters": raters, "n": len(items), "items": items, "categories": cats,
            "observed_agreement": _observed(rows)}
    if not items:
        return KappaBlock(**base, table=[], kappa=None, note="no item was labelled by all of these raters")
    index = {c: k for k, c in enumerate(cats)}
    if method == "cohen":
        table = np.zeros((len(cats), len(cats)), dtype=int)
        for a, b in rows:
            table[index[a], index[b]] += 1
    else:
        table, _ = aggregate_raters(np.array([[index[x] for x in row] for row in rows]), n_cat=len(cats))
    block = {**base, "table": table.astype(int).tolist()}
    if len(cats) == 1:  # the degenerate rule of stats.effects.cohen_kappa, applied to Fleiss' kappa too
        return KappaBlock(**block, kappa=None, note=f"undefined: every rating is {cats[0]!r} (kappa is 0/0)")
    with warnings.catch_warnings():  # statsmodels warns on 0/0 variances; num() turns those into None
        warnings.simplefilter("ignore", RuntimeWarning)
        if method == "cohen":
            k = cohen_kappa(table=table)
            return KappaBlock(**block, kappa=k["kappa"], ci_low=k.get("ci_low"), ci_high=k.get("ci_high"))
        return KappaBlock(**block, kappa=num(fleiss_kappa(table, method="fleiss")))


def majority(labels: Iterable[str]) -> str | None:
    """The strict plurality label, None on a tie or when it is "unclear"."""
    counts = Counter(labels).most_common()
    if not counts or (len(counts) > 1 and counts[0][1] == counts[1][1]) or counts[0][0] == UNCLEAR:
        return None
    return counts[0][0]


def summarize(parent: str, records: Sequence[LabelRecord], flips: Sequence[FlipRow], *,
              alpha: float = 0.05) -> AdjudicationSummary:
    """The adjudication summary of ``records`` against the parent's flip rows (only flipped rows count)."""
    candidates = {f.sample: f for f in flips if f.flipped}
    by_item = _by_item(records)
    raters = sorted({r.rater for r in records})
    per_rater = {}
    for rater in raters:
        mine = Counter(r.human_label for r in records if r.rater == rater)
        per_rater[rater] = RaterCount(labels=sum(mine.values()), by_label=dict(sorted(mine.items())))
    agreement = kappa_block(records, raters) if len(raters) >= 2 else None
    pairwise = [kappa_block(records, pair) for pair in itertools.combinations(raters, 2)] if len(raters) >= 3 else []

    heur_table: dict[str, Counter[str]] = defaultdict(Counter)
    dirs: dict[str, Counter[str]] = defaultdict(Counter)
    for item, labs in by_item.items():
        row = candidates[item]
        verdict = majority(labs.values())
        d = dirs[row.direction]
        d["labelled"] += 1
        if verdict is None:
            d["unresolved"] += 1
            continue
        heur_table[row.label][verdict] += 1
        d["confirmed" if verdict != row.baseline_label else "false_flips"] += 1
    decided = sum(sum(c.values()) for c in heur_table.values())
    agree = sum(c[h] for h, c in heur_table.items())
    total = Counter()
    for c in dirs.values():
        total.update(c)
    unsafe = sum(dirs[d]["confirmed"] for d in UNSAFE_DIRECTIONS if d in dirs)
    safe = sum(dirs[d]["confirmed"] for d in SAFE_DIRECTIONS if d in dirs)
    b = binomial(unsafe, unsafe + safe, 0.5, alpha)
    audit = FlipAudit(
        candidates=len(candidates), labelled=len(by_item), confirmed=total["confirmed"],
        false_flips=total["false_flips"], unresolved=total["unresolved"], unlabelled=len(candidates) - len(by_item),
        confirmed_unsafe=unsafe, confirmed_safe=safe,
        unsafe_test=Binomial(k=b["k"], n=b["n"], share=b["share"], p=b["p"], ci_low=b["wilson"]["lo"],
                             ci_high=b["wilson"]["hi"]),
        by_direction={d: DirectionAudit(labelled=c["labelled"], confirmed=c["confirmed"],
                                        false_flips=c["false_flips"], unresolved=c["unresolved"])
                      for d, c in sorted(dirs.items())})
    return AdjudicationSummary(
        parent=parent, labels=len(records), labelled_items=len(by_item), raters=raters, per_rater=per_rater,
        multi_rated_items=sum(len(labs) >= 2 for labs in by_item.values()), agreement=agreement, pairwise=pairwise,
        heuristic=HeuristicAgreement(n=decided, agree=agree, rate=rate(agree, decided),
                                     table={h: dict(sorted(c.items())) for h, c in sorted(heur_table.items())}),
        audit=audit)


# --- report -------------------------------------------------------------------------------


def _f(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _md(text: str) -> str:
    # Rater ids and labels are untrusted text: keep them from breaking (or adding) table cells.
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("`", "'")


def kappa_line(k: KappaBlock) -> str:
    """One line: method, raters, n, kappa with its interval, raw agreement (and the note)."""
    name = "Cohen's kappa" if k.method == "cohen" else "Fleiss' kappa"
    ci = f" [{_f(k.ci_low)}, {_f(k.ci_high)}]" if k.ci_low is not None and k.ci_high is not None else ""
    note = f" ({k.note})" if k.note else ""
    return (f"{name} of {', '.join(_md(r) for r in k.raters)} on {k.n} common items: {_f(k.kappa)}{ci}, "
            f"raw agreement {_pct(k.observed_agreement)}{note}")


def _table(head: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def render_report(s: AdjudicationSummary) -> str:
    """``adjudication/report.md``: counts, agreement, and the audited flips (pure function of the summary)."""
    a = s.audit
    out = ["# Adjudication", "", f"Parent bundle: `{s.parent}`", "",
           (f"{a.candidates} flip candidates; {a.labelled} labelled by {len(s.raters)} rater(s) ({s.labels} labels, "
            f"{s.multi_rated_items} items labelled by two or more raters); {a.unlabelled} not labelled."), "",
           "## Audit", "",
           (f"**{a.labelled} labelled candidates -> {a.confirmed} confirmed flips** ({a.false_flips} false flips, "
            f"{a.unresolved} unresolved). A flip is confirmed when the human majority label differs from the "
            "baseline's scorer label, false when it equals it; ties and \"unclear\" majorities are unresolved."), "",
           (f"Confirmed unsafe-direction flips: {a.confirmed_unsafe} of {a.unsafe_test.n} directional "
            f"({_pct(a.unsafe_test.share)}, Wilson [{_pct(a.unsafe_test.ci_low)}, {_pct(a.unsafe_test.ci_high)}], "
            f"binomial p = {_f(a.unsafe_test.p, 4)})."), ""]
    out += _table(["direction", "labelled", "confirmed", "false flips", "unresolved"],
                  ([d, str(x.labelled), str(x.confirmed), str(x.false_flips), str(x.unresolved)]
                   for d, x in s.audit.by_direction.items()))
    out += ["", "## Inter-rater agreement", ""]
    if s.agreement is None:
        out.append("One rater: no inter-rater agreement (the referee's check needs two or more raters).")
    else:
        out.append(kappa_line(s.agreement))
        out += [f"- {kappa_line(k)}" for k in s.pairwise]
    out += ["", "## Raters", ""]
    out += _table(["rater", "labels", "by label"],
                  ([_md(r), str(c.labels), ", ".join(f"{_md(k)} {v}" for k, v in c.by_label.items())]
                   for r, c in s.per_rater.items()))
    h = s.heuristic
    out += ["", "## Human majority vs scorer", "",
            f"{h.agree} of {h.n} decided items agree with the scorer's label ({_pct(h.rate)}).", ""]
    out += _table(["scorer label", "human majority", "items"],
                  ([_md(sl), _md(hl), str(n)] for sl, row in h.table.items() for hl, n in row.items()))
    return "\n".join(out) + "\n"


def summary_counts(s: AdjudicationSummary) -> Mapping[str, int]:
    """The audit's headline counts (for CLI output and quick checks)."""
    a = s.audit
    return {"candidates": a.candidates, "labelled": a.labelled, "confirmed": a.confirmed,
            "false_flips": a.false_flips, "unresolved": a.unresolved}
