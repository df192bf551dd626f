"""Contrastive losses over an image-text similarity matrix, selectable per phase.

``logits[i, j]`` is the similarity of image ``i`` and text ``j`` divided by the temperature;
pair ``(i, i)`` is the positive. ``positives[i, j]`` (optional, boolean) marks other pairs that
are not negatives either: two samples with the same text (phase 1 has few distinct body
regions) or of the same image (phase 2 has several questions per image). Such pairs are left
out of every denominator instead of being pushed apart. Both losses are symmetric (image->text
and text->image averaged).

- ``infonce``: cross-entropy of the positive among itself and the negatives (CLIP).
- ``dcl``: decoupled contrastive loss (Yeh et al., ECCV 2022): the positive is also left out
  of the denominator, ``-s_ii + log sum_{j negative} exp(s_ij)``, which removes the
  negative-positive coupling that makes InfoNCE weak with small batches. A row with no
  negative has no DCL term and is left out of the mean.
"""

from __future__ import annotations

import torch


def _negatives(logits: torch.Tensor, positives: torch.Tensor | None) -> torch.Tensor:
    n = logits.shape[0]
    if logits.shape != (n, n):
        raise ValueError(f"contrastive logits must be square (batch x batch), got {tuple(logits.shape)}")
    same = torch.eye(n, dtype=torch.bool, device=logits.device)
    if positives is not None:
        same = same | positives.to(device=logits.device, dtype=torch.bool)
    return ~same


def _dcl_rows(logits: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """Terms of the rows that have a negative (a row without one would be log(0), and its
    NaN gradient would leak through the mask, so its entries are neutralised first)."""
    has_neg = negatives.any(dim=1)
    masked = logits.masked_fill(~negatives, float("-inf")).masked_fill(~has_neg[:, None], 0.0)
    return (masked.logsumexp(dim=1) - logits.diagonal())[has_neg]


def dcl_loss(logits: torch.Tensor, positives: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric decoupled contrastive loss (mean over rows that have a negative)."""
    logits = logits.float()
    negatives = _negatives(logits, positives)
    terms = torch.cat([_dcl_rows(logits, negatives), _dcl_rows(logits.T, negatives.T)])
    if terms.numel() == 0:  # no negatives at all: nothing to contrast, no gradient
        return logits.sum() * 0.0
    return terms.mean()


def _infonce_rows(logits: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    keep = negatives | torch.eye(len(logits), dtype=torch.bool, device=logits.device)
    return logits.masked_fill(~keep, float("-inf")).logsumexp(dim=1) - logits.diagonal()


def info_nce_loss(logits: torch.Tensor, positives: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP) loss."""
    logits = logits.float()
    negatives = _negatives(logits, positives)
    return 0.5 * (_infonce_rows(logits, negatives).mean() + _infonce_rows(logits.T, negatives.T).mean())


LOSSES = {"dcl": dcl_loss, "infonce": info_nce_loss}


def contrastive_loss(name: str, logits: torch.Tensor, positives: torch.Tensor | None = None) -> torch.Tensor:
    if name not in LOSSES:
        raise ValueError(f"unknown contrastive loss {name!r}; known: {sorted(LOSSES)}")
    return LOSSES[name](logits, positives)


def same_pairs(*ids: list[str]) -> torch.Tensor:
    """(B, B) boolean: pairs that share any of the given id lists (text, image id, ...)."""
    out = torch.zeros((len(ids[0]), len(ids[0])), dtype=torch.bool)
    for values in ids:
        codes = {v: i for i, v in enumerate(dict.fromkeys(values))}
        t = torch.tensor([codes[v] for v in values])
        out |= t[:, None] == t[None, :]
    return out
