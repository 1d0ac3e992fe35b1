"""The benchmark: `python -m tests.bench [--quick]`, see README.md."""
