"""Source readers: each maps one published dataset layout to the normalised record schema.

A reader returns every input QA record either inside an image record or as a reject with a
reason; nothing is dropped silently. ``SOURCES`` says, per source, what the rest of the
pipeline needs to know about it: which files an ingest depends on, which dataset config keys
the reader takes, which question-type vocabulary its metadata uses (for localization tags,
``loclens.localization``) and where ``loclens download`` fetches it from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .base import IngestResult, Reject, SourceError
from .hf_parquet import input_files as hf_parquet_inputs
from .hf_parquet import read_hf_parquet
from .sample import read_sample
from .slake import input_files as slake_inputs
from .slake import read_slake
from .vqa_rad import JSON_NAME, read_vqa_rad


@dataclass(frozen=True)
class Source:
    read: Callable[..., IngestResult]
    #: Files under the dataset root that an ingest depends on (those that exist).
    inputs: Callable[[Path], list[Path]]
    #: Dataset config keys passed to the reader (``unpack_dir`` is supplied by the ingest stage).
    options: tuple[str, ...] = ()
    #: Vocabulary of the source's question-type metadata; None = keyword rules only.
    vocabulary: str | None = None
    #: ``loclens download`` origin; None = not downloadable by name.
    download: str | None = None


def _vqa_rad_inputs(root: Path) -> list[Path]:
    return [p for p in (root / JSON_NAME,) if p.is_file()]


SOURCES: dict[str, Source] = {
    "vqa_rad": Source(read_vqa_rad, _vqa_rad_inputs, vocabulary="vqa_rad", download="vqa_rad"),
    "sample": Source(read_sample, _vqa_rad_inputs, vocabulary="vqa_rad"),
    "slake": Source(read_slake, slake_inputs, options=("unpack_dir",), vocabulary="slake", download="slake"),
    "hf_parquet": Source(read_hf_parquet, hf_parquet_inputs, options=("unpack_dir", "columns")),
}


def source_spec(source: str) -> Source:
    try:
        return SOURCES[source]
    except KeyError:
        raise SourceError(f"unknown source {source!r}; known: {sorted(SOURCES)}") from None


def read_source(source: str, root, dataset: str, **options) -> IngestResult:
    spec = source_spec(source)
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise SourceError(f"source {source!r} takes no option(s) {unknown}; it takes {list(spec.options) or 'none'}")
    return spec.read(root, dataset=dataset, **options)


__all__ = ["SOURCES", "Source", "IngestResult", "Reject", "SourceError", "read_source", "source_spec"]
