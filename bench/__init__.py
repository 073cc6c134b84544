"""Benchmark of the running system against same-machine baselines: `python -m bench`."""
