"""Every ```python block of README.md and docs/*.md runs as written (in a fresh interpreter, in a scratch folder)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from effrank_fast.ops import native

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCKS = [
    (page.relative_to(ROOT).as_posix(), code)
    for page in PAGES
    for code in re.findall(r"^```python\n(.*?)^```", page.read_text(), flags=re.S | re.M)
]


def test_the_readme_has_python_snippets():
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=[f"{page}-{i}" for i, (page, _) in enumerate(BLOCKS)])
def test_readme_snippet_runs(index, tmp_path):
    page, code = BLOCKS[index]
    if "ops.inertia" in code and not native.HAS_NATIVE:
        pytest.skip(f"needs the compiled extension: {native.NATIVE_ERROR}")
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, f"{page} snippet {index} failed:\n{code}\n{res.stderr}"
