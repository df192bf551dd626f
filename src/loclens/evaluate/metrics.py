"""The Med-VQA metrics loclens reports, each defined once, here.

These follow what LLaVA-Med reports (closed-question accuracy, open-question recall), without
two known traps of its reference script: it tests closed answers by *substring* (so the "no" in
"not", "normal" or "nodule" counts as a "no"), and it leaves a closed prediction that contains
neither "yes" nor "no" out of the denominator (so an unusable answer raises the accuracy).
Here every comparison is on whole tokens, and every question of a subset counts in that subset's
denominator.

Definitions (cite these by name):

``normalize_answer(text)``
    NFKC, lower case; punctuation becomes a space, except a decimal point or comma between two
    digits ("2.5" stays "2.5"); the articles "a", "an", "the" are removed; number words from
    "zero" to "twenty" become digits ("two" -> "2"); runs of whitespace collapse. Tokens are the
    whitespace-separated words of the result.
``exact_match``
    1 when the normalised prediction equals the normalised reference, else 0.
``closed_correct`` (closed-question accuracy = its mean over the closed questions)
    The normalised reference occurs in the normalised prediction as a contiguous run of whole
    tokens. When the reference is "yes" or "no", the prediction must in addition contain no
    token of the other polarity ("yes, no" is wrong for both). An empty prediction is wrong.
``open_recall`` (open-question recall = its mean over the open questions)
    The fraction of the reference's tokens found in the prediction, counted as multisets
    (a reference token used twice must be found twice). An empty prediction scores 0.
``yes/no accuracy``
    ``closed_correct`` over the questions whose normalised reference is exactly "yes" or "no",
    whatever their ``answer_type`` (peers define "closed" this way).

"Closed" and "open" follow each dataset's official ``answer_type`` (VQA-RAD and SLAKE both label
it; CLOSED does not mean yes/no: VQA-RAD has closed questions answered "left" or "pa").
A reference with no tokens after normalisation (for example an empty SLAKE answer) cannot be
scored; such questions are counted as ``n_unscorable`` in every summary, never silently dropped.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass

ARTICLES = frozenset({"a", "an", "the"})

NUMBER_WORDS = {
    word: str(value)
    for value, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
}

YES_NO = frozenset({"yes", "no"})

# Any character that is not a word character or whitespace is punctuation, except a "." or ","
# between two digits (decimals, thousands), which is kept so that "2.5 cm" is not "2 5 cm".
_PUNCT = re.compile(r"(?!(?<=\d)[.,](?=\d))(?:[^\w\s]|_)")


def normalize_answer(text: str | None) -> str:
    """The normalised form every metric compares (see the module docstring)."""
    if text is None:
        return ""
    text = unicodedata.normalize("NFKC", str(text)).lower()
    text = _PUNCT.sub(" ", text)
    words = [NUMBER_WORDS.get(w, w) for w in text.split() if w not in ARTICLES]
    return " ".join(words)


def answer_tokens(text: str | None) -> list[str]:
    return normalize_answer(text).split()


def exact_match(prediction: str | None, reference: str) -> bool:
    return normalize_answer(prediction) == normalize_answer(reference)


def _contains_run(tokens: list[str], run: list[str]) -> bool:
    n = len(run)
    return any(tokens[i : i + n] == run for i in range(len(tokens) - n + 1))


def closed_correct(prediction: str | None, reference: str) -> bool:
    pred, ref = answer_tokens(prediction), answer_tokens(reference)
    if not pred or not ref:
        return False
    if len(ref) == 1 and ref[0] in YES_NO:
        polarity = {t for t in pred if t in YES_NO}
        return polarity == {ref[0]}
    return _contains_run(pred, ref)


def open_recall(prediction: str | None, reference: str) -> float:
    ref = Counter(answer_tokens(reference))
    if not ref:
        return math.nan
    pred = Counter(answer_tokens(prediction))
    found = sum(min(count, pred[token]) for token, count in ref.items())
    return found / sum(ref.values())


def is_yes_no(reference: str) -> bool:
    return normalize_answer(reference) in YES_NO


@dataclass(frozen=True)
class ItemScore:
    """Every metric of one prediction; ``scorable`` is False for a reference with no tokens."""

    answer_type: str
    scorable: bool
    exact: float
    closed: float | None  # closed_correct, for answer_type == "closed"
    recall: float | None  # open_recall, for answer_type == "open"
    yes_no: float | None  # closed_correct, for yes/no references

    def to_dict(self) -> dict:
        return asdict(self)


def score_item(prediction: str | None, reference: str, answer_type: str) -> ItemScore:
    answer_type = str(answer_type).strip().lower()
    if answer_type not in ("open", "closed"):
        raise ValueError(f"answer_type must be 'open' or 'closed', got {answer_type!r}")
    if not answer_tokens(reference):
        return ItemScore(answer_type, False, math.nan, None, None, None)
    correct = float(closed_correct(prediction, reference))
    return ItemScore(
        answer_type=answer_type,
        scorable=True,
        exact=float(exact_match(prediction, reference)),
        closed=correct if answer_type == "closed" else None,
        recall=open_recall(prediction, reference) if answer_type == "open" else None,
        yes_no=correct if is_yes_no(reference) else None,
    )


#: The summary metrics, in table order: name -> (ItemScore field, count key).
SUMMARY_METRICS = {
    "closed_accuracy": ("closed", "n_closed"),
    "open_recall": ("recall", "n_open"),
    "yes_no_accuracy": ("yes_no", "n_yes_no"),
    "exact_match": ("exact", "n"),
}


def summarize(scores: Iterable[ItemScore]) -> dict:
    """Means of each metric over its subset, with the subset sizes.

    A metric whose subset is empty is NaN (written as null), never 0: "no closed questions" is
    not "all closed questions wrong".
    """
    scores = list(scores)
    scorable = [s for s in scores if s.scorable]
    out: dict = {"n_questions": len(scores), "n_unscorable": len(scores) - len(scorable)}
    for name, (field, count_key) in SUMMARY_METRICS.items():
        values = [getattr(s, field) for s in scorable if getattr(s, field) is not None]
        out[count_key] = len(values)
        out[name] = sum(values) / len(values) if values else math.nan
    return out
