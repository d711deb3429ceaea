"""The monitor's promises under faults: step() and close() never raise (even when warnings are
errors), no row is lost (odd losses, NaN activations, failed writes, a vanished folder), every
file is written atomically or appended without following a symlink, and check=False on
non-finite data gives NaN measures and uncertified counts."""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from effrank_fast import RankMonitor, cli, rank, safe_io
from effrank_fast.monitor import RunLog, read_csv, read_jsonl


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3))


def _monitor(model=None, log_dir=None, keep_history: bool | int = True):
    torch.manual_seed(1)
    log = RunLog(dir=log_dir, tensorboard=False, flush_every=2, keep_history=keep_history)
    return RankMonitor(model or _model(), "all_hidden", [1e-3], probe=torch.randn(32, 2), log=log)


def _steps_of(rows, layer="hidden1"):
    return [r["step"] for r in rows if r["layer"] == layer]


class _BadReal(float):
    """A float whose conversion fails: what a broken user type may do."""

    def __float__(self):
        raise ValueError("no float for you")


def test_step_and_close_never_raise_and_keep_every_row_when_warnings_are_errors():
    model = _model()
    mon = _monitor(model)
    w0 = model[0].weight.detach().clone()
    losses = [1.0, "not-a-number", 10**400, -(10**400), _BadReal(2.0), 0.5, 0.25, 0.125]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for s, loss in enumerate(losses):
            with torch.no_grad():  # NaN activations at steps 5 and 6
                model[0].weight.copy_(torch.full_like(w0, math.nan) if s in (5, 6) else w0)
            mon.step(loss=loss, step=s - 1 if s == 7 else None)  # step 7 asks for a used number
        mon.close()
        mon.step(loss=1.0)  # after close: ignored, no exception
        mon.close()
    rows = mon.history
    assert _steps_of(rows) == list(range(8)) and _steps_of(rows, "hidden2") == list(range(8))
    loss = [r["loss"] for r in rows if r["layer"] == "hidden1"]
    assert loss[0] == 1.0 and math.isnan(loss[1]) and loss[2] == math.inf and loss[3] == -math.inf
    assert math.isnan(loss[4]) and loss[5:] == [0.5, 0.25, 0.125]
    for r in rows:
        bad = r["step"] in (5, 6)
        assert r["nonfinite"] == bad and math.isnan(r["eps_rank@0.001"]) == bad, r


def test_an_internal_failure_keeps_the_row_with_its_error(monkeypatch):
    mon = _monitor()
    real = mon._measure_step

    def broken(s, loss):
        if s == 2:
            raise RuntimeError("boom")
        real(s, loss)

    monkeypatch.setattr(mon, "_measure_step", broken)
    real_rows = type(mon._records)._rows if mon._records is not None else None
    assert real_rows is not None

    def read_back(self, steps):  # reading step 4's results back fails (a device error, say)
        if any(st.step == 4 and st.values is not None for st in steps):
            raise RuntimeError("device lost")
        return real_rows(self, steps)

    monkeypatch.setattr(type(mon._records), "_rows", read_back)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for s in range(6):
            mon.step(loss=float(s))
        mon.close()
    rows = mon.history
    assert _steps_of(rows) == list(range(6))
    errors = {r["step"]: r["error"] for r in rows if r["layer"] == "hidden1"}
    assert errors[2] == "RuntimeError: boom" and "device lost" in errors[4]
    assert all(not errors[s] for s in (0, 1, 3, 5))
    assert all(math.isnan(r["eps_rank@0.001"]) == (r["step"] in (2, 4)) for r in rows)


def _denied(*args, **kw):
    raise PermissionError(errno.EACCES, "Permission denied (simulated)")


def _check_files(run: Path, steps: list[int]):
    """Every row once, in step order, in both history files (and no broken line)."""
    for rows in (read_jsonl(run / "history.jsonl"), read_csv(run / "history.csv")):
        assert _steps_of(rows) == steps and _steps_of(rows, "hidden2") == steps
        assert [r["step"] for r in rows] == sorted(r["step"] for r in rows)


def test_rows_of_an_outage_reach_the_files_at_the_next_flush(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    mon = _monitor(log_dir=run)
    real_write = os.write

    def half_then_fail(fd, data):  # a full disk: a short write, then ENOSPC
        if len(data) > 16:
            return real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device (simulated)")

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for s in range(12):
            if s == 4:
                monkeypatch.setattr(safe_io, "append_bytes", _denied)
                monkeypatch.setattr(safe_io, "replace_with", _denied)
            if s == 6:
                monkeypatch.undo()
                monkeypatch.setattr(os, "write", half_then_fail)
            if s == 8:
                monkeypatch.undo()
            mon.step(loss=float(s))
        mon.close()
    _check_files(run, list(range(12)))
    meta = json.loads((run / "meta.json").read_text())
    (failure,) = meta["write_errors"]  # one outage, steps 4-7, written at the flush of step 9
    assert "PermissionError" in failure["error"]
    assert (failure["first_step"], failure["last_step"], failure["written_at_step"]) == (4, 7, 9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cli.main(["report", str(run), "--no-plots"]) == 0
    assert "file write failed (steps 4–7, 8 rows; written late, at step 9)" in capsys.readouterr().out


@contextlib.contextmanager
def _unprivileged():
    """Run as 'nobody' (root ignores file permissions; CI runs as root)."""
    if os.geteuid() != 0:
        yield
        return
    os.setegid(65534)
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


@pytest.mark.skipif(not hasattr(os, "geteuid"), reason="POSIX permissions")
def test_a_read_only_folder_for_a_while_loses_no_row():
    base = Path(tempfile.mkdtemp())
    try:
        os.chmod(base, 0o777)
        run = base / "run"
        warm = _monitor(log_dir=base / "warm")  # every lazy import done before dropping privileges
        warm.step(loss=1.0)
        warm.close()
        with _unprivileged(), warnings.catch_warnings():
            warnings.simplefilter("error")
            mon = _monitor(log_dir=run)
            for s in range(12):
                if s in (4, 8):  # read-only folder and files from step 4 to 7
                    for f in run.iterdir():
                        os.chmod(f, 0o444 if s == 4 else 0o644)
                    os.chmod(run, 0o555 if s == 4 else 0o755)
                mon.step(loss=float(s))
            mon.close()
        _check_files(run, list(range(12)))
        (failure,) = json.loads((run / "meta.json").read_text())["write_errors"]
        assert "PermissionError" in failure["error"] and failure["first_step"] == 4
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("keep", [True, False])
def test_a_vanished_log_folder_is_recreated(tmp_path, keep):
    run = tmp_path / "run"
    mon = _monitor(log_dir=run, keep_history=keep)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for s in range(10):
            if s == 6:
                shutil.rmtree(run)
            mon.step(loss=float(s))
        mon.close()
    # with the history in memory, the rows the folder held are written again
    _check_files(run, list(range(10)) if keep else [6, 7, 8, 9])
    (failure,) = json.loads((run / "meta.json").read_text())["write_errors"]
    assert "vanished and was recreated" in failure["error"] and failure["first_step"] == 6


def test_symlinks_planted_in_the_run_folder_are_never_followed(tmp_path):
    run = tmp_path / "run"
    outside = tmp_path / "outside"
    outside.mkdir()
    mon = _monitor(log_dir=run)
    for s in range(2):
        mon.step(loss=float(s))  # the first flush creates the files
    for name in ("history.csv", "meta.json", ".meta.json.tmp"):
        (outside / name).write_text("precious")
        (run / name).unlink(missing_ok=True)
        (run / name).symlink_to(outside / name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for s in range(2, 6):
            mon.step(loss=float(s))
        mon.close()
    assert all((outside / n).read_text() == "precious" for n in ("history.csv", "meta.json", ".meta.json.tmp"))
    assert _steps_of(read_jsonl(run / "history.jsonl")) == list(range(6))
    meta = json.loads((run / "meta.json").read_text())  # replaced by a file, not written through
    assert not (run / "meta.json").is_symlink() and meta["closed"] is True
    assert "history.csv" in meta["write_errors"][0]["error"]  # the append refused the link (ELOOP)


def test_keep_history_bounds_the_rows_in_memory(tmp_path):
    run = tmp_path / "run"
    mon = _monitor(log_dir=run, keep_history=5)
    for s in range(9):
        mon.step(loss=float(s))
    mon.close()
    on_disk = read_jsonl(run / "history.jsonl")
    assert len(on_disk) == 18 and [r["step"] for r in mon.history] == [r["step"] for r in on_disk[-5:]]
    with pytest.raises(ValueError, match="keep_history"):
        RunLog(keep_history=-1)


def test_append_bytes_never_follows_a_link_and_cuts_back_a_failed_write(tmp_path, monkeypatch):
    p = tmp_path / "f.jsonl"
    p.write_bytes(b'{"a": 1}\n{"b"')  # an earlier write stopped mid-line
    safe_io.append_bytes(p, b'{"c": 3}\n')
    assert p.read_bytes() == b'{"a": 1}\n{"b"\n{"c": 3}\n'  # the new row stays whole
    before = p.read_bytes()
    real_write = os.write

    def short_then_enospc(fd, data):
        if len(data) > 4:
            return real_write(fd, bytes(data[:4]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", short_then_enospc)
    with pytest.raises(OSError, match="No space left"):
        safe_io.append_bytes(p, b'{"d": 4}\n')
    monkeypatch.undo()
    assert p.read_bytes() == before  # cut back: a retry writes the row once
    (tmp_path / "target").write_text("precious")
    (tmp_path / "link").symlink_to(tmp_path / "target")
    with pytest.raises(OSError) as exc:
        safe_io.append_bytes(tmp_path / "link", b"x\n")
    assert exc.value.errno == errno.ELOOP and (tmp_path / "target").read_text() == "precious"


@pytest.mark.parametrize("method", ["eigh", "inertia"])
@pytest.mark.parametrize("case", ["nan", "inf", "negative weight"])
def test_check_false_on_non_finite_data_gives_nan_measures_and_uncertified_counts(method, case):
    torch.manual_seed(0)
    phi = torch.randn(24, 6, dtype=torch.float64)
    w = None
    if case == "negative weight":
        w = torch.ones(24, dtype=torch.float64)
        w[3] = -1.0
    else:
        phi[5, 2] = math.nan if case == "nan" else math.inf
    res = rank.eps_rank_result(phi, [1e-2, 1e-4], weights=w, method=method, check=False)
    assert not res.certified.any()
    m = rank.measures(phi, eps=[1e-2], weights=w, check=False)
    for v in (m.entropy_rank, m.stable_rank, m.participation_ratio, m.lambda_max):
        assert math.isnan(float(v))
    assert torch.isnan(rank.eigenvalues(phi, weights=w, check=False)).all()
