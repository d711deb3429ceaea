"""`effrank-fast info` lists the optional integrations with the versions their packages report."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

from effrank_fast import info


def test_info_lists_each_integration_with_its_installed_version():
    res = subprocess.run(
        [sys.executable, "-m", "effrank_fast.cli", "info"], capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr
    section = res.stdout.split("optional integrations:\n", 1)[1].splitlines()
    names = ["transformers", "lightning", "wandb", "torchmetrics", "tensorboard"]
    assert [line.split()[0] for line in section[: len(names)]] == names
    for line in section[: len(names)]:
        dist = line.split()[0]
        try:
            expected = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            expected = "not installed"
        assert line.split()[1:3][0] == expected.split()[0], line


def test_a_missing_package_is_reported_as_such(monkeypatch):
    real = importlib.metadata.version

    def version(dist):
        if dist == "wandb":
            raise importlib.metadata.PackageNotFoundError(dist)
        return real(dist)

    monkeypatch.setattr(importlib.metadata, "version", version)
    assert info.integrations()["wandb"] is None
    assert "wandb        not installed" in info.report()
