"""Benchmarks, each a module run with ``python -m bench.<name>``."""
