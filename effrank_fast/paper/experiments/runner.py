"""Run experiments: configurations, the grid over variants and seeds, and the per-run analysis.

``run_grid("e1", seeds=[0, 1], variants=[{"optimizer": "adam"}, {"optimizer": "lbfgs"}], out=…)``
trains every (variant, seed) into ``out/<label>/`` (a folder ``effrank-fast report`` reads), analyses
each run (:func:`analyse`: the monitor's summary and figures, the coupling statistics of
:mod:`.stats`, the lower bound, ``experiment.json``) and then aggregates over seeds
(:func:`effrank_fast.paper.experiments.compare.compare`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from effrank_fast import report
from effrank_fast.paper.experiments import compare, coupling, e1, e2, e3, e4, figures, quantisation, stats
from effrank_fast.paper.experiments.common import EXPERIMENT_JSON, RunConfig, read_extras, train

EXPERIMENTS: dict[str, ModuleType] = {"e1": e1, "e2": e2, "e3": e3, "e4": e4}


def module(name: str) -> ModuleType:
    if name not in EXPERIMENTS:
        raise ValueError(f"experiment must be one of {tuple(EXPERIMENTS)}, got {name!r}")
    return EXPERIMENTS[name]


def make_config(name: str, **overrides: Any) -> RunConfig:
    """The experiment's default configuration with ``overrides`` (None values are ignored).

    Unknown keys go to ``options`` when the experiment has such an option, else raise.
    """
    mod = module(name)
    known = {f.name for f in fields(RunConfig)}
    values: dict[str, Any] = {"experiment": name, **mod.DEFAULTS}
    options: dict[str, Any] = {}
    for key, v in overrides.items():
        if v is None:
            continue
        if key in known:
            values[key] = v
        elif key in mod.OPTIONS:
            try:
                options[key] = type(mod.OPTIONS[key])(v)
            except ValueError as exc:
                raise ValueError(f"option {key} of experiment {name}: {exc}") from exc
        else:
            raise ValueError(f"experiment {name} has no option {key!r}")
    if values.get("optimizer") == "lbfgs" and overrides.get("steps") is None:
        values["steps"] = mod.LBFGS_STEPS
    values["options"] = {**values.get("options", {}), **options}
    check = getattr(mod, "check_options", None)
    if check is not None:
        check({**mod.OPTIONS, **values["options"]})
    cfg = RunConfig(**values)
    cfg.check()
    return cfg


def run_one(cfg: RunConfig, out: str | Path, *, plots: bool = True) -> dict[str, Any]:
    """Train one configuration into ``out`` and analyse it; returns the analysis."""
    device = torch.device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda requested but torch.cuda.is_available() is False")
    problem = module(cfg.experiment).build(cfg, device)
    train(cfg, problem, Path(out))
    return analyse(out, plots=plots)


def _bound_summary(extras: list[dict[str, Any]], eps: list[float]) -> dict[str, Any]:
    """At each ε: how often the bound was positive, its largest ratio to the observed error, and violations."""
    out: dict[str, Any] = {}
    rows = [r for r in extras if "probe_l2" in r and math.isfinite(r["probe_l2"])]
    for e in eps:
        key = f"bound@{e:g}"
        pairs = [(r[key], r["probe_l2"]) for r in rows if key in r]
        if not pairs:
            continue
        b, obs = np.array(pairs).T
        out[f"{e:g}"] = {
            "rows": len(pairs),
            "positive": int((b > 0).sum()),
            "max_ratio": float(np.max(b / np.maximum(obs, 1e-300))),
            "violations": int((b > obs * (1 + 1e-6) + 1e-12).sum()),  # float32 forward vs float64 bound
            "initial_bound": float(b[0]),
            "initial_error": float(obs[0]),
            "final_bound": float(b[-1]),
            "final_error": float(obs[-1]),
        }
    return out


def analyse(run_dir: str | Path, *, plots: bool = True) -> dict[str, Any]:
    """Summary (``report``), coupling statistics at every ε, bound summary, figures; writes experiment.json."""

    d = Path(run_dir)
    summary = report.report(d, plots=plots)
    run = report.load_run(d)
    layers = run.layers
    series = {name: run.series(name) for name in layers}
    extras = read_extras(d)
    cfg = (run.meta.get("run") or {}).copy()
    result: dict[str, Any] = {
        "run_dir": str(d),
        "label": Path(d).name,
        "experiment": cfg.get("experiment"),
        "seed": cfg.get("seed"),
        "config": cfg,
        "wall_time_s": summary["wall_time_s"],
        "final_loss": summary["final_loss"],
        "min_loss": summary["min_loss"],
        "stats": {f"{e:g}": stats.run_statistics(series, layers, e) for e in run.eps},
        "bound": _bound_summary(extras, run.eps),
    }
    for e in run.eps:  # the threshold-quantisation control of C1a, from the stored spectra
        control = quantisation.crossing_control_of_run(run, e)
        if control is not None:
            result["stats"][f"{e:g}"]["crossing_control"] = {
                k: v for k, v in control.to_dict().items() if k != "percentiles"
            }
    result["coupling"] = coupling_family(result["stats"])
    result.update(_cost_to(series[layers[-1]], extras, 1e-2, "1e-2"))
    if extras:
        last = extras[-1]
        result["final_extras"] = {k: v for k, v in last.items() if not k.startswith(("bound@", "dist@", "rank_aug@"))}
    if plots:
        result["figures"] = [p.name for p in figures.run_figures(run, extras)]
    (d / EXPERIMENT_JSON).write_text(json.dumps(_jsonable(result), indent=2) + "\n")
    return result


def _cost_to(last: dict[str, np.ndarray], extras: list[dict[str, Any]], level: float, tag: str) -> dict[str, Any]:
    """Gradient evaluations and wall time (s, monitor included) until the loss first reaches ``level``.

    Evaluations come from the extras row of that step (every iteration for L-BFGS); a step with
    no extras row is an Adam/SGD step, where evaluations = steps.
    """
    hit = np.nonzero(np.isfinite(last["loss"]) & (last["loss"] <= level))[0]
    if not len(hit):
        return {f"evals_to_loss_{tag}": None, f"wall_to_loss_{tag}": None}
    step = int(last["step"][hit[0]])
    evals = {int(r["step"]): int(r["func_evals"]) for r in extras if "func_evals" in r}
    wall = last.get("wall_time")
    return {
        f"evals_to_loss_{tag}": evals.get(step, step),
        f"wall_to_loss_{tag}": None if wall is None else float(wall[hit[0]]),
    }


EXPLORATORY = (
    ("local", "symmetric", "local_jump_test", "p"),
    ("local", "following", "local_jump_test_after", "p"),
    ("circular", "symmetric", "jump_window_share", "p_circular"),
    ("circular", "following", "jump_window_share_after", "p_circular"),
    ("jitter", "symmetric", "jump_window_share", "p_jitter"),
    ("jitter", "following", "jump_window_share_after", "p_jitter"),
)


def coupling_family(by_eps: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The primary coupling test of one run and its exploratory tests, Holm-adjusted as one family.

    Primary: the local jitter test (:mod:`.coupling`) at ε = PRIMARY_EPS with symmetric windows
    (None when the run did not measure that ε). Exploratory: every other (ε, window, baseline).
    """
    primary_key = f"{coupling.PRIMARY_EPS:g}"
    primary: dict[str, Any] | None = None
    rows: list[dict[str, Any]] = []
    for e, st in by_eps.items():
        for baseline, window, key, pkey in EXPLORATORY:
            p = (st.get(key) or {}).get(pkey)
            p = math.nan if p is None else float(p)
            if e == primary_key and baseline == "local" and window == coupling.PRIMARY_WINDOW:
                primary = {"eps": e, "window": window, **(st.get(key) or {"p": None})}
                continue
            rows.append({"eps": e, "window": window, "baseline": baseline, "p": p})
    for row, adj in zip(rows, coupling.holm([r["p"] for r in rows]), strict=True):
        row["p_holm"] = adj
    return {"primary": primary, "exploratory": rows}


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (np.floating, np.integer)):
        return _jsonable(v.item())
    return v


def _finished(run_dir: Path, cfg: RunConfig) -> dict[str, Any] | None:
    """The analysis of a finished run of exactly this configuration in ``run_dir``, else None."""
    p = run_dir / EXPERIMENT_JSON
    if not p.exists():
        return None
    res = json.loads(p.read_text())
    saved = {k: res["config"].get(k) for k in asdict(cfg)}
    saved["optimizer"] = res["config"].get("optimizer_name")  # meta's "optimizer" is the description
    same = saved == _jsonable(asdict(cfg)) | {"device": saved.get("device"), "threads": saved.get("threads")}
    return res if same and res["config"].get("finished") else None


def run_grid(
    name: str,
    *,
    seeds: Sequence[int],
    variants: Sequence[dict[str, Any]],
    out: str | Path,
    plots: bool = True,
    log: Any = print,
) -> list[dict[str, Any]]:
    """Every variant × seed of one experiment into ``out/<label>/``, then the seed comparison in ``out``."""

    root = Path(out)
    results = []
    for variant in variants:
        for seed in seeds:
            cfg = make_config(name, **{**variant, "seed": seed})
            run_dir = root / cfg.label
            res = _finished(run_dir, cfg)
            if res is not None:
                log(f"[{name}] {cfg.label}: reusing the finished run in {run_dir} (same configuration)")
            else:
                log(f"[{name}] {cfg.label}: {cfg.steps} steps → {run_dir}")
                res = run_one(cfg, run_dir, plots=plots)
            log(compare.format_run(res))
            results.append(res)
    compare.compare(root, results, plots=plots, log=log)
    return results
