"""widen: fixed-parameter-budget width experiments."""

__version__ = "0.1.0"
