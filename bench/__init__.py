"""Ingestion benchmark (issue 6): cost per message and cold start, ours beside the naive pattern.

Run with `make bench` (`python -m bench`); results go to bench/results/latest.json and are compared with
bench/baseline.json. Not part of the test suite: it measures, it does not assert (targets print PASS/FAIL).
"""
