"""The paper's experiments (E1–E5 of ``docs/paper.md``) and their analysis.

``effrank-fast experiment e1|e2|e3|e4|e5|compare …`` runs them (:mod:`.cli`); each run folder is the
monitor's own (``effrank-fast report`` reads it) plus ``extras.jsonl`` and ``experiment.json``.
Nothing here is imported by ``import effrank_fast``.
"""
