"""loclens: localization-lens datasets for medical vision-language models."""

__version__ = "0.1.0"
