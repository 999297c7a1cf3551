"""The bottom floor: primitives every stage shares (canonical JSON, JSONL, atomic writes,
the error root, fast models). Nothing here imports anything above it."""
