"""MATS: audio language models trained on text alone."""

__version__ = "0.1.0"
