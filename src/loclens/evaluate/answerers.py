"""Answerers: a trained model (``loclens.train.load_model``) behind the two answering methods.

- ``Ranker`` (contrastive ``LensAligner``): score(image, question, answer) is the cosine of the
  image embedding (original image only) and the text embedding of the question-answer pair,
  written exactly as phase 2 trained it (``train.samples.qa_text``).
- ``Generator`` (``VLMLens``, ``train.model: vlm``): greedy decoding from the original image and
  the question, in the chat format phase 2 trained (``VLMLens.answer``); the text is normalised
  by the metrics.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from ..segment import resolve_device

#: Texts encoded per forward pass of the text tower while ranking.
TEXT_BATCH = 256


class Ranker:
    method = "rank"

    def __init__(self, model):
        self.model = model

    @torch.no_grad()
    def rank(self, image: Image.Image, questions: Sequence[str], candidates: Sequence[str]) -> np.ndarray:
        """(questions x candidates) cosine similarities."""
        from ..train.samples import qa_text

        image_emb = self.model.embed_images([np.asarray(image)])[0]  # (D,)
        texts = [qa_text({"question": q, "answer": a}) for q in questions for a in candidates]
        scores = [
            self.model.encode_text(texts[i : i + TEXT_BATCH]) @ image_emb for i in range(0, len(texts), TEXT_BATCH)
        ]
        return torch.cat(scores).float().cpu().numpy().reshape(len(questions), len(candidates))


class Generator:
    method = "generate"

    def __init__(self, model, max_new_tokens: int | None = None):
        """``max_new_tokens`` None = the model's own ``train.vlm.max_new_tokens``."""
        self.model = model
        self.max_new_tokens = max_new_tokens

    def generate(self, image: Image.Image, questions: Sequence[str]) -> list[str]:
        """Greedy answers from the original image alone, through the lens model's vision path."""
        return self.model.answer(np.asarray(image), questions, self.max_new_tokens)


def load_answerer(checkpoint, device: str = "auto"):
    """The answerer for a trained model folder (a phase's ``final/`` or a checkpoint)."""
    from ..train import load_model

    model = load_model(checkpoint, device=resolve_device(device))
    if model.kind == "contrastive":
        return Ranker(model)
    if model.kind == "vlm":
        return Generator(model)
    raise ValueError(f"{checkpoint}: model kind {model.kind!r} has no answering method")
