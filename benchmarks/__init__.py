"""Benchmark scripts: `python -m benchmarks.<name>`; each prints a table with ratios."""
