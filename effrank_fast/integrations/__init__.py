"""Integrations with training stacks, one module per stack (each imports its own package):

- :mod:`effrank_fast.integrations.hf`: ``RankMonitorTrainerCallback`` for the Hugging Face ``Trainer``;
- :mod:`effrank_fast.integrations.lightning`: ``RankMonitorCallback`` for Lightning;
- :mod:`effrank_fast.integrations.wandb`: ``WandbSink``, the monitor's rows to ``wandb.log``;
- :mod:`effrank_fast.integrations.torchmetrics`: ``EffectiveRank``, a torchmetrics ``Metric``.

Collapse alerts (:class:`effrank_fast.monitor.alerts.CollapseAlert`) are an option of the monitor
and of both callbacks. Importing this package imports none of those packages.
"""
