"""The public rank measures of a feature matrix Φ [N, d] (or a given Gram M [d, d]).

Where each piece lives:

- :mod:`.api`: ``gram``, ``eigenvalues``, ``eps_rank``, ``eps_rank_result`` (the entry points);
- :mod:`.prepare`: features → the matrix whose spectrum is measured, with its error bound;
- :mod:`.certified`: the ε-count with its certificate, and promotion to a float64 Gram;
- :mod:`.spectrum`: the σ-based and spectrum-summary measures (entropy, stable rank, PR, top-k);
- :mod:`.formulas`: every measure as a function of a spectrum λ, and the noise-floor rule;
- :mod:`.conventions` (presets in :mod:`.presets`): the peers' conventions;
- :mod:`.reference`: the float64 oracle the tests compare against.

The math and the guarantees are in ``docs/measures.md`` and ``docs/certificate.md``.
"""

from effrank_fast.rank import formulas, reference  # noqa: E402  (after api: reference uses Measures)
from effrank_fast.rank.api import (
    EpsRankResult,
    Measures,
    eigenvalues,
    entropy_rank,
    eps_rank,
    eps_rank_result,
    gram,
    measures,
    measures_from_eigenvalues,
    participation_ratio,
    stable_rank,
)
from effrank_fast.rank.prepare import feature_matrix

__all__ = [
    "EpsRankResult",
    "Measures",
    "eigenvalues",
    "entropy_rank",
    "eps_rank",
    "eps_rank_result",
    "feature_matrix",
    "formulas",
    "gram",
    "measures",
    "measures_from_eigenvalues",
    "participation_ratio",
    "reference",
    "stable_rank",
]
