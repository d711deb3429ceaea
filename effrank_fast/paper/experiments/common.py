"""The training loop shared by every experiment: monitor, side measurements, run folder.

Each experiment module builds a :class:`Problem` from a :class:`RunConfig`; :func:`train` runs it.
At every step t the loop first evaluates the training loss at the current parameters θ_t, then
records that loss with :class:`effrank_fast.RankMonitor` (whose probe forward then also sees θ_t),
and only then updates the parameters. Step 0 is the initial network and the last row the final one.

The monitor writes its own files (history.jsonl, history.csv, spectrum.jsonl, meta.json), so
``effrank-fast report`` reads every run folder. The loop adds ``extras.jsonl``: at every
``bound_every``-th step, from a forward pass on the probe at the same θ_t, the quadrature-weighted
error ‖u − u_θ‖²_w when the target u is known on the probe, the loss lower bound of
:mod:`effrank_fast.paper.lower_bound` for each ε, ‖c̃‖₂ of the output layer (weights and bias), the
optimizer's iteration and gradient-evaluation counts (``func_evals``: loss-and-gradient evaluations
made for the optimizer; the monitor's own forward passes are not counted), and the experiment's
own metrics.

Step numbers are optimizer iterations. L-BFGS runs one iteration per ``opt.step`` by default
(``lbfgs_max_iter`` = 1, with ``max_eval`` = 25 so that the strong-Wolfe search is not cut short),
so it is logged at every iteration, at the same resolution as Adam; its first closure call in each
``opt.step`` is served from a cache of the line search's last evaluations (:class:`_CachedClosure`).
``extras.jsonl`` then has a row per iteration with the cumulative function (= gradient)
evaluations, so optimisers can be compared at equal evaluations and at equal wall time.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from effrank_fast.monitor import Engine, Features, Probe, RankMonitor, RunLog
from effrank_fast.paper.demo import ACTIVATIONS, build_model
from effrank_fast.paper.lower_bound import loss_lower_bound, readout_coefficients, weighted_l2_error
from effrank_fast.paper.sfli import sfli_

EXTRAS_JSONL = "extras.jsonl"
OPTIMIZERS = {"adam": 1e-3, "sgd": 1e-2, "lbfgs": 1.0}  # name → default learning rate
INITS = ("default", "sfli", "scaled")
SFLI_PLACEMENTS = ("uniform", "default")


@dataclass
class RunConfig:
    """One training run. ``options`` holds the experiment's own settings (see each module's OPTIONS)."""

    experiment: str = "e1"
    seed: int = 0
    steps: int = 5000  # Adam/SGD steps, or L-BFGS opt.step calls (each up to lbfgs_max_iter iterations)
    optimizer: str = "adam"
    lr: float | None = None
    lbfgs_max_iter: int = 1  # iterations per opt.step: 1 logs every iteration
    activation: str = "tanh"
    width: int = 64
    depth: int = 3
    init: str = "default"
    sfli_kind: str | None = None  # None: cosine for sin, tanh otherwise
    sfli_C: float = 1.0
    sfli_placement: str = "uniform"  # where SFLI's hyperplanes pass: U(Ω), or the default init's transitions
    eps: list[float] = field(default_factory=lambda: [1e-2, 1e-3, 1e-4])
    every: int = 1
    spectrum_every: int = 10
    bound_every: int = 10
    device: str = "cpu"
    threads: int | None = 1
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else OPTIMIZERS[self.optimizer]

    @property
    def label(self) -> str:
        """Folder name of the run: what varies between runs of one experiment, then the seed."""
        parts = [self.optimizer, self.activation, f"w{self.width}"]
        if self.init != "default":
            extra = []
            if self.init in ("sfli", "scaled") and self.sfli_C != 1.0:
                extra.append(f"C{self.sfli_C:g}")
            if self.init == "sfli" and self.sfli_placement != "uniform":
                extra.append(f"at-{self.sfli_placement}")
            parts.insert(0, "-".join([self.init, *extra]))
        return "-".join(parts) + f"-s{self.seed}"

    def check(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {tuple(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        if self.sfli_placement not in SFLI_PLACEMENTS:
            raise ValueError(f"sfli_placement must be one of {SFLI_PLACEMENTS}, got {self.sfli_placement!r}")
        if not (isinstance(self.sfli_C, (int, float)) and math.isfinite(self.sfli_C) and self.sfli_C > 0):
            raise ValueError(f"sfli_C must be finite and > 0, got {self.sfli_C!r}")
        for name in ("steps", "width", "depth", "every", "bound_every", "lbfgs_max_iter"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "steps" else 1):
                raise ValueError(f"{name} must be an int >= {0 if name == 'steps' else 1}, got {v!r}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"lr must be finite and > 0, got {self.lr!r}")
        if not self.eps or not all(math.isfinite(e) and e > 0 for e in self.eps):
            raise ValueError(f"eps must be finite thresholds > 0, got {self.eps!r}")


@dataclass
class Problem:
    """What one experiment trains; built by the experiment module's ``build(cfg, device)``."""

    model: nn.Module
    loss: Callable[[], torch.Tensor]  # training loss at the current parameters (builds the graph)
    probe: torch.Tensor  # [N, dim] points where M is formed
    weights: torch.Tensor | None  # [N] quadrature weights (None: the empirical measure, mode "mean")
    readout: nn.Linear  # the output layer (its input is the last hidden layer)
    first_layer: nn.Linear
    bounds: list[tuple[float, float]] | None  # the input box Ω (for SFLI), None if there is none
    info: dict[str, Any]  # task, model, loss_name: written to meta.json (the report labels the loss with it)
    target: torch.Tensor | None = None  # u on the probe [N] or [N, m]: enables the lower bound
    evaluate: Callable[[], dict[str, float]] | None = None  # extra metrics at the bound steps

    @property
    def mode(self) -> str:
        return "integral" if self.weights is not None else "mean"


def mlp(dim_in: int, width: int, depth: int, activation: str, dim_out: int = 1) -> nn.Sequential:
    """dim_in → [Linear(width) → act] × depth → Linear(dim_out): the demo's network with its ends resized."""

    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    model = build_model(width, depth, activation)
    if dim_in != 1:
        model[0] = nn.Linear(dim_in, width)
    if dim_out != 1:
        model[-1] = nn.Linear(width, dim_out)
    return model


def linear_ends(model: nn.Sequential) -> tuple[nn.Linear, nn.Linear]:
    """(first layer, output layer) of an :func:`mlp`."""
    first, last = model[0], model[-1]
    if not (isinstance(first, nn.Linear) and isinstance(last, nn.Linear)):
        raise TypeError("the model must start and end with an nn.Linear")
    return first, last


def _optimizer(cfg: RunConfig, params: Any) -> torch.optim.Optimizer:
    lr = cfg.learning_rate
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr)
    # max_eval defaults to 1.25 max_iter, which at max_iter=1 stops the strong-Wolfe search after
    # one evaluation and stalls the optimizer (issue 11); 25 evaluations per iteration is ample.
    return torch.optim.LBFGS(
        params,
        lr=lr,
        max_iter=cfg.lbfgs_max_iter,
        max_eval=max(25, cfg.lbfgs_max_iter * 5 // 4),
        history_size=50,
        line_search_fn="strong_wolfe",
    )


class _CachedClosure:
    """L-BFGS's closure, counting the gradient evaluations it really computes.

    With one iteration per ``opt.step``, each step starts by evaluating the closure at the point the
    previous line search ended on, which that search has already evaluated; the cache returns that
    loss and gradient instead of recomputing them, so logging every iteration costs no evaluation.
    """

    def __init__(self, problem: Problem, opt: torch.optim.Optimizer, keep: int = 4) -> None:
        self.problem, self.opt, self.keep = problem, opt, keep
        self.params = [p for g in opt.param_groups for p in g["params"]]
        self.cache: list[tuple[list[torch.Tensor], torch.Tensor, list[torch.Tensor | None]]] = []
        self.evals = 0

    def __call__(self) -> torch.Tensor:
        for snap, loss, grads in self.cache:
            if all(torch.equal(p, s) for p, s in zip(self.params, snap, strict=True)):
                for p, g in zip(self.params, grads, strict=True):
                    p.grad = None if g is None else g.clone()
                return loss
        self.opt.zero_grad()
        loss = self.problem.loss()
        loss.backward()
        self.evals += 1
        snap = [p.detach().clone() for p in self.params]
        grads = [None if p.grad is None else p.grad.detach().clone() for p in self.params]
        self.cache = [*self.cache[-(self.keep - 1) :], (snap, loss.detach(), grads)]
        return loss


def _counts(opt: torch.optim.Optimizer, t: int, closure: _CachedClosure) -> tuple[int, int]:
    """(iterations, gradient evaluations) so far (Adam, SGD: one each per step)."""
    if isinstance(opt, torch.optim.LBFGS):
        state = opt.state[opt.param_groups[0]["params"][0]]
        return int(state.get("n_iter", 0)), closure.evals
    return t, t


class _Extras:
    """The side measurements on the probe at θ_t (see the module docstring)."""

    def __init__(self, problem: Problem, eps: list[float], path: Path) -> None:
        self.problem, self.eps, self.path = problem, eps, path
        self.rows: list[dict[str, Any]] = []
        self._feats: list[torch.Tensor] = []
        path.write_text("")

    @torch.no_grad()
    def record(self, step: int, iters: int, evals: int, wall: float, loss: float, *, full: bool = True) -> None:
        """One row; ``full=False`` writes only the counts, the wall time and the loss."""
        p = self.problem
        row: dict[str, Any] = {"step": step, "iterations": iters, "func_evals": evals, "wall_time": wall, "loss": loss}
        if not full:
            self._write(row)
            return
        c = readout_coefficients(p.readout)
        row["c_norm"] = float(c.norm())
        if p.target is not None:
            hook = p.readout.register_forward_hook(lambda m, inp, out: self._feats.append(inp[0]))
            training = p.model.training
            p.model.eval()
            try:
                pred = p.model(p.probe)
            finally:
                hook.remove()
                p.model.train(training)
            phi = self._feats.pop()
            w = p.weights if p.weights is not None else torch.full((phi.shape[0],), 1.0 / phi.shape[0])
            row["probe_l2"] = weighted_l2_error(pred, p.target, w)
            if math.isfinite(row["probe_l2"]) and bool(torch.isfinite(phi).all()):
                for lb in loss_lower_bound(phi, p.target, w, c, self.eps):
                    row[f"bound@{lb.eps:g}"] = lb.bound
                    row[f"dist@{lb.eps:g}"] = lb.dist
                    row[f"rank_aug@{lb.eps:g}"] = lb.rank
        if p.evaluate is not None:
            row.update(p.evaluate())
        self._write(row)

    def _write(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")


def train(cfg: RunConfig, problem: Problem, out: Path) -> Path:
    """Train ``problem`` under ``cfg`` with the monitor on; returns the run folder ``out``."""
    cfg.check()
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _train(cfg, problem, Path(out))
    finally:
        torch.set_num_threads(threads)


def apply_init(cfg: RunConfig, problem: Problem) -> None:
    """The first layer's initialisation (the other layers keep PyTorch's default).

    - ``sfli``: :func:`effrank_fast.paper.sfli.sfli_` with ``sfli_C``; ``sfli_placement="default"``
      makes its hyperplanes pass through the points where the default init put its transitions
      (the point of each default hyperplane nearest the origin, inside Ω or not): SFLI's slopes
      without SFLI's placement.
    - ``scaled``: the default init's weight and bias multiplied by one factor so that the weight's
      Frobenius norm equals SFLI's (γ√n for kind tanh): SFLI's scale with the default's placement
      (scaling w and b together keeps every transition point −b/w).
    """
    if cfg.init == "default":
        return
    if problem.bounds is None:
        raise ValueError(f"init={cfg.init!r} needs an input box; experiment {cfg.experiment} has none")
    layer = problem.first_layer
    kind = cfg.sfli_kind or ("cosine" if cfg.activation == "sin" else "tanh")
    gen = torch.Generator().manual_seed(cfg.seed)
    with torch.no_grad():
        w0 = layer.weight.detach().double().cpu()
        b0 = layer.bias.detach().double().cpu()
    if cfg.init == "scaled":
        target = torch.nn.Linear(layer.in_features, layer.out_features, dtype=torch.float64)
        sfli_(target, problem.bounds, kind=kind, C=cfg.sfli_C, generator=gen)
        factor = float(target.weight.detach().norm() / w0.norm())
        with torch.no_grad():
            layer.weight.mul_(factor)
            layer.bias.mul_(factor)
        return
    points = None
    if cfg.sfli_placement == "default":
        points = -(b0 / (w0 * w0).sum(dim=1))[:, None] * w0  # nearest point of {w·x + b = 0} to 0
    sfli_(layer, problem.bounds, kind=kind, C=cfg.sfli_C, generator=gen, points=points)


def _train(cfg: RunConfig, problem: Problem, out: Path) -> Path:
    apply_init(cfg, problem)
    model = problem.model
    opt = _optimizer(cfg, model.parameters())
    lbfgs = cfg.optimizer == "lbfgs"
    meta = {
        **asdict(cfg),
        **problem.info,
        "optimizer": f"{cfg.optimizer} lr {cfg.learning_rate:g}"
        + (f", max_iter {cfg.lbfgs_max_iter}, strong Wolfe" if lbfgs else ""),
        "optimizer_name": cfg.optimizer,
        "step_unit": "L-BFGS iterations" if lbfgs else "optimizer steps",
        "init_scheme": cfg.init,
        "finished": False,
    }
    out.mkdir(parents=True, exist_ok=True)
    mon = RankMonitor(
        model,
        layers="all_hidden",
        eps=cfg.eps,
        probe=Probe(problem.probe, weights=problem.weights),
        every=1 if lbfgs else cfg.every,  # L-BFGS rows are labelled by iteration count: keep every opt.step
        features=Features(mode=problem.mode, acc_dtype=torch.float64, backend="torch"),  # ε to 1e-4, λ_max ≈ 1e2
        engine=Engine(spectrum_every=cfg.spectrum_every),
        log=RunLog(out, tensorboard=False, flush_every=max(1, min(250, cfg.steps // 4 or 1)), meta=meta),
    )
    extras = _Extras(problem, list(cfg.eps), out / EXTRAS_JSONL)
    t0 = time.perf_counter()
    last_step = -1
    closure = _CachedClosure(problem, opt)
    try:
        for t in range(cfg.steps + 1):
            loss = problem.loss()
            iters, evals = _counts(opt, t, closure)
            step = iters if lbfgs else t
            if t > 0 and step == last_step:
                break  # L-BFGS stopped iterating (its tolerances were met): a repeated row would reuse a step
            last_step = step
            mon.step(loss=loss.detach(), step=step)
            full = step % cfg.bound_every == 0 or t == cfg.steps
            if full or lbfgs:
                value = float(loss.detach())  # a host sync, only at the bound steps (every iteration for L-BFGS)
                extras.record(step, iters, evals, time.perf_counter() - t0, value, full=full)
                if not math.isfinite(value):
                    break  # diverged: the rows so far are kept
            if t == cfg.steps:
                break
            if lbfgs:
                opt.step(closure)  # type: ignore[arg-type]
            else:
                opt.zero_grad()
                loss.backward()
                opt.step()
        mon.run_meta.update(finished=True, wall_time_s=time.perf_counter() - t0)
    finally:
        mon.close()
    return out


def read_extras(run_dir: str | Path) -> list[dict[str, Any]]:
    p = Path(run_dir) / EXTRAS_JSONL
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


EXPERIMENT_JSON = "experiment.json"  # a run folder's experiment record (runner writes, compare reads)


def group_label(label: str) -> str:
    return re.sub(r"-s\d+$", "", label)
