"""The benchmark suite: ``python -m bench``; :mod:`bench.generate` makes the rows."""
