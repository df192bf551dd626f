"""Localization categories of a released QA, for the paper's localization analysis (Table 2).

The release records them per QA (``qa.localization``, set at ingest by ``loclens.localization``
from the datasets' own question-type labels or documented keyword rules, with the rule that fired
in ``qa.localization_rule``). Evaluation reads them from there and never re-derives them, so the
analysis and the release always agree.
"""

from __future__ import annotations

from ..errors import LoclensError
from ..schema import LOCALIZATION_TAGS

#: The paper's two localization categories, in table order.
LOCALIZATION_CATEGORIES = LOCALIZATION_TAGS


class MissingTagsError(LoclensError, ValueError):
    """A release written before QA carried localization tags."""


def localization_tags(qa: dict) -> list[str]:
    """The localization categories of a release QA, in table order."""
    if "localization" not in qa:
        raise MissingTagsError(
            f"QA {qa.get('qid')!r} has no 'localization' field: the release predates localization tags; "
            "rebuild it with this loclens version"
        )
    recorded = set(qa["localization"] or [])
    return [c for c in LOCALIZATION_CATEGORIES if c in recorded]
