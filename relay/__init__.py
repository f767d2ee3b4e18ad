"""relay: a small, fast, trustworthy webhook relay."""

__version__ = "0.1.0"
