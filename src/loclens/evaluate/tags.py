"""Localization categories of a QA, for the paper's localization analysis (its Table 2).

The release records them (issue 3: the ``anatomical`` / ``positioning`` tags and the rule that
fired). For a release written before that field existed, they are derived here from the
datasets' own question metadata with the same rules: a question about the presence or identity
of an anatomical structure is ``anatomical`` (VQA-RAD ``question_type`` ORGAN or PRES, SLAKE
``content_type`` Organ); a question about where something is is ``positioning`` (VQA-RAD POS,
SLAKE Position). A question can carry both tags, or none.
"""

from __future__ import annotations

#: The paper's two localization categories, in table order.
LOCALIZATION_CATEGORIES = ("anatomical", "positioning")

#: Source metadata label (upper-cased) -> category. VQA-RAD and SLAKE labels both appear here
#: because the release stores either dataset's label in ``question_type``.
METADATA_RULES = {
    "ORGAN": "anatomical",  # VQA-RAD ORGAN, SLAKE Organ
    "PRES": "anatomical",  # VQA-RAD presence
    "POS": "positioning",  # VQA-RAD
    "POSITION": "positioning",  # SLAKE Position
}

#: Field of a release QA that holds the tags, once the release carries them.
RELEASE_FIELD = "localization"


def localization_tags(qa: dict) -> list[str]:
    """The localization categories of a release QA: the release's own tags where present,
    else derived from ``question_type`` with ``METADATA_RULES``."""
    recorded = qa.get(RELEASE_FIELD)
    if recorded is not None:
        return [c for c in LOCALIZATION_CATEGORIES if c in set(recorded)]
    labels = {str(label).strip().upper() for label in qa.get("question_type") or []}
    found = {METADATA_RULES[label] for label in labels if label in METADATA_RULES}
    return [c for c in LOCALIZATION_CATEGORIES if c in found]
