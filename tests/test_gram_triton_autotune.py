"""The opt-in autotuner of the Triton Gram (EFFRANK_FAST_AUTOTUNE=1), under the interpreter on CPU."""

from __future__ import annotations

import os

import pytest
import torch

pytest.importorskip("triton")

from effrank_fast.ops.gram import autotune  # noqa: E402
from effrank_fast.ops.gram import triton as gt  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"
if DEV == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("Triton needs CUDA or TRITON_INTERPRET=1", allow_module_level=True)

from gram_contract import (  # noqa: E402
    FLOOR,
    check_contract,
    features64,
    relerr,
    simt32,
)


def _spy_configs(monkeypatch):
    """The SyrkConfig of every launch plan from now on."""
    seen = []
    real = gt._plan
    monkeypatch.setattr(gt, "_plan", lambda cfg, *a: seen.append(cfg) or real(cfg, *a))
    return seen


def test_autotune_is_opt_in_and_picks_the_default_under_the_interpreter(monkeypatch):
    monkeypatch.setattr(autotune, "CHOICES", {})
    phi = torch.randn(300, 70, device=DEV, dtype=torch.bfloat16)
    seen = _spy_configs(monkeypatch)
    monkeypatch.delenv(autotune.ENV_AUTOTUNE, raising=False)
    gt.gram_triton(phi)
    assert seen[-1] == gt._pick_config("native16", 70) and not autotune.CHOICES  # fixed config, no tuning
    monkeypatch.setenv(autotune.ENV_AUTOTUNE, "1")
    m = gt.gram_triton(phi)
    if DEV == "cpu":  # no timing in the interpreter: every candidate ties, the first (default) wins
        assert seen[-1] == gt.HOPPER_CANDIDATES["native16"][0]
        assert list(autotune.CHOICES.values()) == [gt.HOPPER_CANDIDATES["native16"][0]]
    check_contract(phi, None, False, m)
    from torch._subclasses.fake_tensor import FakeTensorMode

    assert autotune.can_time(phi)
    with FakeTensorMode():  # torch.compile traces the op bodies with fake tensors: nothing to time
        assert not autotune.can_time(torch.zeros(2, device=DEV))


def test_autotune_times_candidates_once_per_key_into_scratch(monkeypatch):
    """With a scripted timer: the fastest candidate wins, a failing one is skipped, the choice is
    cached per key, and the timing runs never touch the caller's streaming ``out``."""
    monkeypatch.setattr(autotune, "CHOICES", {})
    cands = gt.HOPPER_CANDIDATES["native16"]
    script = iter([3.0, RuntimeError("does not compile"), 2.0, 1.0, 4.0])
    timed = []

    def fake_bench(fn):
        fn()  # the real launch of this candidate, into the scratch output
        timed.append(1)
        t = next(script)
        if isinstance(t, Exception):
            raise t
        return t

    monkeypatch.setattr(autotune, "bench_ms", fake_bench)
    seen = _spy_configs(monkeypatch)
    phi = torch.randn(300, 70, device=DEV, dtype=torch.bfloat16)  # window 128: the BK = 128 configs qualify
    w = None  # one launch per call (uniform weights would add a guarded, untuned split-mode launch)
    out = gt.gram_triton(phi[:100])  # a running sum, formed before tuning is switched on
    monkeypatch.setenv(autotune.ENV_AUTOTUNE, "1")
    gt.gram_triton(phi, out=out)
    assert len(timed) == len(cands) and seen[-1] == cands[3]
    assert list(autotune.CHOICES.values()) == [cands[3]]
    assert autotune.bucket(290) == autotune.bucket(300) == 512
    gt.gram_triton(phi[:290])  # same key: no new timing
    assert len(timed) == len(cands) and seen[-1] == cands[3]
    x0, x1 = features64(phi[:100], w, False), features64(phi, w, False)
    ref = x0.T @ x0 + x1.T @ x1  # had the timing runs used ``out``, it would hold 5 more Grams
    tol = 2 * relerr(simt32(phi, w, False), x1.T @ x1) + 2 * relerr(simt32(phi[:100], w, False), x0.T @ x0)
    assert relerr(out, ref) <= tol + 3 * FLOOR
