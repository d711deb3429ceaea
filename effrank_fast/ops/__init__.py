"""Operator families: one package per op, each with a pure-PyTorch ``<op>_ref`` beside its fast paths.

Each ``ops/<op>/README.md`` gives the op's math, backends (one vocabulary: ``torch``, ``native``,
``triton``; :mod:`effrank_fast.ops.backends`), kernel, reference, test and benchmark.
"""
