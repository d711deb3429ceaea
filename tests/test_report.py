"""``effrank-fast report`` on crafted, corrupt and hostile run folders: a warning naming the file
and line (the line skipped), or one line naming the file with exit code 2; never a traceback,
never a write through a planted symlink."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import pytest

from effrank_fast import cli, report, safe_io

EPS = [0.1, 0.01]
STEPS = 10


def _rows():
    """Two layers, ten steps: the rank of 'h2' steps up as the loss falls (an input, not an output)."""
    out = []
    for s in range(STEPS):
        for li, layer in enumerate(("h1", "h2")):
            r = 2 + li + (s >= 5)
            row = {"step": s, "layer": layer, "loss": 1.0 / (1 + s), "wall_time": 0.1 * s}
            row |= {"eps_rank@0.1": r, "eps_rank@0.01": r + 1, "entropy_rank": r + 0.5, "nonfinite": False}
            out.append(row | {"error": ""})
    return out


def _folder(tmp_path: Path, lines: list[str] | None = None, meta: object = None) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    lines = [json.dumps(r) for r in _rows()] if lines is None else lines
    (run / "history.jsonl").write_text("".join(line + "\n" for line in lines))
    meta = (
        {"eps": EPS, "layers": {"h1": {}, "h2": {}}, "every": 1, "steps": STEPS, "closed": True}
        if meta is None
        else meta
    )
    (run / "meta.json").write_text(meta if isinstance(meta, str) else json.dumps(meta))
    return run


def _report(run: Path, capsys, *extra: str) -> tuple[int, str, list[str]]:
    """(exit code, stderr, warning messages) of ``effrank-fast report RUN --no-plots --json``."""
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        rc = cli.main(["report", str(run), "--no-plots", "--json", *extra])
    err = capsys.readouterr().err
    return rc, err, [str(w.message) for w in rec]


def _summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def _good_lines():
    return [json.dumps(r) for r in _rows()]


@pytest.mark.parametrize(
    "bad, why",
    [
        ("[1, 2, 3]", "a JSON list"),
        ("42", "a JSON int"),
        ('{"layer": "h1", "loss": 1.0, "eps_rank@0.1": 3}', "'step'"),
        ('{"step": "3", "layer": "h1", "eps_rank@0.1": 3}', "'step' = '3'"),
        ('{"step": 3.5, "layer": "h1", "eps_rank@0.1": 3}', "'step' = 3.5"),
        ('{"step": 3, "layer": ["h1"], "eps_rank@0.1": 3}', "'layer'"),
        ('{"step": 3, "layer": "h1", "eps_rank@0.1": "many"}', "not a number"),
        ('{"step": 3, "layer": "h1", "nonfinite": "no"}', "'nonfinite'"),
        ('{"step": 3, "lay', "not valid JSON"),
        ("[" * 100_000 + "]" * 100_000, "RecursionError"),
        ('{"step": 99999999999999999999999, "layer": "h1"}', "not an int in [0, 2**62)"),
    ],
)
def test_a_malformed_history_line_is_a_warning_naming_file_and_line(tmp_path, capsys, bad, why):
    lines = _good_lines()
    lines.insert(7, bad)  # line 8
    run = _folder(tmp_path, lines)
    rc, err, msgs = _report(run, capsys)
    assert rc == 0, err
    named = [m for m in msgs if "history.jsonl: line 8:" in m]
    assert len(named) == 1 and why in named[0], msgs
    summary = _summary(run)
    assert summary["measured_steps"] == STEPS and summary["skipped_lines"] == 1
    assert summary["final_ranks"]["h2"]["0.1"] == 4  # the good rows are all there


@pytest.mark.parametrize(
    "meta, why",
    [
        ([1, 2], "a JSON list, not an object"),
        ('{"eps": [0.1,, 0.01]}', "line 1: not valid JSON"),
        ("{\n  'eps': 1}", "line 2: not valid JSON"),
        ({"eps": ["a", "b"], "steps": STEPS}, "'eps' = ['a', 'b'] is not usable"),
        ({"eps": EPS, "every": "often", "run": {"wall_time_s": "long"}}, "'every' = 'often'"),
    ],
)
def test_a_malformed_meta_json_is_a_warning_and_the_history_still_reports(tmp_path, capsys, meta, why):
    run = _folder(tmp_path, meta=meta)
    rc, err, msgs = _report(run, capsys)
    assert rc == 0, err
    assert any("meta.json" in m and why in m for m in msgs), msgs
    summary = _summary(run)
    assert summary["measured_steps"] == STEPS
    assert sorted(summary["eps"]) == sorted(EPS)  # from the columns when meta.json's are unusable


def test_an_eps_of_meta_json_that_no_row_holds_is_left_out(tmp_path, capsys):
    run = _folder(tmp_path, meta={"eps": [0.5, 0.1, 0.01], "steps": STEPS})
    rc, err, msgs = _report(run, capsys)
    assert rc == 0, err
    assert any("no eps_rank column for ε = [0.5]" in m for m in msgs), msgs
    assert _summary(run)["eps"] == EPS


def test_duplicated_rows_are_reported_and_counted_once(tmp_path, capsys):
    lines = _good_lines()
    run = _folder(tmp_path, lines + lines[4:10])  # steps 2, 3, 4 of both layers written twice
    rc, err, msgs = _report(run, capsys)
    assert rc == 0, err
    assert any("line 21: step 2 of layer 'h1' appears again" in m for m in msgs), msgs
    summary = _summary(run)
    assert summary["measured_steps"] == STEPS and summary["duplicate_rows"] == 6
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli.main(["report", str(run), "--no-plots"]) == 0
    assert "6 duplicated (step, layer) row(s), each counted once" in capsys.readouterr().out


@pytest.mark.parametrize(
    "lines, why",
    [
        (["[1]", "{}", '{"step": -1, "layer": "h1"}'], "holds no complete rows"),
        (['{"step": 0, "layer": "h1", "loss": 1.0}'], "no eps_rank@<ε> column"),
    ],
)
def test_a_folder_with_nothing_to_summarise_is_one_line_and_exit_code_2(tmp_path, capsys, lines, why):
    run = _folder(tmp_path, lines)
    rc, err, _ = _report(run, capsys)
    assert rc == 2
    assert err.count("\n") == 1 and why in err and str(run / "history.jsonl") in err


def test_an_unwritable_run_folder_is_one_line_and_exit_code_2(tmp_path, capsys, monkeypatch):
    run = _folder(tmp_path)

    def denied(path, write):  # what a read-only folder does for a non-root user (CI runs as root)
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(safe_io, "replace_with", denied)
    rc, err, _ = _report(run, capsys)
    assert rc == 2 and err.count("\n") == 1
    assert str(run / "summary.json") in err and "Permission denied" in err


@pytest.mark.skipif(not hasattr(os, "geteuid"), reason="POSIX permissions")
def test_a_really_read_only_run_folder_is_exit_code_2(capsys):
    base = Path(tempfile.mkdtemp())
    try:
        os.chmod(base, 0o755)
        run = _folder(base)
        os.chmod(run, 0o555)
        root = os.geteuid() == 0  # root ignores permissions: drop to 'nobody' for the call
        if root:
            os.seteuid(65534)
        try:
            rc, err, _ = _report(run, capsys)
        finally:
            if root:
                os.seteuid(0)
        assert rc == 2 and err.count("\n") == 1 and "Permission denied" in err, err
        assert f"{run / 'summary.json'}: cannot write" in err
    finally:
        os.chmod(base / "run", 0o755)
        shutil.rmtree(base, ignore_errors=True)


def test_no_traceback_even_when_warnings_are_errors(tmp_path, capsys):
    lines = _good_lines()
    lines[3] = "[]"
    run = _folder(tmp_path, lines + lines[:2], meta=[1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cli.main(["report", str(run), "--no-plots"]) == 0  # the warnings go to the log instead
    assert _summary(run)["measured_steps"] == STEPS - 1  # line 4 was step 1 of the last layer


def test_report_never_writes_through_a_planted_symlink(tmp_path, capsys):
    run = _folder(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    targets = {}
    for name in ("summary.json", "staircase.png", "layers.svg", ".summary.json.tmp"):
        t = outside / name
        t.write_text("precious")
        (run / name).symlink_to(t)
        targets[name] = t
    assert cli.main(["report", str(run)]) == 0, capsys.readouterr().err
    for name, t in targets.items():
        assert t.read_text() == "precious", name  # the link's target is untouched
    for name in ("summary.json", "staircase.png", "layers.svg"):
        assert not (run / name).is_symlink() and (run / name).stat().st_size > 0
    assert _summary(run)["measured_steps"] == STEPS
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp") and not p.is_symlink()]  # no leftovers


def test_write_errors_of_the_monitor_are_named_in_the_summary(tmp_path, capsys):
    failure = {"error": "history.jsonl: PermissionError: denied", "first_step": 4, "last_step": 7, "rows": 8}
    run = _folder(tmp_path, meta={"eps": EPS, "steps": STEPS, "write_errors": [failure | {"written_at_step": 9}]})
    assert cli.main(["report", str(run), "--no-plots"]) == 0
    out = capsys.readouterr().out
    assert "file write failed (steps 4–7, 8 rows; written late, at step 9): history.jsonl: PermissionError" in out
    assert _summary(run)["write_errors"][0]["first_step"] == 4


def test_report_function_raises_report_error_naming_the_file(tmp_path):
    run = _folder(tmp_path, ["[1]"])
    with pytest.raises(report.ReportError, match=str(run / "history.jsonl")), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report.report(run, plots=False)
    assert not os.path.exists(run / "summary.json")
