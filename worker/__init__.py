"""complaints-worker: a UK communications provider's complaints handling over plain email."""

__version__ = "0.1.0"
