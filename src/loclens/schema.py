"""The one definition of loclens' record and release schemas.

Everything that writes or reads a release (the shard writer, the validator, the dataset card,
the training reader) takes column names and types from here.
"""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: the workflow reads this module without pyarrow's cost
    import pyarrow as pa

#: Segmenter families that produce lens views. ``sam`` is SAM in automatic mode (coarse,
#: generic); ``medsam`` is MedSAM / LiteMedSAM prompted with boxes (precise, medical).
SEGMENTERS = ("sam", "medsam")
#: Blended view kinds made per segmenter.
BLEND_KINDS = ("unicolor", "multicolor")
#: The masked view: the original with everything outside the mask union set to 0.
MASKED_VIEW = "masked"
#: Mask sources that can feed the masked view, in the order the paper prefers them.
MASK_SOURCES = ("expert",) + SEGMENTERS
#: How the paper's tables name each mask source, and its colour in figures (Okabe-Ito palette,
#: distinguishable with colour-vision deficiencies).
SOURCE_LABELS = {"sam": "SAM", "medsam": "MedSAM", "expert": "Mask"}
SOURCE_COLOURS = {"medsam": "#E69F00", "sam": "#56B4E9", "expert": "#009E73"}

BLEND_VIEW_COLUMNS = tuple(f"{s}_{k}" for s in SEGMENTERS for k in BLEND_KINDS)
VIEW_COLUMNS = BLEND_VIEW_COLUMNS + (MASKED_VIEW,)
IMAGE_COLUMNS = ("image",) + VIEW_COLUMNS

#: QA answer types after normalisation (sources spell them OPEN, "CLOSED ", ...).
ANSWER_TYPES = ("open", "closed")
#: The paper's localization question categories (tags in the ``qa`` column).
LOCALIZATION_TAGS = ("anatomical", "positioning")


@functools.cache
def _schemas() -> dict:
    """The release's ``datasets.Features`` and the mask cache's Arrow schema, built on first use:
    importing ``datasets`` takes about a second, and every Snakemake start and most jobs import
    this module for the constants above only."""
    import pyarrow as pa
    from datasets import Features, Image, List, Value

    rle = {"size": List(Value("int32")), "counts": Value("string")}

    mask = {
        "segmenter": Value("string"),  # sam | medsam | expert
        "label": Value("string"),  # organ name or a prompt-derived label
        "prompt_source": Value("string"),  # which prompt source produced the box (null for SAM auto)
        "rle": rle,  # COCO RLE (pycocotools), size = [height, width]
        "bbox": List(Value("float32")),  # [x, y, w, h] of the mask, absolute pixels
        "prompt_box": List(Value("float32")),  # [x0, y0, x1, y1] prompt in absolute pixels (null if none)
        "score": Value("float32"),  # model's predicted IoU / stability score
        "area": Value("int64"),
        "model": Value("string"),
        "checkpoint_sha256": Value("string"),  # expert masks: sha256 of the annotation file (mask.png)
    }

    qa = {
        "qid": Value("string"),
        "question": Value("string"),
        "answer": Value("string"),
        "answer_type": Value("string"),  # open | closed (each dataset's official label)
        "question_type": List(Value("string")),
        "lang": Value("string"),
        "linked_id": Value("string"),  # groups paraphrases of one question (VQA-RAD qid_linked_id)
        "extra": Value("string"),  # JSON object of every other source field, verbatim
        "localization": List(Value("string")),  # subset of LOCALIZATION_TAGS (loclens.localization)
        "localization_rule": Value("string"),  # the metadata or keyword rule that set them (null: none)
    }

    segmenter_provenance = {
        "segmenter": Value("string"),
        "backend": Value("string"),
        "model": Value("string"),
        "checkpoint": Value("string"),
        "checkpoint_sha256": Value("string"),
        "prompt_sources": List(Value("string")),
    }

    provenance = {
        "image_sha256": Value("string"),
        "config_hash": Value("string"),
        "seed": Value("int64"),
        "loclens_version": Value("string"),
        "segmenters": List(segmenter_provenance),
        "masked_from": Value("string"),
    }

    features = Features(
        {
            "image_id": Value("string"),
            "dataset": Value("string"),
            "split": Value("string"),
            "source_file": Value("string"),
            "modality": Value("string"),
            "body_region": Value("string"),
            "width": Value("int32"),
            "height": Value("int32"),
            "image": Image(),
            **{col: Image() for col in VIEW_COLUMNS},
            "alpha": {s: Value("float32") for s in SEGMENTERS},
            "masks": List(mask),
            "qa": List(qa),
            "provenance": provenance,
        }
    )

    #: Columns of the segmentation cache (one file per segmenter and work shard).
    masks_cache = pa.schema(
        [
            ("image_id", pa.string()),
            ("masks", Features({"m": List(mask)}).arrow_schema.field("m").type),
            ("encoder_seconds", pa.float64()),
            ("decoder_seconds", pa.float64()),
        ]
    )
    return {"FEATURES": features, "MASKS_CACHE_SCHEMA": masks_cache}


def __getattr__(name: str):
    """``FEATURES`` (the release's columns and types) and ``MASKS_CACHE_SCHEMA``, from
    ``_schemas``."""
    if name in ("FEATURES", "MASKS_CACHE_SCHEMA"):
        return _schemas()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: Columns stored without compression or dictionary: already-compressed image bytes.
UNCOMPRESSED_COLUMNS = IMAGE_COLUMNS


def arrow_schema() -> pa.Schema:
    """Arrow schema of a release shard, with the ``datasets.Features`` in its metadata so that
    ``datasets`` and the Hub viewer decode the image columns as images."""
    features = _schemas()["FEATURES"]
    meta = {"huggingface": json.dumps({"info": {"features": features.to_dict()}})}
    return features.arrow_schema.with_metadata(meta)
