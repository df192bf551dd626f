"""loclens: localization-lens datasets for medical vision-language models.

``loclens.load(path_or_repo, dataset=..., split=..., streaming=False)`` returns the rows of a
release, local or on the Hugging Face Hub (see :mod:`loclens.loading`).
"""

__version__ = "0.1.0"

from .loading import load  # noqa: E402  (cheap: heavy imports happen on call)

__all__ = ["load", "__version__"]
