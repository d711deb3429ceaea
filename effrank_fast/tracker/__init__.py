"""Warm-started truncated eigen-decomposition of a drifting Gram matrix, every training step.

:class:`SpectrumTracker` keeps the top-k Ritz pairs of M_t from one step to the next (one
Rayleigh–Ritz on last step's basis, a subspace iteration when the residuals ask for it), certifies
an interval for each ε-rank from the Ritz values, residuals and the complement bound, settles
open intervals with the exact inertia count, and estimates the entropy rank by stochastic
Lanczos quadrature on the deflated remainder. The math and the host-sync design:
docs/tracker.md; the files: README.md in this folder.
"""

from effrank_fast.tracker.certify import Certificate, certify, count_bounds
from effrank_fast.tracker.result import TrackPath, TrackResult
from effrank_fast.tracker.slq import entropy_rank_slq
from effrank_fast.tracker.subspace import Ritz, orthonormalize, rayleigh_ritz
from effrank_fast.tracker.tracker import SpectrumTracker

__all__ = [
    "Certificate",
    "Ritz",
    "SpectrumTracker",
    "TrackPath",
    "TrackResult",
    "certify",
    "count_bounds",
    "entropy_rank_slq",
    "orthonormalize",
    "rayleigh_ritz",
]
