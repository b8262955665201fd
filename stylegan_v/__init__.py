"""stylegan-v: a notebook-first research workbench for continuous-time video generation."""
__version__ = "0.1.0"
