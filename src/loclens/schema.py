"""The one definition of loclens' record and release schemas.

Everything that writes or reads a release (the shard writer, the validator, the dataset card,
the training reader) takes column names and types from here.
"""

from __future__ import annotations

import json

import pyarrow as pa
from datasets import Features, Image, List, Value

#: Segmenter families that produce lens views. ``sam`` is SAM in automatic mode (coarse,
#: generic); ``medsam`` is MedSAM / LiteMedSAM prompted with boxes (precise, medical).
SEGMENTERS = ("sam", "medsam")
#: Blended view kinds made per segmenter.
BLEND_KINDS = ("unicolor", "multicolor")
#: The masked view: the original with everything outside the mask union set to 0.
MASKED_VIEW = "masked"
#: Mask sources that can feed the masked view, in the order the paper prefers them.
MASK_SOURCES = ("expert",) + SEGMENTERS

BLEND_VIEW_COLUMNS = tuple(f"{s}_{k}" for s in SEGMENTERS for k in BLEND_KINDS)
VIEW_COLUMNS = BLEND_VIEW_COLUMNS + (MASKED_VIEW,)
IMAGE_COLUMNS = ("image",) + VIEW_COLUMNS

#: QA answer types after normalisation (sources spell them OPEN, "CLOSED ", ...).
ANSWER_TYPES = ("open", "closed")
#: The paper's localization question categories (tags in the ``qa`` column).
LOCALIZATION_TAGS = ("anatomical", "positioning")

RLE_FEATURE = {"size": List(Value("int32")), "counts": Value("string")}

MASK_FEATURE = {
    "segmenter": Value("string"),  # sam | medsam | expert
    "label": Value("string"),  # organ name or a prompt-derived label
    "prompt_source": Value("string"),  # which prompt source produced the box (null for SAM auto)
    "rle": RLE_FEATURE,  # COCO RLE (pycocotools), size = [height, width]
    "bbox": List(Value("float32")),  # [x, y, w, h] of the mask, absolute pixels
    "prompt_box": List(Value("float32")),  # [x0, y0, x1, y1] prompt in absolute pixels (null if none)
    "score": Value("float32"),  # model's predicted IoU / stability score
    "area": Value("int64"),
    "model": Value("string"),
    "checkpoint_sha256": Value("string"),  # expert masks: sha256 of the annotation file (mask.png)
}

QA_FEATURE = {
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

SEGMENTER_PROVENANCE = {
    "segmenter": Value("string"),
    "backend": Value("string"),
    "model": Value("string"),
    "checkpoint": Value("string"),
    "checkpoint_sha256": Value("string"),
    "prompt_sources": List(Value("string")),
}

PROVENANCE_FEATURE = {
    "image_sha256": Value("string"),
    "config_hash": Value("string"),
    "seed": Value("int64"),
    "loclens_version": Value("string"),
    "segmenters": List(SEGMENTER_PROVENANCE),
    "masked_from": Value("string"),
}

FEATURES = Features(
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
        "masks": List(MASK_FEATURE),
        "qa": List(QA_FEATURE),
        "provenance": PROVENANCE_FEATURE,
    }
)

#: Columns stored without compression or dictionary: already-compressed image bytes.
UNCOMPRESSED_COLUMNS = IMAGE_COLUMNS


def arrow_schema() -> pa.Schema:
    """Arrow schema of a release shard, with the ``datasets.Features`` in its metadata so that
    ``datasets`` and the Hub viewer decode the image columns as images."""
    meta = {"huggingface": json.dumps({"info": {"features": FEATURES.to_dict()}})}
    return FEATURES.arrow_schema.with_metadata(meta)


#: Columns of the segmentation cache (one file per segmenter and work shard).
MASKS_CACHE_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("masks", Features({"m": List(MASK_FEATURE)}).arrow_schema.field("m").type),
        ("encoder_seconds", pa.float64()),
        ("decoder_seconds", pa.float64()),
    ]
)
