"""Source readers: each maps one published dataset layout to the normalised record schema.

A reader returns every input QA record either inside an image record or as a reject with a
reason; nothing is dropped silently.
"""

from __future__ import annotations

from .base import IngestResult, Reject, SourceError
from .sample import read_sample
from .vqa_rad import read_vqa_rad

READERS = {
    "vqa_rad": read_vqa_rad,
    "sample": read_sample,
}


def read_source(source: str, root, dataset: str, **options) -> IngestResult:
    try:
        reader = READERS[source]
    except KeyError:
        raise SourceError(f"unknown source {source!r}; known: {sorted(READERS)}") from None
    return reader(root, dataset=dataset, **options)


__all__ = ["READERS", "IngestResult", "Reject", "SourceError", "read_source"]
