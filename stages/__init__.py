"""Thin DVC stage CLIs over the selectbench library."""
