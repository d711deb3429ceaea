"""HF Trainer + GPT-2 built from a config (nothing downloaded), monitored by RankMonitorTrainerCallback.

    python examples/hf_trainer_gpt2.py --steps 50 --out runs/hf

Random token sequences of random lengths, right-padded; gradient accumulation 2, so each row's loss
is the Trainer's own step loss (the sum of its scaled micro-batch losses). The ranks of two block
outputs ([B, T, d] → one row per real token: ``Features(mask="attention_mask")`` drops the padding,
read from the forward's ``attention_mask`` keyword) reach ``trainer.log``: every ``report_to``
(TensorBoard here, when installed) gets them as ``train/rank/<layer>/<metric>``. The monitor's own
run folder is ``<out>/rank``.
"""

from __future__ import annotations

import argparse
import importlib.util

import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

from effrank_fast.integrations.hf import RankMonitorTrainerCallback
from effrank_fast.monitor import CollapseAlert, Features


class RandomTokens(torch.utils.data.Dataset):
    """Sequences of 2..seq real tokens, right-padded with token 0 (attention_mask 0, label -100)."""

    def __init__(self, n: int, seq: int, vocab: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(1, vocab, (n, seq), generator=g)
        lengths = torch.randint(2, seq + 1, (n, 1), generator=g)
        self.mask = (torch.arange(seq) < lengths).long()
        self.ids[self.mask == 0] = 0

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        labels = self.ids[i].masked_fill(self.mask[i] == 0, -100)
        return {"input_ids": self.ids[i], "attention_mask": self.mask[i], "labels": labels}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--seq", type=int, default=16)
    p.add_argument("--out", default="runs/hf_trainer_gpt2")
    a = p.parse_args()

    torch.manual_seed(0)
    cfg = GPT2Config(
        vocab_size=128, n_positions=a.seq, n_embd=a.width, n_layer=a.layers, n_head=2, bos_token_id=0, eos_token_id=0
    )
    model = GPT2LMHeadModel(cfg)
    args = TrainingArguments(
        output_dir=a.out,
        max_steps=a.steps,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        learning_rate=3e-3,
        logging_steps=max(1, a.steps // 10),
        report_to=["tensorboard"] if importlib.util.find_spec("tensorboard") else [],
        save_strategy="no",
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=RandomTokens(256, a.seq, cfg.vocab_size))
    layers = {f"block{i}": f"transformer.h.{i}" for i in range(a.layers)}  # block outputs, token rows
    cb = RankMonitorTrainerCallback(
        trainer,
        layers=layers,
        eps=[1e-2, 1e-3],
        features=Features(mask="attention_mask"),  # padding tokens never count
        alerts=CollapseAlert(metric="eps_rank@0.001", fraction_of_max=0.25, action="warn"),
    )
    trainer.train()
    assert cb.monitor is not None
    last = {r["layer"]: r for r in cb.monitor.history if r["step"] == a.steps - 1}
    for name, row in last.items():
        print(f"{name}: step {row['step']} loss {row['loss']:.4f} eps_rank@0.001 {row['eps_rank@0.001']}")
    logged = [e for e in trainer.state.log_history if any(k.startswith("rank/") for k in e)]
    print(f"trainer.log received the ranks {len(logged)} times; rows in {args.output_dir}/rank")


if __name__ == "__main__":
    main()
