"""The every-step rank monitor: hooks, device-side accumulation, run files. See :class:`RankMonitor`.

Its typed options (:mod:`.config`): :class:`Probe`, :class:`Features`, :class:`Engine`,
:class:`RunLog`, :class:`Accumulate`; collapse alerts: :class:`CollapseAlert` (:mod:`.alerts`).
"""

from effrank_fast.monitor.alerts import CollapseAlert
from effrank_fast.monitor.config import Accumulate, Engine, Features, Probe, RunLog
from effrank_fast.monitor.history import read_csv, read_jsonl
from effrank_fast.monitor.monitor import RankMonitor

__all__ = [
    "Accumulate",
    "CollapseAlert",
    "Engine",
    "Features",
    "Probe",
    "RankMonitor",
    "RunLog",
    "read_csv",
    "read_jsonl",
]
