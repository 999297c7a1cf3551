"""Minimum detectable effects for proportions (statsmodels power, Cohen's h).

The MDE is solved on Cohen's h scale with ``statsmodels.stats.power.NormalIndPower``
(two-sided z test) and converted to percentage points around a reference proportion
p0 by solving ``proportion_effectsize(p1, p0) = h`` for p1 (``scipy.optimize.brentq``).

TR138 section 13.1 prints ~3.5 pp for Phase 1 (n = 1,605): that is the ONE-sample
figure at p0 = 0.5 (``n2=None`` here: h = 2.80 / sqrt(1605) = 0.0699 -> 3.50 pp). Its
other rows (Phase 2 1,284 -> 5.3, Phase 3 1,485 -> 4.2, Phase 4 428 -> 7.5) match no
single standard method at the printed n (one-sample p0 = 0.5 gives 3.9, 3.6, 6.8;
two-sample equal n gives 5.5, 5.1, 9.5), so they are not reproduced.
"""

from __future__ import annotations

from typing import Any

from scipy.optimize import brentq
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import proportion_effectsize

from ._memo import memo
from ._num import num


def _p_from_h(h: float, p0: float) -> tuple[float, str]:
    """The proportion p1 with Cohen's h(p1, p0) = h, upwards when possible, else downwards."""
    top = float(proportion_effectsize(1.0, p0))
    if h <= top:
        if h == 0:
            return p0, "up"
        return brentq(lambda p: float(proportion_effectsize(p, p0)) - h, p0, 1.0, xtol=1e-14), "up"
    bottom = float(proportion_effectsize(0.0, p0))  # negative
    if -h >= bottom:
        return brentq(lambda p: float(proportion_effectsize(p, p0)) + h, 0.0, p0, xtol=1e-14), "down"
    return (1.0 if top >= -bottom else 0.0), "capped"


@memo
def mde_two_proportions(n1: int, n2: int | None = None, alpha: float = 0.05, power: float = 0.8,
                        p0: float = 0.5) -> dict[str, Any]:
    """Minimum detectable difference (percentage points) between two proportions.

    ``n1``, ``n2``: group sizes (``n2=None``: one-sample test of a proportion against p0,
    statsmodels' ``ratio=0``). ``p0``: the reference proportion the difference is measured
    from (default 0.5, where a given h is the largest difference in pp). The returned
    ``h`` is the detectable Cohen's h; ``mde_pp`` = 100 * |p1 - p0|; ``direction`` says
    whether p1 lies above p0 ("up"), below it ("down", when p0 is too close to 1), or
    could not be reached ("capped").
    n1 = 0 (or n2 = 0): MDE None with a note.
    """
    out: dict[str, Any] = {"n1": int(n1), "n2": None if n2 is None else int(n2), "alpha": alpha, "power": power,
                           "p0": p0, "test": "one-sample z" if n2 is None else "two-sample z",
                           "method": "statsmodels NormalIndPower, Cohen's h"}
    if n1 <= 0 or (n2 is not None and n2 <= 0):
        return {**out, "h": None, "mde_pp": None, "p1": None, "note": "empty group"}
    ratio = 0.0 if n2 is None else float(n2) / float(n1)
    h = float(NormalIndPower().solve_power(effect_size=None, nobs1=n1, alpha=alpha, power=power, ratio=ratio,
                                           alternative="two-sided"))
    p1, direction = _p_from_h(h, p0)
    out.update(h=num(h), p1=num(p1), mde_pp=num(100.0 * abs(p1 - p0)), direction=direction)
    if direction == "capped":
        out["note"] = "detectable h exceeds the range reachable from p0"
    return out

