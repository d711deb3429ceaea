"""The science of "ε-rank and the Staircase Phenomenon" (Yang, Zhao, Zhu, arXiv:2412.05144).

- :mod:`.staircase`: plateaus, jumps and the rank–loss correlation of a logged run;
- :mod:`.lower_bound`: the paper's loss lower bound from the ε-rank;
- :mod:`.sfli`: the staircase-free linear initialisation (SFLI);
- :mod:`.demo`: the PINN staircase demo behind ``effrank-fast demo``;
- :mod:`.experiments`: E1–E5 as commands (``effrank-fast experiment``).

The definitions are in ``docs/paper.md``. Nothing here but :mod:`.staircase` is imported by
``import effrank_fast``.
"""
