"""RankMonitor on models nobody here wrote: transformers GPT-2 and BERT built from tiny configs
(never downloaded) and a small CNN.

Every expected rank comes from a float64 ``eigvalsh`` in this file, on the activation the model
itself returns (``output_hidden_states``) flattened on the right axis, keeping only the rows the
attention mask marks real.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from effrank_fast import RankMonitor
from effrank_fast.monitor import Features

transformers = pytest.importorskip("transformers")

EPS = [1e-2, 1e-4]


def _reference(phi: torch.Tensor) -> tuple[list[int], float]:
    """(ε-ranks, λ_max) of M = ΦᵀΦ/N in float64."""
    phi = phi.double()
    lam = torch.linalg.eigvalsh(phi.T @ phi / phi.shape[0])
    return [int((lam > e).sum()) for e in EPS], float(lam[-1])


def _check(row, phi):
    ranks, lmax = _reference(phi)
    assert [row[f"eps_rank@{e:g}"] for e in EPS] == ranks
    assert row["lambda_max"] == pytest.approx(lmax, rel=1e-9)


def _batch(vocab=50):
    torch.manual_seed(1)
    ids = torch.randint(0, vocab, (3, 8))
    mask = torch.ones(3, 8, dtype=torch.long)
    mask[1, 5:] = 0  # right padding
    mask[2, 2:] = 0
    return ids, mask


def _gpt2():
    cfg = transformers.GPT2Config(
        n_layer=2, n_head=2, n_embd=16, vocab_size=50, n_positions=16, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0
    )
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(cfg).double()


def test_gpt2_all_hidden_with_attention_mask():
    model = _gpt2()
    ids, mask = _batch()
    with RankMonitor(model, "all_hidden", EPS, features=Features(mask="attention_mask")) as mon:
        out = model(input_ids=ids, attention_mask=mask, labels=ids)
        out.loss.backward()
        mon.step(loss=out.loss)
    info = mon.layer_info()
    # per block: the inputs of c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj (the MLP activation) and
    # the block's output; then the final hidden state (lm_head's input)
    assert len(info) == 5 * 2 + 1
    modules = [v["module"] for v in info.values()]
    assert modules[3] == "transformer.h.0.mlp.c_proj" and modules[4] == "transformer.h.0"
    assert modules[-1] == "lm_head"
    assert all(v["axis"] == "last" for v in info.values())
    rows = {r["layer"]: r for r in mon.history}
    with torch.no_grad():
        hs = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        real = mask.bool()
        _check(rows["hidden1"], model.transformer.h[0].ln_1(hs[0])[real])  # c_attn's input
        _check(rows["hidden5"], hs[1][real])  # block 0's output
        _check(rows["hidden11"], hs[-1][real])  # ln_f's output: the final hidden state
    # counting the padding rows would give another spectrum
    assert rows["hidden11"]["lambda_max"] != pytest.approx(_reference(hs[-1].reshape(-1, 16))[1], rel=1e-6)


def test_gpt2_keyword_probe_with_mask():
    model = _gpt2()
    ids, mask = _batch()
    probe = {"input_ids": ids, "attention_mask": mask}
    features = Features(mask="attention_mask")
    with RankMonitor(model, ["transformer.h.1", "lm_head:in"], EPS, probe=probe, features=features) as mon:
        mon.step()
    rows = {r["layer"]: r for r in mon.history}
    with torch.no_grad():
        hs = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    _check(rows["transformer.h.1"], _block1(model, ids, mask))
    _check(rows["lm_head:in"], hs[-1][mask.bool()])


def _block1(model, ids, mask):
    """The output of the last block (before ln_f), by a forward hook of our own."""
    got = []
    h = model.transformer.h[1].register_forward_hook(lambda m, a, o: got.append(o[0] if isinstance(o, tuple) else o))
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
    h.remove()
    return got[0][mask.bool()]


def test_bert_layers_mask_and_pooler():
    cfg = transformers.BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=24,
        max_position_embeddings=16,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(0)
    model = transformers.BertModel(cfg).double()
    ids, mask = _batch()
    features = Features(mask="attention_mask")
    with (
        RankMonitor(model, ["encoder.layer.0", "pooler.dense:in"], EPS, features=features) as mon,
        RankMonitor(model, "all_hidden", EPS, features=features) as auto,
    ):
        out = model(ids, mask)  # the mask passed by position is found by its parameter name
        out.pooler_output.sum().backward()
        mon.step()
        auto.step()
    rows = {r["layer"]: r for r in mon.history}
    with torch.no_grad():
        hs = model(ids, attention_mask=mask, output_hidden_states=True).hidden_states
    _check(rows["encoder.layer.0"], hs[1][mask.bool()])
    _check(rows["pooler.dense:in"], hs[-1][:, 0])  # one row per sample: the mask does not apply
    modules = [v["module"] for v in auto.layer_info().values()]
    # query, key and value read one tensor: one layer (named after its first reader); in block 1
    # that tensor is block 0's output, already a layer
    assert not any(m.endswith((".key", ".value")) for m in modules)
    assert modules[0] == "encoder.layer.0.attention.self.query" and modules[4] == "encoder.layer.0"
    assert len(modules) == 10 and modules[-2:] == ["encoder.layer.1", "pooler.dense"]
    assert all(not r.get("error") for r in auto.history)


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 12, 3), nn.ReLU()
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 4))

    def forward(self, x):
        return self.head(self.features(x))


def _channels(t: torch.Tensor) -> torch.Tensor:
    return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])  # [B, C, H, W] → [B·H·W, C]


def test_cnn_channels_are_the_neurons():
    torch.manual_seed(0)
    model = SmallCNN().double()
    x = torch.randn(6, 3, 12, 10, dtype=torch.float64)
    with RankMonitor(model, ["features.2", "features.5"], EPS) as mon, RankMonitor(model, "all_hidden", EPS) as auto:
        model(x).sum().backward()
        mon.step()
        auto.step()
    assert mon.layer_info()["features.2"]["axis"] == "channels"  # a ReLU after a BatchNorm2d
    rows = {r["layer"]: r for r in mon.history}
    with torch.no_grad():
        model.train()
        a2 = model.features[:3](x)
        a5 = model.features(x)
    _check(rows["features.2"], _channels(a2))
    _check(rows["features.5"], _channels(a5))
    # all_hidden: the second conv's input (channels) and the Linear's input (pooled [B, 12])
    info = auto.layer_info()
    assert [v["module"] for v in info.values()] == ["features.4", "head.2"]
    assert [v["axis"] for v in info.values()] == ["channels", "last"]
    rows = {r["layer"]: r for r in auto.history}
    with torch.no_grad():
        _check(rows["hidden1"], _channels(model.features[:4](x)))
        _check(rows["hidden2"], model.head[:2](a5))
