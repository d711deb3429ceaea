"""One rank of the DDP / FSDP2 / empty-rank monitor tests (run by test_monitor_distributed.py).

Usage: python _stack_dist_worker.py RANK WORLD STORE_FILE OUT_DIR SCENARIO PROBE
SCENARIO: "ddp" or "fsdp" (train twice from the same seed, without then with the monitor, and
record whether losses and parameters are bitwise equal), or "empty" (no wrapper; rank 1 skips its
forward at steps 0 and 2). Writes OUT_DIR/rank<RANK>.json.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from effrank_fast import RankMonitor

STEPS, ROWS, LR = 3, 32, 0.1


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 10), nn.Tanh(), nn.Linear(10, 8), nn.Tanh(), nn.Linear(8, 2)).double()


def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(STEPS, ROWS, 3, generator=g, dtype=torch.float64)
    probe = torch.linspace(-1, 1, 3 * 20, dtype=torch.float64).reshape(20, 3)
    return x, probe


def wrap(model: nn.Module, scenario: str, world: int) -> nn.Module:
    if scenario == "ddp":
        return nn.parallel.DistributedDataParallel(model)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (world,))
    for i in (0, 2):
        fully_shard(model[i], mesh=mesh)
    return fully_shard(model, mesh=mesh)


def train(scenario: str, rank: int, world: int, probe: torch.Tensor | None, monitored: bool):
    model = wrap(make_model(), scenario, world)
    x, _ = data()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    mon = RankMonitor(model, "all_hidden", [1e-1, 1e-3], probe=probe) if monitored else None
    losses = []
    for s in range(STEPS):
        mine = torch.tensor_split(x[s], world)[rank]
        loss = model(mine).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if mon is not None:
            mon.step(loss=loss)
    params = [p.full_tensor() if hasattr(p, "full_tensor") else p.detach() for p in model.parameters()]
    history = []
    if mon is not None:
        mon.close()
        history = mon.history
    return losses, [p.clone() for p in params], history


def main() -> None:
    rank, world, store, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
    scenario, use_probe = sys.argv[5], sys.argv[6] == "1"
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", store=dist.FileStore(store, world), rank=rank, world_size=world, timeout=datetime.timedelta(seconds=60)
    )
    result: dict[str, object] = {}
    if scenario in ("ddp", "fsdp"):
        _, probe = data()
        base_losses, base_params, _ = train(scenario, rank, world, None, monitored=False)
        losses, params, history = train(scenario, rank, world, probe if use_probe else None, monitored=True)
        same = all(torch.equal(a, b) for a, b in zip(params, base_params, strict=True))
        result["bitwise"] = losses == base_losses and same
        result["history"] = history
    else:  # "empty": rank 1 has no activations at steps 0 and 2
        model = make_model()
        x, _ = data()
        mon = RankMonitor(model, "all_hidden", [1e-1, 1e-3])
        for s in range(STEPS):
            if rank == 0 or s == 1:
                mine = torch.tensor_split(x[s], world)[rank]
                model(mine).square().mean().backward()
            mon.step()
        mon.close()
        result["history"] = mon.history
    (out / f"rank{rank}.json").write_text(json.dumps(result))
    dist.barrier()  # both ranks done before the group goes
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
    # The results are written. Skip interpreter teardown: under load a gloo thread still joinable
    # at static destruction aborts a finished process ("terminate called without an active exception").
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
