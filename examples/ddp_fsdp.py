"""DDP and FSDP2 under torchrun on CPU (gloo): each rank monitors its shard, the ranks are global.

    torchrun --standalone --nproc_per_node 2 examples/ddp_fsdp.py --mode ddp   --steps 20 --out runs/ddp
    torchrun --standalone --nproc_per_node 2 examples/ddp_fsdp.py --mode fsdp2 --steps 20 --out runs/fsdp2

Each rank trains on its half of a global batch. With ``torch.distributed`` initialised the monitor
all-reduces the Gram sums (never the activations): every rank's rows hold the ranks of the global
batch, equal to one process on the concatenated batch, and only rank 0 writes ``--out``.
``--probe`` measures on fixed points instead of the training batches (split across ranks).
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.distributed as dist
from torch import nn

from effrank_fast.monitor import RankMonitor, RunLog

WIDTH, GLOBAL_BATCH = 32, 256


def make_model() -> nn.Sequential:
    torch.manual_seed(0)  # identical initial parameters on every rank
    return nn.Sequential(nn.Linear(4, WIDTH), nn.Tanh(), nn.Linear(WIDTH, WIDTH), nn.Tanh(), nn.Linear(WIDTH, 1))


def global_batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(GLOBAL_BATCH, 4, generator=g)
    return x, torch.sin(x.sum(1, keepdim=True))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=("ddp", "fsdp2"), default="ddp")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--probe", action="store_true", help="measure on fixed probe points")
    p.add_argument("--out", default="runs/ddp_fsdp")
    a = p.parse_args()

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // world))
    model = make_model()
    if a.mode == "ddp":
        trained: nn.Module = nn.parallel.DistributedDataParallel(model)
    else:
        from torch.distributed.fsdp import fully_shard

        for layer in (model[0], model[2], model[4]):
            fully_shard(layer)
        trained = fully_shard(model)
    opt = torch.optim.SGD(trained.parameters(), lr=0.1)
    probe = torch.linspace(-2, 2, 200).unsqueeze(1).expand(-1, 4).contiguous() if a.probe else None
    # the monitor hooks the inner model; under DDP its forward runs inside the wrapper's
    mon = RankMonitor(model, layers={"hidden1": "1", "hidden2": "3"}, eps=[1e-2, 1e-3], probe=probe, log=RunLog(a.out))
    for step in range(a.steps):
        x, y = global_batch(step)
        shard = slice(rank * GLOBAL_BATCH // world, (rank + 1) * GLOBAL_BATCH // world)
        loss = nn.functional.mse_loss(trained(x[shard]), y[shard])
        opt.zero_grad()
        loss.backward()
        opt.step()
        mon.step(loss=loss)
    mon.close()
    if rank == 0:
        last = [r for r in mon.history if r["step"] == a.steps - 1]
        for r in last:
            print(f"{a.mode} world {world} step {r['step']} {r['layer']}: eps_rank@0.001 {r['eps_rank@0.001']}")
    dist.barrier()  # every rank done before the group goes (gloo aborts on a peer that left mid-collective)
    del trained, opt
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
