"""Library code for the SELECT data-curation benchmark (stages/ are thin CLIs over it)."""
__version__ = "0.1.0"
