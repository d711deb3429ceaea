"""E5: SFLI (effrank_fast.paper.sfli.sfli_) against the default initialisation, on E1 and E2.

For each task, both arms train the task's default configuration with the same seeds into
``out/<task>/default-…`` and ``out/<task>/sfli-…``; the only difference is the first layer's
initialisation (SFLI with kind tanh, C = 1, offsets over Ω, drawn from a generator seeded by the
run's seed). ``sfli.png`` compares loss and rank against step and wall time, and the initial ranks per layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from effrank_fast.paper.experiments import figures, runner

NAME = "e5"
TITLE = "SFLI vs default initialisation on E1 and E2"
TASKS = ("e1", "e2")


def run(
    *,
    tasks: Sequence[str] = TASKS,
    seeds: Sequence[int] = (0,),
    out: str | Path,
    overrides: dict[str, Any] | None = None,
    plots: bool = True,
    log: Any = print,
) -> dict[str, list[dict[str, Any]]]:
    results: dict[str, list[dict[str, Any]]] = {}
    for task in tasks:
        if task not in TASKS:
            raise ValueError(f"E5 compares on {TASKS}, got task {task!r}")
        root = Path(out) / task
        variants = [{**(overrides or {}), "init": init} for init in ("default", "sfli")]
        res = runner.run_grid(task, seeds=seeds, variants=variants, out=root, plots=plots, log=log)
        results[task] = res
        if plots:
            dirs = {
                init: [Path(r["run_dir"]) for r in res if r["config"]["init"] == init] for init in ("default", "sfli")
            }
            title = f"SFLI against the default initialisation: {runner.module(task).TITLE}"
            figures.sfli_plot(dirs["default"], dirs["sfli"], root / "sfli", title=title)
            log(f"[e5] {root / 'sfli.png'}")
    return results
