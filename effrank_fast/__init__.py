"""effrank_fast: effective rank of hidden-layer features, cheap enough for every training step.

Measures of the Gram (mass) matrix M = Φᵀ diag(w) Φ of a layer's features Φ [N, d]:
ε-rank, entropy effective rank, stable rank, participation ratio and the spectrum.

The package, by responsibility:

- :mod:`effrank_fast.rank`: the public measures, their certificate and the float64 reference;
- :mod:`effrank_fast.ops`: one package per operator (Gram, inertia, Jacobi, fused linear+activation
  Gram), each with a pure-PyTorch reference beside its fast paths; shared numerics and validation;
- :mod:`effrank_fast.tracker`: the warm-started spectrum tracker;
- :mod:`effrank_fast.monitor`: the every-step :class:`RankMonitor`;
- :mod:`effrank_fast.paper`: the staircase paper's analysis, SFLI, the demo and the experiments.

Importing this package never initialises CUDA and works without the compiled extension or
Triton (``python -m effrank_fast.info`` says what is available).
"""

from effrank_fast import _aliases
from effrank_fast._version import __version__
from effrank_fast.ops import registry  # noqa: F401  (schemas first, then the native extension)

_aliases.install()

from effrank_fast import quadrature  # noqa: E402
from effrank_fast.monitor import RankMonitor  # noqa: E402
from effrank_fast.ops.backends import BackendUnavailableError  # noqa: E402
from effrank_fast.ops.inertia import InertiaFallbackWarning  # noqa: E402
from effrank_fast.paper import staircase  # noqa: E402
from effrank_fast.rank import (  # noqa: E402
    EpsRankResult,
    Measures,
    eigenvalues,
    entropy_rank,
    eps_rank,
    eps_rank_result,
    feature_matrix,
    formulas,
    gram,
    measures,
    participation_ratio,
    reference,
    stable_rank,
)
from effrank_fast.tracker import SpectrumTracker, TrackPath, TrackResult  # noqa: E402

spectral = formulas  # the 0.1 name of the λ-formulas module, as an attribute (ef.spectral)

__all__ = [
    "BackendUnavailableError",
    "EpsRankResult",
    "InertiaFallbackWarning",
    "Measures",
    "RankMonitor",
    "SpectrumTracker",
    "TrackPath",
    "TrackResult",
    "__version__",
    "eigenvalues",
    "entropy_rank",
    "eps_rank",
    "eps_rank_result",
    "feature_matrix",
    "formulas",
    "gram",
    "measures",
    "participation_ratio",
    "quadrature",
    "reference",
    "stable_rank",
    "staircase",
]
