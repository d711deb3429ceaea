"""Feature axes and sample masks, in the functional API and the monitor; the probe's inputs.

Expected values come from float64 ``eigvalsh`` on matrices built here by hand (permute, boolean
selection), never from the package's own code.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import effrank_fast as ef
from effrank_fast import RankMonitor
from effrank_fast.monitor import Features, Probe

EPS = [1e-2, 1e-4]


def _ranks(phi: torch.Tensor) -> list[int]:
    phi = phi.double()
    lam = torch.linalg.eigvalsh(phi.T @ phi / phi.shape[0])
    return [int((lam > e).sum()) for e in EPS]


def _row_ranks(row) -> list[int]:
    return [row[f"eps_rank@{e:g}"] for e in EPS]


def test_feature_matrix_axes_and_masks():
    x = torch.randn(4, 6, 5, 3, dtype=torch.float64)  # [B, C, H, W]
    assert torch.equal(ef.feature_matrix(x, axis="channels"), x.permute(0, 2, 3, 1).reshape(-1, 6))
    assert torch.equal(ef.feature_matrix(x, axis=1), ef.feature_matrix(x, axis="channels"))
    seq = torch.randn(3, 7, 4)  # [B, T, d]
    mask = torch.rand(3, 7) > 0.4
    assert torch.equal(ef.feature_matrix(seq, axis="last", mask=mask), seq[mask])
    assert torch.equal(ef.feature_matrix(seq, axis=-1, mask=mask[:, 0]), seq[mask[:, 0]].reshape(-1, 4))
    with pytest.raises(ValueError, match="axis is required"):
        ef.feature_matrix(x)
    with pytest.raises(ValueError, match="does not fit"):
        ef.feature_matrix(seq, axis="last", mask=mask[:, :5])
    with pytest.raises(TypeError, match="bool or integer"):
        ef.feature_matrix(seq, axis="last", mask=mask.float())
    with pytest.raises(ValueError, match="feature_matrix"):  # the refusal names the way out
        ef.eps_rank(x, 1e-2)


class Tokens(nn.Module):
    """A toy sequence model: embedding → Linear → GELU → Linear, with an attention-mask keyword."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 12)
        self.up = nn.Linear(12, 24)
        self.act = nn.GELU()
        self.down = nn.Linear(24, 5)

    def forward(self, input_ids, attention_mask=None):
        return self.down(self.act(self.up(self.emb(input_ids))))


def _tokens():
    torch.manual_seed(0)
    ids = torch.randint(0, 20, (4, 16))
    mask = torch.zeros(4, 16, dtype=torch.long)
    mask[:, :2] = 1  # 8 of 64 tokens are real: fewer than d = 24
    return Tokens().double(), ids, mask


@pytest.mark.parametrize("source", ["attention_mask", 1, "callable"])
def test_mask_sources_drop_padding(source):
    model, ids, mask = _tokens()
    spec = (lambda args, kwargs: kwargs["attention_mask"]) if source == "callable" else source
    with RankMonitor(model, ["act"], EPS, features=Features(mask=spec)) as mon:
        if source == 1:
            model(ids, mask).sum().backward()
        else:
            model(ids, attention_mask=mask).sum().backward()
        mon.step()
    with torch.no_grad():
        h = model.act(model.up(model.emb(ids)))
    row = mon.history[0]
    assert _row_ranks(row) == _ranks(h[mask.bool()])
    assert _row_ranks(row)[1] <= 8 < _ranks(h.reshape(-1, 24))[1]  # padding would have counted


def test_keyword_probe_with_mask_and_weights_and_dtype_change():
    model, ids, mask = _tokens()
    w = torch.tensor([1.0, 2.0, 0.5, 1.5], dtype=torch.float64)
    probe = Probe({"input_ids": ids, "attention_mask": mask}, weights=w)
    with RankMonitor(model.float(), ["act"], EPS, probe=probe, features=Features(mask="attention_mask")) as mon:
        mon.step()
        model.double()  # the probe follows the model's dtype mid-run
        mon.step()
    with torch.no_grad():
        h = model.act(model.up(model.emb(ids)))
    rows_w = w.reshape(4, 1).expand(4, 16)[mask.bool()]
    phi = h[mask.bool()]
    lam = torch.linalg.eigvalsh(phi.T @ (rows_w[:, None] * phi))  # mode "integral": Σ w φφᵀ
    expected = [int((lam > e).sum()) for e in EPS]
    rows = mon.history
    assert not rows[1].get("error") and _row_ranks(rows[1]) == expected
    assert rows[1]["lambda_max"] == pytest.approx(float(lam[-1]), rel=1e-9)


class Opaque(nn.Module):
    def forward(self, x):
        return x.reshape(x.shape[0], 3, 2, 2).sin()  # 4-D, and nothing says where the features lie


def test_axis_explicit_and_undecidable():
    torch.manual_seed(0)
    model = nn.Sequential(Opaque())
    x = torch.randn(10, 12, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with RankMonitor(model, ["0"], EPS) as auto:
            model(x.requires_grad_())
            auto.step()
    assert "feature axis" in auto.history[0]["error"]  # an error row, never a guessed axis
    with RankMonitor(model, ["0"], EPS, features=Features(axis={"0": 2})) as mon:
        model(x)
        mon.step()
    h = model(x).detach()
    assert _row_ranks(mon.history[0]) == _ranks(h.movedim(2, -1).reshape(-1, 2))
    with pytest.raises(ValueError, match="axis"):
        Features(axis="rows")
    with pytest.raises(TypeError, match="mask"):
        Features(mask=3.5)


def test_no_spurious_meta_warning(tmp_path):
    model = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        mon = RankMonitor(model, ["1"], EPS, log=str(tmp_path / "run"))
    mon.close()
    assert (tmp_path / "run" / "meta.json").exists()


def test_float_probe_follows_model_double():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1))
    x = torch.randn(50, 2)  # float32, like the model at first
    with RankMonitor(model, ["1"], EPS, probe=x) as mon:
        mon.step()
        model.double()
        mon.step()
    rows = mon.history
    assert not rows[1].get("error")
    with torch.no_grad():
        assert _row_ranks(rows[1]) == _ranks(model[:2](x.double()))
