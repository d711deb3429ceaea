"""Shared benchmark helpers: CUDA-event medians (triton.testing.do_bench) and the machine line."""

from __future__ import annotations

import datetime
import json
import os
import platform

import torch


def machine_line() -> str:
    """GPU (or CPU), torch, triton, CUDA, date: the line every RESULTS.md table carries."""
    try:
        import triton

        tv = triton.__version__
    except Exception:  # pragma: no cover - benchmarks need Triton anyway
        tv = "n/a"
    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu"
    return (
        f"{dev}, torch {torch.__version__}, triton {tv}, CUDA {torch.version.cuda}, {datetime.date.today().isoformat()}"
    )


def bench_ms(fn, warmup_ms: float = 25, rep_ms: float = 100) -> float:
    """Median time of ``fn()`` in milliseconds, CUDA-event timed, after a warm-up (compilation included)."""
    import triton.testing

    fn()  # compile / autotune outside the timed region
    torch.cuda.synchronize()
    return float(triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median"))


def write_json(path: str | None, rows: list[dict]) -> None:
    if not path:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"machine": machine_line(), "rows": rows}, f, indent=1)


def print_table(rows: list[dict], cols: list[str]) -> None:
    """A plain fixed-width table of ``cols`` (missing values as '-')."""

    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return "-" if v is None else str(v)

    cells = [[fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
