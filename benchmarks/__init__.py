"""Benchmarks: the project's training throughput and memory next to plain PyTorch (not tests).

Run each script as a module from the repository root, e.g. `python -m benchmarks.suite --small`;
results go to `benchmarks/results/` (`output.py`). See README.md in this folder.
"""
