"""Benchmarks for `make bench`; results go to bench/results/ (git-ignored)."""
