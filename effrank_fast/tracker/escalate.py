"""Settling ε-counts whose certified interval is not a single point.

For τ known exactly (``relative`` None or "trace": the reported threshold ``tau`` itself, not an
end of the certificate's τ-range) one exact count per open threshold: the float64 inertia kernel
(Sylvester: #{λ > τ} = #positive pivots of LDLᵀ(M − τI)) when it is built for the device, else a
float64 ``eigvalsh``. For ``relative="max"`` τ = ε·λ_max depends on the unknown exact
λ_max ∈ [λ_lo, λ_hi]; the count is non-increasing in τ, so equal inertia counts at ε·λ_lo and
ε·λ_hi settle it, and otherwise (``sync="step"`` only) one eigvalsh does.

Host syncs: none with ``sync_ok=False`` (the inertia kernel's own fallback is disabled and an
unreliable factorisation leaves the count UNRESOLVED; without a kernel on CUDA nothing is
escalated). With ``sync_ok=True`` the inertia wrapper may read its reliability flag, and the
"max" case reads whether both ends agreed.
"""

from __future__ import annotations

import torch

from effrank_fast.ops import native
from effrank_fast.ops.inertia import inertia_count, inertia_ref
from effrank_fast.rank import formulas
from effrank_fast.tracker.result import TrackPath

__all__ = ["settle_counts"]


def settle_counts(
    gram: torch.Tensor,
    eps: torch.Tensor,
    relative: str | None,
    tau: torch.Tensor,
    tau_lo: torch.Tensor,
    tau_hi: torch.Tensor,
    counts: torch.Tensor,
    path: torch.Tensor,
    open_idx: list[int],
    sync_ok: bool,
    both_ends: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact counts for the thresholds ``open_idx`` (host list); returns updated (counts, path).

    ``tau`` [E]: the reported thresholds (counted at for ``relative`` None/"trace");
    ``tau_lo``, ``tau_hi`` [E]: the ends of the certificate's τ-range (ε·λ_lo and ε·λ_hi for "max",
    widened by the Gram's formation error when one is given), counted at both ends for "max" and
    with ``both_ends`` (a formation error: the count of M̂ at τ alone is not the count of M).
    With ``both_ends`` and not "max", disagreeing ends stay UNRESOLVED (no eigvalsh can decide).
    """
    if not open_idx:
        return counts, path
    has_native = native.kernel_missing_reason("inertia", gram.device) is None
    if not has_native and not (sync_ok or gram.device.type == "cpu"):
        return counts, path  # eigvalsh on CUDA would sync: leave them UNRESOLVED
    # Pinned + non_blocking: a pageable host→device copy would synchronise.
    pin = gram.device.type == "cuda"
    idx = torch.tensor(open_idx, dtype=torch.int64, pin_memory=pin).to(gram.device, non_blocking=True)
    n = len(open_idx)
    two = relative == "max" or both_ends
    if two:
        taus = torch.cat([tau_lo.index_select(0, idx), tau_hi.index_select(0, idx)])
    else:
        taus = tau.index_select(0, idx)
    if has_native:
        res = inertia_count(gram, taus, fallback=sync_ok, check=False)  # validated by update(); no read-back here
        exact, reliable = res.counts, res.reliable | res.fell_back
        code = torch.where(res.fell_back, int(TrackPath.EIGH), int(TrackPath.INERTIA))
    else:
        exact = inertia_ref(gram, taus)
        reliable = torch.ones_like(exact, dtype=torch.bool)
        code = torch.full_like(exact, int(TrackPath.EIGH))
    if two:
        settled = reliable[:n] & reliable[n:] & (exact[:n] == exact[n:])
        value, code = exact[:n], torch.maximum(code[:n], code[n:])
        if relative == "max" and not both_ends and sync_ok and not bool(settled.all()):  # a sync, only here
            lam = torch.linalg.eigvalsh(gram.double())
            full = formulas.eps_counts(lam, eps.index_select(0, idx) * lam[-1])
            value = torch.where(settled, value, full)
            code = torch.where(settled, code, int(TrackPath.EIGH))
            settled = torch.ones_like(settled)
    else:
        settled, value = reliable, exact
    counts = counts.index_copy(0, idx, torch.where(settled, value, counts.index_select(0, idx)))
    path = path.index_copy(0, idx, torch.where(settled, code, path.index_select(0, idx)))
    return counts, path
