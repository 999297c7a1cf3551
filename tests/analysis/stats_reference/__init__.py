"""The phase analyses as they were before the issue-16 speed work (commit 5e338c7), kept verbatim
except for absolute imports of the unchanged primitives: tests/analysis/test_stats_fast.py
compares the vectorised blocks with them, byte for byte."""
