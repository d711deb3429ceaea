"""RankMonitorTrainerCallback on a real transformers Trainer (GPT-2 built from a config, never downloaded)."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainerCallback, TrainingArguments  # noqa: E402

from effrank_fast.integrations.hf import RankMonitorTrainerCallback  # noqa: E402
from effrank_fast.monitor.alerts import CollapseAlert  # noqa: E402

T, D = 8, 32


def _gpt2():
    torch.manual_seed(0)
    cfg = GPT2Config(
        vocab_size=64,
        n_positions=16,
        n_embd=D,
        n_layer=2,
        n_head=2,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
    )
    return GPT2LMHeadModel(cfg)


class Tokens(torch.utils.data.Dataset):
    def __init__(self, n=16):
        g = torch.Generator().manual_seed(1)
        self.ids = torch.randint(0, 64, (n, T), generator=g)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


class Snapshots(TrainerCallback):
    """θ_t: the parameters at the start of each optimizer step."""

    def __init__(self):
        self.states = []

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        self.states.append(copy.deepcopy(model.state_dict()))


def _trainer(tmp_path, model, **kw):
    args = {
        "output_dir": str(tmp_path), "per_device_train_batch_size": 2, "gradient_accumulation_steps": 2,
        "max_steps": 3, "logging_steps": 1, "report_to": [], "use_cpu": True, "save_strategy": "no",
        "learning_rate": 5e-2, "seed": 0, "disable_tqdm": True, "dataloader_num_workers": 0,
    }  # fmt: skip
    args.update(kw)
    return Trainer(model=model, args=TrainingArguments(**args), train_dataset=Tokens())


def _block0_lam(model_like, state, probe):
    ref = copy.deepcopy(model_like)
    ref.load_state_dict(state)
    ref.eval()
    with torch.no_grad():
        h = ref(probe, output_hidden_states=True).hidden_states[1]  # block 0's output
    phi = h.reshape(-1, D).double().numpy()
    return np.linalg.eigvalsh(phi.T @ phi / len(phi))


def test_rows_and_keys_through_trainer_log_under_gradient_accumulation(tmp_path):
    model = _gpt2()
    pristine = copy.deepcopy(model)
    probe = torch.randint(0, 64, (4, T), generator=torch.Generator().manual_seed(2))
    trainer = _trainer(tmp_path, model, report_to=["tensorboard"])
    snaps = Snapshots()
    trainer.add_callback(snaps)
    cb = RankMonitorTrainerCallback(trainer, layers={"h0": "transformer.h.0"}, eps=[1e-1, 1e-3], probe=probe)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        trainer.train()
    rows = cb.monitor.history
    assert [r["step"] for r in rows] == [0, 1, 2]
    logged = [e for e in trainer.state.log_history if "rank/h0/eps_rank@0.001" in e]
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert [e["step"] for e in logged] == [1, 2, 3]  # one trainer.log per optimizer step (logging_steps=1)
    for row, entry, loss, state in zip(rows, logged, losses, snaps.states, strict=True):
        lam = _block0_lam(pristine, state, probe)
        assert entry["rank/h0/eps_rank@0.001"] == (lam > 1e-3).sum()
        assert entry["rank/h0/eps_rank@0.1"] == (lam > 0.1).sum()
        assert entry["rank/h0/lambda_1"] == pytest.approx(lam[-1], rel=1e-5)
        # the loss of the whole accumulated step, as the Trainer reports it (not one scaled micro-batch)
        assert row["loss"] == pytest.approx(loss, rel=1e-6)
    # the Trainer's TensorBoard integration received the keys (with its own train/ prefix)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = [p for p in tmp_path.rglob("events.out.tfevents*") if "rank" not in p.parts]
    acc = EventAccumulator(str(events.parent))
    acc.Reload()
    tb = [e.value for e in acc.Scalars("train/rank/h0/eps_rank@0.001")]
    assert tb == [e["rank/h0/eps_rank@0.001"] for e in logged]


def test_collapse_alert_stops_training_and_cadence_follows_log_every(tmp_path):
    trainer = _trainer(tmp_path, _gpt2(), max_steps=10, gradient_accumulation_steps=1)
    alert = CollapseAlert(metric="eps_rank@0.001", below=1e6, action="stop")
    cb = RankMonitorTrainerCallback(trainer, layers=["transformer.h.1"], eps=[1e-3], alerts=alert, log_every=2)
    with pytest.warns(RuntimeWarning, match="rank collapse"):
        trainer.train()
    assert trainer.state.global_step == 2  # the first flush (step 2) saw the collapse and stopped the run
    assert [r["step"] for r in cb.monitor.history] == [0, 1]
    assert (tmp_path / "rank" / "history.jsonl").exists()


def test_needs_a_trainer():
    with pytest.raises(TypeError, match="trainer must be a transformers.Trainer"):
        RankMonitorTrainerCallback(object())  # type: ignore[arg-type]


def test_probe_sees_theta_t_under_a_fused_optimizer():
    """torch.optim.AdamW(fused=True), the Trainer's default, updates without bumping version counters."""
    import effrank_fast as ef

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=0.1, fused=True)
    probe, x = torch.randn(40, 2), torch.randn(32, 2)
    mon = ef.RankMonitor(model, layers=["1"], eps=[1e-3], probe=probe)
    ref = []
    for _ in range(3):
        with torch.no_grad():
            phi = model[1](model[0](probe)).double().numpy()
        ref.append(np.linalg.eigvalsh(phi.T @ phi / len(phi))[-1])
        model(x).square().mean().backward()
        opt.step()
        opt.zero_grad()
        mon.step()
    mon.close()
    assert [r["lambda_1"] for r in mon.history] == pytest.approx(ref, rel=1e-6)


def test_resume_from_checkpoint_keeps_one_timeline_of_rows(tmp_path):
    """A run resumed with ``trainer.train(resume_from_checkpoint=...)`` measures the steps after the
    checkpoint again: the run folder then holds every step once, in order (the rows the first run
    wrote after the checkpoint are replaced, with a warning), and the resumed steps' rows are the
    uninterrupted run's."""
    from effrank_fast.monitor.history import read_jsonl

    probe = torch.randint(0, 64, (4, T), generator=torch.Generator().manual_seed(2))
    kw = {"max_steps": 6, "gradient_accumulation_steps": 1, "save_strategy": "steps", "save_steps": 3}
    first = _trainer(tmp_path, _gpt2(), **kw)
    RankMonitorTrainerCallback(first, layers={"h0": "transformer.h.0"}, eps=[1e-1, 1e-3], probe=probe)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        first.train()
    before = read_jsonl(tmp_path / "rank" / "history.jsonl")
    assert [r["step"] for r in before] == list(range(6))

    again = _trainer(tmp_path, _gpt2(), **kw)
    RankMonitorTrainerCallback(again, layers={"h0": "transformer.h.0"}, eps=[1e-1, 1e-3], probe=probe)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with pytest.warns(RuntimeWarning, match="were replaced"):
            again.train(resume_from_checkpoint=str(tmp_path / "checkpoint-3"))
    after = read_jsonl(tmp_path / "rank" / "history.jsonl")
    assert [r["step"] for r in after] == list(range(6))
    for old, new in zip(before, after, strict=True):
        for col in ("eps_rank@0.1", "eps_rank@0.001", "eps_rank_certified@0.001"):
            assert new[col] == old[col], (new["step"], col)
        assert new["lambda_1"] == pytest.approx(old["lambda_1"], rel=1e-5)
        assert new["loss"] == pytest.approx(old["loss"], rel=1e-5)
