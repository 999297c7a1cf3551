"""batchsafe: declarative, exact and re-checkable LLM serving-safety experiments."""

__version__ = "0.1.0"
