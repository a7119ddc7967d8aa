"""The package version, importable from every layer (the package ``__init__`` is the top layer)."""

__version__ = "0.1.0"
