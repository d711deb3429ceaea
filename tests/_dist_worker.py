"""One rank of the data-parallel monitor test (run as a subprocess by test_monitor_distributed.py).

Usage: python _dist_worker.py RANK WORLD STORE_FILE OUT_DIR SOURCE
Every rank builds the same model and data (same seed), feeds the monitor only its own block of
rows and its own loss, and dumps ``mon.history`` to OUT_DIR/rank<RANK>.json.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from effrank_fast import RankMonitor


def main() -> None:
    rank, world, store, out, source = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], Path(sys.argv[4]), sys.argv[5]
    torch.set_num_threads(1)
    dist.init_process_group("gloo", store=dist.FileStore(store, world), rank=rank, world_size=world)
    calls = []
    real_all_reduce = dist.all_reduce
    dist.all_reduce = lambda t, *a, **k: calls.append(t.numel()) or real_all_reduce(t, *a, **k)  # count them
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 10), nn.Tanh(), nn.Linear(10, 10), nn.Tanh(), nn.Linear(10, 2)).double()
    x = torch.randn(3, 97, 3, dtype=torch.float64) + 0.5  # 3 steps of a 97-row global batch
    if source == "batch":
        mon = RankMonitor(model, "all_hidden", [1e-1, 1e-3], center=True, log_dir=out / "run", flush_every=2)
        assert mon.distributed  # automatic: a process group with 2 ranks exists
        for step in range(3):
            mine = torch.tensor_split(x[step], world)[rank]  # this rank's rows only
            loss = model(mine).square().mean()  # this rank's local loss: differs between ranks
            loss.backward()
            mon.step(loss=loss)
    else:
        probe = x.reshape(-1, 3)
        w = torch.linspace(0.5, 1.5, probe.shape[0], dtype=torch.float64)
        mon = RankMonitor(model, "all_hidden", [1e-1, 1e-3], probe=probe, weights=w, log_dir=out / "run")
        mon.step(loss=float(10 * (rank + 1)))  # a Python float per rank: 10 and 20
    mon.close()
    (out / f"rank{rank}.json").write_text(json.dumps(mon.history))
    (out / f"rank{rank}.collectives.json").write_text(json.dumps(calls))
    dist.barrier()  # both ranks done before the group goes
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
    # The results are written. Skip interpreter teardown: under load a gloo thread still joinable
    # at static destruction aborts a finished process ("terminate called without an active exception").
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
