"""The calibrated coupling test: its statistic against brute force, Holm by hand, and (slow) its error rates."""

from __future__ import annotations

import math

import numpy as np
import pytest

from effrank_fast.paper.experiments import calibration, coupling, runner


def _loss(rng: np.random.Generator, n: int = 800) -> np.ndarray:
    d = rng.exponential(0.01, n - 1)
    return np.exp(-np.concatenate([[0.0], np.cumsum(d)]))


def _window_sum(loss: np.ndarray, a: int, e: int) -> float:
    """Log-loss decrease over the sample steps a..e−1, term by term."""
    return float(sum(math.log(loss[i]) - math.log(loss[i + 1]) for i in range(a, e)))


def test_local_test_statistic_and_null_mean_against_brute_force():
    rng = np.random.default_rng(0)
    loss = _loss(rng)
    n = len(loss) - 1
    jumps, h, reach = [(5, 9), (300, 310), (780, 790)], 6, 24
    res = coupling.local_jump_test(loss, jumps, h, reach=reach, draws=40_000, seed=1)
    windows = [(max(a - h, 0), min(b + 1 + h, n)) for a, b in jumps]
    assert res.decrease == pytest.approx(sum(_window_sum(loss, a, e) for a, e in windows), rel=1e-10)
    # The null moves window j uniformly over {−B_j … B_j}, B_j = min(reach, room left, room right).
    rooms = [min(reach, a, n - e) for a, e in windows]
    assert rooms == [0, reach, 2]  # the first window touches step 0, the last ends 2 samples before the end
    exact = sum(
        np.mean([_window_sum(loss, a + s, e + s) for s in range(-b, b + 1)])
        for (a, e), b in zip(windows, rooms, strict=True)
    )
    assert res.null_mean == pytest.approx(exact, rel=2e-3)
    assert res.movable == 2 and res.jumps == 3
    assert res.excess == pytest.approx(res.decrease / res.null_mean)


def test_local_test_without_room_to_move_is_never_significant():
    loss = _loss(np.random.default_rng(1))
    res = coupling.local_jump_test(loss, [(100, 110)], 5, reach=0, draws=50)
    assert res.p == 1.0 and res.excess == pytest.approx(1.0)


def test_local_test_finds_drops_at_the_jumps_and_not_away_from_them():
    rng = np.random.default_rng(2)
    d = 0.01 * (1 + 0.2 * rng.standard_normal(2999))  # a steady decrease …
    at = [400, 1100, 1500, 2200]
    for a in at:
        d[a : a + 10] += 0.3  # … that drops where the rank jumps …
    loss = np.exp(-np.concatenate([[0.0], np.cumsum(d)]))
    assert coupling.local_jump_test(loss, [(a, a + 5) for a in at], 10).p < 0.01
    # … and jumps 200 samples later see nothing (one window alone cannot be significant: its shifts
    # by less than its own length still cover the drop).
    assert coupling.local_jump_test(loss, [(a + 200, a + 205) for a in at], 10).p > 0.1


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [({"loss": [1.0, 0.5]}, "loss"), ({"loss": [1.0, -1.0, 0.5]}, "loss"), ({"half_window": -1}, "half_window")],
)
def test_local_test_rejects_bad_input(kwargs, word):
    args = {"loss": [1.0, 0.9, 0.8, 0.7], "jumps": [(1, 1)], "half_window": 1, **kwargs}
    with pytest.raises(ValueError, match=word):
        coupling.local_jump_test(**args)


def test_holm_against_a_hand_computation():
    # Sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → running max 0.06.
    got = coupling.holm([0.01, 0.04, 0.03, math.nan, 0.005])
    assert got[:3] == pytest.approx([0.03, 0.06, 0.06]) and math.isnan(got[3]) and got[4] == pytest.approx(0.02)
    assert coupling.holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])  # capped at 1


def test_coupling_family_has_one_primary_and_adjusts_the_rest():
    st = {
        "local_jump_test": {"p": 0.01, "excess": 2.0},
        "local_jump_test_after": {"p": 0.02},
        "jump_window_share": {"p_circular": 0.03, "p_jitter": 0.5},
        "jump_window_share_after": {"p_circular": 0.04, "p_jitter": 0.6},
    }
    fam = runner.coupling_family({"0.01": st, "0.0001": st})
    assert fam["primary"]["eps"] == f"{coupling.PRIMARY_EPS:g}" and fam["primary"]["p"] == 0.01
    ex = fam["exploratory"]
    assert len(ex) == 11  # 2 ε × 6 (baseline, window) pairs, less the primary
    assert [r["p_holm"] for r in ex] == pytest.approx(coupling.holm([r["p"] for r in ex]))
    assert min(r["p_holm"] for r in ex) == pytest.approx(0.01 * 11)


# ---------------------------------------------------------------------------------------------- slow


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["uniform", "front", "front_rank"])
def test_false_positive_rate_on_independent_pairs(scenario):
    """200 independent pairs per scenario: the local test rejects at α = 0.05 in at most 8 % of them."""
    r = calibration.rejection_rate(scenario, pairs=200, seed=11)
    assert r["local"] <= 0.08, r
    if scenario != "uniform":
        assert r["circular"] > 0.15, r  # the circular baseline is the one these pairs were built to fool


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["uniform", "front"])
def test_power_on_coupled_pairs(scenario):
    """Loss drops 0–30 steps after each rank stair: the local test rejects in at least 80 % of 100 pairs."""
    r = calibration.rejection_rate(scenario, coupled=True, pairs=100, seed=12)
    assert r["local"] >= 0.8, r


# ---------------------------------------------------------------------------------------------- quantisation


def _spectra(rng, burst: bool, S: int = 400, K: int = 12, eps: float = 1e-2):
    """K eigenvalues crossing ε at staggered times: at a steady log-rate, or in one jump each."""
    t = np.arange(S) * 10.0
    cross = np.linspace(300, 3700, K)
    if burst:  # slow drift, then ×100 within one interval at the crossing time
        log = np.log(eps) + 1e-4 * (t[:, None] - cross[None, :]) + np.log(100.0) * (t[:, None] >= cross[None, :]) - 2.3
    else:  # one steady rate through ε
        log = np.log(eps) + 2e-3 * (t[:, None] - cross[None, :])
    log = log + 0.02 * rng.standard_normal(log.shape)
    lam = np.exp(log)
    return t, -np.sort(-lam, axis=1)


def test_crossing_control_separates_bursts_from_a_smooth_spectrum():
    from effrank_fast.paper.experiments import quantisation

    rng = np.random.default_rng(0)
    smooth = quantisation.crossing_control(*_spectra(rng, burst=False), 1e-2)
    burst = quantisation.crossing_control(*_spectra(rng, burst=True), 1e-2)
    assert smooth.crossings >= 10 and burst.crossings >= 10
    # ε is no special level for either (the burst carries each eigenvalue through the whole band) …
    assert 0.3 < smooth.median_percentile < 0.7 and smooth.p_sign > 0.05
    # … but only the bursts cross far faster than the eigenvalue moves around them.
    assert smooth.median_speedup < 3 and burst.median_speedup > 20
    # The sign test by hand: P(X >= k) for X ~ Binomial(m, 1/2).
    k = sum(q > 0.5 for q in smooth.percentiles)
    m = smooth.crossings
    assert smooth.p_sign == pytest.approx(sum(math.comb(m, j) for j in range(k, m + 1)) / 2**m)
    with pytest.raises(ValueError, match="steps"):
        quantisation.crossing_control([0, 2, 1], np.ones((3, 2)), 1e-2)
