"""Old module paths of the flat layout (before 0.2), kept importable for one release.

``import effrank_fast.spectral`` still works and returns the module at its new home
(``effrank_fast.rank.formulas``): the same module object, so state and monkeypatches are
shared. Each old path warns once per process with a ``DeprecationWarning`` naming the new one.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

# old dotted path (or prefix of a package) -> new one
MOVED: dict[str, str] = {
    "effrank_fast._validate": "effrank_fast.ops.validation",
    "effrank_fast._backends": "effrank_fast.ops.backends",
    "effrank_fast._native": "effrank_fast.ops.native",
    "effrank_fast._ops": "effrank_fast.ops.registry",
    "effrank_fast._prepare": "effrank_fast.rank.prepare",
    "effrank_fast._count": "effrank_fast.rank.certified",
    "effrank_fast.spectrum_measures": "effrank_fast.rank.spectrum",
    "effrank_fast.spectral": "effrank_fast.rank.formulas",
    "effrank_fast.conventions": "effrank_fast.rank.conventions",
    "effrank_fast.reference": "effrank_fast.rank.reference",
    "effrank_fast.staircase": "effrank_fast.paper.staircase",
    "effrank_fast.lower_bound": "effrank_fast.paper.lower_bound",
    "effrank_fast.init": "effrank_fast.paper.sfli",
    "effrank_fast.demo": "effrank_fast.paper.demo",
    "effrank_fast.experiments": "effrank_fast.paper.experiments",
    "effrank_fast.ops.tracker": "effrank_fast.tracker",
    "effrank_fast.monitor.lightning": "effrank_fast.integrations.lightning",
}

_warned: set[str] = set()


def new_name(old: str) -> str | None:
    """The new dotted path of ``old`` (a moved module or a module inside a moved package)."""
    for prefix, target in MOVED.items():
        if old == prefix or old.startswith(prefix + "."):
            return target + old[len(prefix) :]
    return None


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(self.target)
        self._own_spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        module.__spec__ = self._own_spec  # the import system set the alias's spec; keep the module's own


class _AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        new = new_name(fullname)
        if new is None:
            return None
        if fullname not in _warned:
            _warned.add(fullname)
            with contextlib.suppress(DeprecationWarning):  # warnings as errors: the import still succeeds
                warnings.warn(
                    f"{fullname} moved to {new}; the old path goes in a later release", DeprecationWarning, stacklevel=2
                )
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(new), is_package=False)


def install() -> None:
    """Put the alias finder first on ``sys.meta_path`` (once), and keep ``effrank_fast.measures``.

    ``effrank_fast.measures`` (the 0.1 module of the measures) stays a documented path to
    :mod:`effrank_fast.rank`, without a warning. It is entered in ``sys.modules`` directly: through
    the finder the import system would also bind it as an attribute of the package, over the
    ``ef.measures`` function.
    """
    sys.modules.setdefault("effrank_fast.measures", importlib.import_module("effrank_fast.rank"))
    if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _AliasFinder())
