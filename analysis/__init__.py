"""Analysis stage: scorers, flip registry, statistics and report."""
