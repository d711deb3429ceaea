"""The every-step rank monitor: hooks, device-side accumulation, run files. See :class:`RankMonitor`."""

from effrank_fast.monitor.history import read_csv, read_jsonl
from effrank_fast.monitor.monitor import RankMonitor

__all__ = ["RankMonitor", "read_csv", "read_jsonl"]
