"""Statistics for batchsafe bundles, on scipy and statsmodels.

Primitives (each returns a dict that carries its inputs and outputs; floats are finite
or None, degenerate inputs give a defined result with a ``note``):

- :mod:`.tests`: ``two_by_two``, ``wilson``, ``overlap``, ``binomial``, ``odds``,
  ``tost_two_proportions``, ``adjust``/``holm``;
- :mod:`.effects`: ``mean_ci``, ``paired_t``, ``tost_paired``, ``cohens_d``, ``pearson``,
  ``linregress``, ``cohen_kappa``;
- :mod:`.anova`: ``anova_one_way``, ``anova_two_way`` (eta-squared = SS_term / SS_total);
- :mod:`.power`: ``mde_two_proportions``.

Phase analyses over ScoredSample / FlipRow lists: :func:`compute_stats` (see
:mod:`.core` for the stats.json layout).
"""

from .anova import anova_one_way, anova_two_way
from .core import compute_stats
from .effects import cohen_kappa, cohens_d, linregress, mean_ci, paired_t, pearson, tost_paired
from .power import mde_two_proportions
from .tests import adjust, binomial, holm, odds, overlap, tost_two_proportions, two_by_two, wilson

__all__ = [
    "adjust",
    "anova_one_way",
    "anova_two_way",
    "binomial",
    "cohen_kappa",
    "cohens_d",
    "compute_stats",
    "holm",
    "linregress",
    "mde_two_proportions",
    "mean_ci",
    "odds",
    "overlap",
    "paired_t",
    "pearson",
    "tost_paired",
    "tost_two_proportions",
    "two_by_two",
    "wilson",
]
