"""The commands that compose the layers (console scripts and `python -m` entry points)."""
