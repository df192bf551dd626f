"""DCL and InfoNCE against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from loclens.train.losses import contrastive_loss, dcl_loss, info_nce_loss, same_pairs

L2 = torch.tensor([[2.0, 0.5], [1.0, 3.0]])


def test_dcl_two_by_two():
    # image->text rows: -2 + 0.5, -3 + 1; text->image columns: -2 + 1, -3 + 0.5 (the only
    # negative of each row is the other entry, the positive never enters the denominator).
    expected = ((-2 + 0.5) + (-3 + 1.0) + (-2 + 1.0) + (-3 + 0.5)) / 4
    assert dcl_loss(L2).item() == pytest.approx(expected)
    assert expected == -1.75


def test_infonce_two_by_two():
    # log(e^a + e^b) - a = log(1 + e^(b - a)) per row and column.
    rows = math.log1p(math.exp(0.5 - 2)) + math.log1p(math.exp(1 - 3))
    cols = math.log1p(math.exp(1 - 2)) + math.log1p(math.exp(0.5 - 3))
    assert info_nce_loss(L2).item() == pytest.approx(0.5 * (rows / 2 + cols / 2))
    assert contrastive_loss("infonce", L2).item() == pytest.approx(info_nce_loss(L2).item())


def test_shared_text_is_neither_positive_nor_negative():
    logits = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
    positives = same_pairs(["abdomen", "abdomen", "head"])
    assert positives.tolist() == [[True, True, False], [True, True, False], [False, False, True]]
    lse = lambda *xs: math.log(sum(math.exp(x) for x in xs))  # noqa: E731
    dcl = [-1 + 3, -5 + 6, -9 + lse(7, 8), -1 + 7, -5 + 8, -9 + lse(3, 6)]
    assert dcl_loss(logits, positives).item() == pytest.approx(sum(dcl) / 6)
    rows = [lse(1, 3) - 1, lse(5, 6) - 5, lse(7, 8, 9) - 9]
    cols = [lse(1, 7) - 1, lse(5, 8) - 5, lse(3, 6, 9) - 9]
    assert info_nce_loss(logits, positives).item() == pytest.approx(0.5 * (sum(rows) / 3 + sum(cols) / 3))


def test_rows_without_negatives_add_nothing_and_gradients_stay_finite():
    logits = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]], requires_grad=True)
    positives = same_pairs(["a", "a", "a"], ["x", "y", "z"])
    loss = dcl_loss(logits, positives)
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(logits.grad, torch.zeros(3, 3))
    logits.grad = None
    positives = same_pairs(["a", "a", "b"])  # rows 0, 1 have one negative; all finite
    dcl_loss(logits, positives).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_dcl_differs_from_infonce_by_the_positive_in_the_denominator():
    # DCL row = InfoNCE row + log(1 - softmax(positive)) exactly.
    torch.manual_seed(0)
    logits = torch.randn(5, 5)
    p_row = torch.softmax(logits, dim=1).diagonal()
    p_col = torch.softmax(logits, dim=0).diagonal()
    expected = info_nce_loss(logits) + 0.5 * (torch.log1p(-p_row).mean() + torch.log1p(-p_col).mean())
    assert dcl_loss(logits).item() == pytest.approx(expected.item(), rel=1e-5)


def test_unknown_loss_and_bad_shape_are_named():
    with pytest.raises(ValueError, match="unknown contrastive loss 'clip'"):
        contrastive_loss("clip", L2)
    with pytest.raises(ValueError, match="must be square"):
        dcl_loss(torch.zeros(2, 3))
