"""effrank_fast: effective rank of hidden-layer features, cheap enough for every training step.

Measures of the Gram (mass) matrix M = Φᵀ diag(w) Φ of a layer's features Φ [N, d]:
ε-rank, entropy effective rank, stable rank, participation ratio and the spectrum. See
:mod:`effrank_fast.measures` for the conventions and :mod:`effrank_fast.reference` for the
float64 oracle. Importing this package never initialises CUDA and works without the compiled
extension or Triton (``python -m effrank_fast.info`` says what is available).
"""

from effrank_fast import (
    _ops,  # noqa: F401  (schemas first, then the native extension)
    quadrature,
    reference,
    spectral,
    staircase,
)
from effrank_fast._backends import BackendUnavailableError
from effrank_fast.measures import (
    EpsRankResult,
    Measures,
    eigenvalues,
    entropy_rank,
    eps_rank,
    eps_rank_result,
    gram,
    measures,
    participation_ratio,
    stable_rank,
)
from effrank_fast.monitor import RankMonitor
from effrank_fast.ops.inertia import InertiaFallbackWarning
from effrank_fast.ops.tracker import SpectrumTracker, TrackPath, TrackResult

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError",
    "EpsRankResult",
    "InertiaFallbackWarning",
    "Measures",
    "SpectrumTracker",
    "TrackPath",
    "TrackResult",
    "RankMonitor",
    "__version__",
    "eigenvalues",
    "entropy_rank",
    "eps_rank",
    "eps_rank_result",
    "gram",
    "measures",
    "participation_ratio",
    "quadrature",
    "reference",
    "spectral",
    "stable_rank",
    "staircase",
]
