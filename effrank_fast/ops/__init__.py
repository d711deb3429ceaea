"""Operator families: one package per op, each with a pure-PyTorch ``<op>_ref`` beside its fast paths."""
