"""Stage 6: recheck a bundle (verify) and compare two bundles (diff)."""
