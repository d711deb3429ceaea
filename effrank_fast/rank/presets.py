"""The peers' entropy-rank conventions as data: a leaf module (no imports from the package).

:mod:`effrank_fast.rank.spectrum` reads a preset by name; :mod:`effrank_fast.rank.conventions`
documents each one and reproduces the peers' full recipes.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PRESETS", "Preset", "preset"]


@dataclass(frozen=True)
class Preset:
    """Entropy-rank keywords of one peer (see the module table)."""

    basis: str
    fudge: float
    components: str | int
    center: bool
    source: str


PRESETS: dict[str, Preset] = {
    "roy-vetterli": Preset("sigma", 0.0, "all", False, "Roy & Vetterli 2007; Garrido et al. 2023 (RankMe)"),
    "reptrix": Preset("lambda", 1e-7, 2048, True, "reptrix 0.1.0 reptrix/rankme.py get_rankme"),
    "stable-pretraining": Preset("sigma", 1e-5, "min", False, "stable-pretraining 0.1.8 callbacks/rankme.py"),
    "monai": Preset("sigma", 0.0, "min", True, "MONAI 1.6.1 monai/metrics/embedding_collapse.py"),
}


def preset(name: str) -> Preset:
    """The preset called ``name`` (ValueError naming the known ones otherwise)."""
    if name not in PRESETS:
        raise ValueError(f"convention must be one of {sorted(PRESETS)}, got {name!r}")
    return PRESETS[name]
