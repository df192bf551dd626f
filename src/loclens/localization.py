"""Localization tags: the paper's two localization categories for every QA pair.

- ``anatomical``: the question is about the presence or identity of an anatomical structure;
- ``positioning``: the question is about where something is.

Tags come from the dataset's own question-type metadata where the QA has any (authoritative),
and from keyword rules on the English question otherwise (sources without metadata, such as
generic Hub Parquet datasets). Each QA records the tags and the rule that fired
(``localization_rule``), null when none did:

- metadata: ``<vocabulary>:question_type=<label>[+<label>...]``, the labels (sorted) that map to a tag:
  VQA-RAD ``ORGAN`` (organ system) and ``PRES`` (presence) -> anatomical, ``POS`` -> positioning;
  SLAKE ``content_type`` ``Organ`` -> anatomical, ``Position`` -> positioning;
- keywords: ``keyword:<rule>[+<rule>...]`` with the rules of ``KEYWORD_RULES`` below, applied to
  English questions only (other languages get no keyword tags).
"""

from __future__ import annotations

import re
from collections import Counter

from .schema import LOCALIZATION_TAGS

ANATOMICAL, POSITIONING = LOCALIZATION_TAGS

#: Question-type label -> tag, per metadata vocabulary (sources.SOURCES names the vocabulary).
METADATA_TAGS: dict[str, dict[str, str]] = {
    "vqa_rad": {"ORGAN": ANATOMICAL, "PRES": ANATOMICAL, "POS": POSITIONING},
    "slake": {"Organ": ANATOMICAL, "Position": POSITIONING},
}

#: Anatomical structures named in radiology VQA questions (singular and plural forms).
ORGANS = (
    r"organs?|liver|lungs?|heart|kidneys?|brain|spleen|pancreas|(?:gall ?)?bladder|stomach|colon|bowels?|"
    r"intestines?|rectum|esophagus|oesophagus|trachea|bronch(?:us|i)|aorta|spine|spinal cord|vertebra[el]?|"
    r"ribs?|uterus|prostate|ventricles?|skull|femur|pelvis|diaphragm|duodenum|adrenals?|thyroid|eyes?|"
    r"orbits?|cerebellum|brain ?stem|sinus(?:es)?|mediastinum|lobes?|arter(?:y|ies)|veins?|muscles?|bones?"
)

#: (rule name, tag, pattern on the lower-cased question). ``presence`` and ``body-region``
#: mirror VQA-RAD's PRES and ORGAN labels (presence of a structure or finding, the organ system
#: shown), ``organ-presence`` asks whether a named structure is seen; the positioning rules ask
#: where, on which side or in which part something is.
KEYWORD_RULES: tuple[tuple[str, str, re.Pattern], ...] = (
    ("where", POSITIONING, re.compile(r"\bwhere\b")),
    (
        "which-part",
        POSITIONING,
        re.compile(
            r"\b(?:which|what) (?:\w+ )?(?:side|lobes?|lungs?|kidneys?|hemithorax|hemisphere|direction|part|region|"
            r"quadrant|segment|level|half|location|area|distribution)\b"
        ),
    ),
    (
        "left-right",
        POSITIONING,
        re.compile(
            r"\b(?:left|right)[- ]sided\b|\bon the (?:left|right)\b|\b(?:left|right) or (?:left|right)\b|\binside or outside\b"
        ),
    ),
    ("located", POSITIONING, re.compile(r"\b(?:locat(?:ed|ions?)|position(?:ed)?|situated|lateralit(?:y|ies))\b")),
    (
        "body-region",
        ANATOMICAL,
        re.compile(
            r"\b(?:organs?|organ system|anatom(?:y|ical|ic) (?:structure|region)|body part|part of the body|body region)\b"
            r"|\bis this (?:an? )?(?:image |film |scan |x-?ray |ct |mri )?(?:of )?(?:the )?(?:chest|abdomen|head|brain|pelvis|neck)\b"
        ),
    ),
    ("presence", ANATOMICAL, re.compile(r"^(?:is|are) there\b|\b(?:present|evidence of|visuali[sz]ed)\b")),
    (
        "organ-presence",
        ANATOMICAL,
        re.compile(
            rf"\b(?:is|are|does|do|can)\b.*\b(?:{ORGANS})\b.*\b(?:seen|visible|shown|included|identified|"
            rf"appear|depicted|imaged|in (?:this|the) (?:image|picture|scan|film))\b"
            rf"|\b(?:does|do) (?:this|the) (?:image|picture|scan|film) (?:show|contain|include|depict)\b.*\b(?:{ORGANS})\b"
        ),
    ),
)


def tag_question(
    question: str, question_type: list[str], lang: str, vocabulary: str | None
) -> tuple[list[str], str | None]:
    """(tags in LOCALIZATION_TAGS order, rule that fired or None)."""
    if vocabulary is not None and question_type:
        table = METADATA_TAGS[vocabulary]
        labels = sorted({t for t in question_type if t in table})  # one spelling per label set
        tags = {table[t] for t in labels}
        rule = f"{vocabulary}:question_type={'+'.join(labels)}" if labels else None
        return [t for t in LOCALIZATION_TAGS if t in tags], rule
    if lang != "en":
        return [], None
    text = question.lower()
    fired = [(name, tag) for name, tag, pattern in KEYWORD_RULES if pattern.search(text)]
    tags = {tag for _, tag in fired}
    rule = "keyword:" + "+".join(name for name, _ in fired) if fired else None
    return [t for t in LOCALIZATION_TAGS if t in tags], rule


def tag_qa(qa, vocabulary: str | None) -> None:
    """Set ``qa.localization`` and ``qa.localization_rule`` in place."""
    qa.localization, qa.localization_rule = tag_question(qa.question, qa.question_type, qa.lang, vocabulary)


def count_tags(rows: list[dict]) -> dict[str, dict[str, int]]:
    """Per split: QA pairs, each tag, and QA with any tag (from release-row dicts with ``qa``)."""
    counts: dict[str, Counter] = {}
    for row in rows:
        c = counts.setdefault(row["split"], Counter())
        for qa in row["qa"]:
            c["qa"] += 1
            for tag in qa["localization"]:
                c[tag] += 1
            c["localization"] += bool(qa["localization"])
    keys = ("qa", *LOCALIZATION_TAGS, "localization")
    return {split: {k: int(c[k]) for k in keys} for split, c in sorted(counts.items())}


def count_rules(rows: list[dict]) -> dict[str, int]:
    """How often each rule fired (``(none)``: no rule fired), over all splits."""
    c = Counter(qa["localization_rule"] or "(none)" for row in rows for qa in row["qa"])
    return dict(sorted(c.items()))


__all__ = [
    "ANATOMICAL",
    "POSITIONING",
    "LOCALIZATION_TAGS",
    "METADATA_TAGS",
    "KEYWORD_RULES",
    "tag_question",
    "tag_qa",
    "count_tags",
    "count_rules",
]
