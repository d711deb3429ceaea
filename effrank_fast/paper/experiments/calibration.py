"""False-positive rate and power of the coupling tests on synthetic rank–loss pairs.

``python -m effrank_fast.paper.experiments.calibration --pairs 200`` prints the calibration table of
docs/staircase.md: for each scenario, the share of pairs in which the primary local jitter test
(:func:`.coupling.local_jump_test`) and the older circular and jitter baselines
(:func:`.stats.jump_window_share`) reject at α = 0.05, with the Monte Carlo standard error
√(r(1 − r)/pairs). Jumps come from
:func:`effrank_fast.paper.staircase.detect`, as in a real run.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence

import numpy as np

from effrank_fast.paper import staircase
from effrank_fast.paper.experiments.coupling import local_jump_test
from effrank_fast.paper.experiments.stats import jump_window_share

__all__ = ["SCENARIOS", "pair_pvalues", "rejection_rate", "synthetic_pair"]

SCENARIOS = {
    "uniform": "rank stairs and loss drops at uniform times",
    "front": "rank stairs and loss drops front-loaded (exponential times, mean 800 steps)",
    "front_rank": "rank stairs front-loaded, smooth loss (no drops)",
}


def _event_times(rng: np.random.Generator, k: int, T: int, front: bool) -> np.ndarray:
    t = rng.exponential(800.0, k) if front else rng.uniform(60, T - 60, k)
    return np.sort(t[t < T - 60].astype(np.int64))


def synthetic_pair(
    rng: np.random.Generator, scenario: str, *, coupled: bool = False, T: int = 5001
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps [T], ε-rank [T], loss [T]) of a synthetic run.

    Rank: 3 plus 5–10 unit stairs at random times (at least 60 steps apart), ±1 flicker at 15 % of
    the steps. Loss: exp of a smooth decay −2(1 − e^{−t/1500}), minus sigmoid drops (log size
    U(0.3, 1), width 8 steps) at 5–10 independent times (``front_rank``: none), plus 1 % noise.
    ``coupled``: the drops sit at the rank's stairs instead, 0–30 steps after each.
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario must be one of {tuple(SCENARIOS)}, got {scenario!r}")
    t = np.arange(T)
    jt = _event_times(rng, int(rng.integers(5, 11)), T, scenario != "uniform")
    if len(jt):
        jt = jt[np.concatenate([[True], np.diff(jt) > 60])]
    rank = 3.0 + (t[:, None] >= jt[None, :]).sum(axis=1)
    rank += (rng.random(T) < 0.15) * rng.choice([-1.0, 1.0], T)
    logl = -2.0 * (1 - np.exp(-t / 1500.0))
    if coupled:
        drops = jt + rng.integers(0, 31, len(jt))
    elif scenario == "front_rank":
        drops = np.array([], dtype=np.int64)
    else:
        drops = _event_times(rng, int(rng.integers(5, 11)), T, scenario == "front")
    for s in drops:
        logl -= rng.uniform(0.3, 1.0) / (1 + np.exp(-(t - s) / 8.0))
    logl += 0.01 * rng.standard_normal(T)
    return t, rank, np.exp(logl)


def pair_pvalues(
    steps: np.ndarray, rank: np.ndarray, loss: np.ndarray, *, draws: int = 1000, jitter: bool = False
) -> dict[str, float]:
    """p of the primary local test and of the older circular baseline, jumps from staircase.detect."""
    sc = staircase.detect(steps, rank, loss)
    ups = [
        (int(np.searchsorted(steps, j.start_step)), int(np.searchsorted(steps, j.end_step))) for j in sc.jumps if j.up
    ]
    h = int(sc.params["window"])
    if not ups:
        return {"local": 1.0, "circular": 1.0, "jitter": 1.0}
    old = jump_window_share(loss, ups, h, draws=draws if jitter else 1)  # the jitter draws are the slow part
    out = {"local": local_jump_test(loss, ups, h, draws=draws).p, "circular": old.p_circular}
    return {**out, "jitter": old.p_jitter} if jitter else out


def rejection_rate(
    scenario: str,
    *,
    coupled: bool = False,
    pairs: int = 200,
    alpha: float = 0.05,
    seed: int = 0,
    jitter: bool = False,
) -> dict[str, float]:
    """Share of ``pairs`` synthetic pairs with p < ``alpha``, per test, and its Monte Carlo error."""
    rng = np.random.default_rng(seed)
    ps = [pair_pvalues(*synthetic_pair(rng, scenario, coupled=coupled), jitter=jitter) for _ in range(pairs)]
    out: dict[str, float] = {"pairs": pairs}
    for key in ("local", "circular", "jitter") if jitter else ("local", "circular"):
        rate = float(np.mean([p[key] < alpha for p in ps]))
        out[key] = rate
        out[f"{key}_se"] = math.sqrt(max(rate * (1 - rate), 1e-12) / pairs)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Rejection rates of the coupling tests on synthetic pairs.")
    ap.add_argument("--pairs", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    print("| pair | scenario | P(p_local < 0.05) | P(p_circular < 0.05) | P(p_jitter < 0.05) |")
    print("|---|---|---|---|---|")
    for coupled in (False, True):
        for name, text in SCENARIOS.items():
            r = rejection_rate(name, coupled=coupled, pairs=args.pairs, seed=args.seed, jitter=True)
            kind = "coupled" if coupled else "independent"
            print(
                f"| {kind} | {text} | {r['local']:.3f} ± {r['local_se']:.3f} | "
                f"{r['circular']:.3f} ± {r['circular_se']:.3f} | {r['jitter']:.3f} ± {r['jitter_se']:.3f} |"
            )


if __name__ == "__main__":
    main()
