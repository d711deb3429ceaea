"""The old module paths of the flat layout (``effrank_fast/_aliases.py``): each one imports, is the
module at its new home, warns once, and still imports when warnings are errors.

Every check runs in a fresh interpreter: the finder warns once per process, and the rest of the
suite may already have imported an old path.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# modules inside moved packages, beside the moved paths themselves
SUBMODULES = {
    "effrank_fast.ops.tracker.slq": "effrank_fast.tracker.slq",
    "effrank_fast.experiments.runner": "effrank_fast.paper.experiments.runner",
}


def _run(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )


def test_every_old_path_is_the_new_module_and_warns_once():
    res = _run(
        f"""
        import importlib, warnings
        import effrank_fast
        from effrank_fast._aliases import MOVED
        pairs = dict(MOVED, **{SUBMODULES!r})
        assert len(pairs) >= 16, pairs
        for old, new in pairs.items():
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                first = importlib.import_module(old)
                again = importlib.import_module(old)
            mine = [w for w in caught if issubclass(w.category, DeprecationWarning) and old in str(w.message)]
            assert len(mine) == 1, (old, [str(w.message) for w in caught])
            assert new in str(mine[0].message), (old, str(mine[0].message))
            assert first is again is importlib.import_module(new), old
            assert first.__name__ == new and first.__spec__.name == new, (old, first.__name__)
        print("ok", len(pairs))
        """
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.startswith("ok")


def test_old_paths_import_when_warnings_are_errors():
    res = _run(
        f"""
        import importlib, warnings
        warnings.simplefilter("error")
        import effrank_fast
        from effrank_fast._aliases import MOVED
        for old, new in dict(MOVED, **{SUBMODULES!r}).items():
            assert importlib.import_module(old) is importlib.import_module(new), old
        from effrank_fast import spectral  # the 0.1 attribute and module name
        assert spectral is importlib.import_module("effrank_fast.rank.formulas")
        # a module path only: the attribute ef.measures stays the measures() function
        assert importlib.import_module("effrank_fast.measures") is importlib.import_module("effrank_fast.rank")
        print("ok")
        """
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip() == "ok"
