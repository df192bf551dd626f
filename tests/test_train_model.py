"""The model pieces: pixel-shuffle connector (Eq. 5), lens fusion (Eq. 4), and the towers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from loclens.train import default_settings
from loclens.train.model import LensAligner, PixelShuffleConnector
from loclens.train.towers import HFVision, LiteMedSAMVision, TextTower


def test_pixel_shuffle_moves_each_r_by_r_block_into_one_token():
    grid = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(1, 2, 4, 4)
    conn = PixelShuffleConnector(channels=2, dim=8, factor=2)
    out = conn.shuffle(grid)
    assert out.shape == (1, 8, 2, 2)
    for i in range(2):
        for j in range(2):
            block = grid[0, :, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].reshape(-1)  # (C, r, r) in order
            assert torch.equal(out[0, :, i, j], block)
    assert sorted(out.flatten().tolist()) == sorted(grid.flatten().tolist())  # nothing lost
    assert conn(grid).shape == (1, 4, 8)  # 16 tokens -> 4 tokens
    odd = conn.shuffle(torch.ones(1, 2, 5, 5))  # zero-padded to 6x6
    assert odd.shape == (1, 8, 3, 3) and odd.sum() == 2 * 25


def test_pixel_shuffle_off_keeps_every_token():
    conn = PixelShuffleConnector(channels=2, dim=8, factor=4, enabled=False)
    assert conn(torch.zeros(3, 2, 8, 8)).shape == (3, 64, 8)


@pytest.fixture(scope="module")
def vit_model(tiny_vit):
    torch.manual_seed(0)
    settings = default_settings(vision={"backend": "hf", "path": str(tiny_vit)}, connector={"factor": 2})
    return LensAligner(settings).eval()


def test_fusion_with_absent_lens_views_equals_original_alone(vit_model):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (40, 50, 3), dtype=np.uint8) for _ in range(6)]
    pixels = torch.stack([vit_model.vision.prepare(im) for im in images]).reshape(2, 3, 3, 64, 64)
    view_ids = torch.tensor([[0, 3, 5], [0, 4, 5]])
    with torch.no_grad():
        alone = vit_model.encode_image(pixels[:, 0])
        masked = vit_model.encode_image(pixels, view_ids, torch.tensor([[True, False, False]] * 2))
        fused = vit_model.encode_image(pixels, view_ids, torch.ones(2, 3, dtype=torch.bool))
    assert alone.shape == (2, 256)
    assert torch.allclose(alone.norm(dim=1), torch.ones(2))
    assert torch.allclose(alone, masked, atol=1e-6)
    assert not torch.allclose(alone, fused, atol=1e-3)  # lens views do change the representation
    assert torch.allclose(vit_model.embed_images([images[0], images[3]]), alone, atol=1e-6)


def test_frozen_towers_stay_frozen_and_out_of_checkpoints(vit_model):
    vit_model.train()
    assert not vit_model.vision.training and not vit_model.text.training
    assert not any(p.requires_grad for p in vit_model.vision.parameters())
    keys = vit_model.trainable_state()
    assert keys and not any(k.startswith(("vision.", "text.")) for k in keys)
    assert {k.split(".")[0] for k in keys} == {"connector", "fusion", "image_head", "text_head"}


def test_litemedsam_tower_on_a_real_image(vqa_rad_root):
    from loclens.imageio import load_rgb

    path = sorted((vqa_rad_root / "VQA_RAD Image Folder").glob("*.jpg"))[0]
    image = load_rgb(path.read_bytes(), str(path))
    tower = LiteMedSAMVision().eval()
    assert tower.sha256.startswith("79d8c9dc")
    pixels = tower.prepare(image)
    assert pixels.shape == (3, 256, 256) and 0.0 <= float(pixels.min()) and float(pixels.max()) == 1.0
    with torch.no_grad():
        grid = tower(pixels[None])
    assert grid.shape == (1, 256, 64, 64) and torch.isfinite(grid).all()
    tokens = PixelShuffleConnector(tower.channels, 32, factor=4)(grid)
    assert tokens.shape == (1, 256, 32)  # 64x64 grid -> 16x16 tokens of 256*16 channels, projected


def test_minilm_text_tower_mean_pools():
    tower = TextTower().eval()
    with torch.no_grad():
        a, b, c = tower(["liver", "liver", "a chest x-ray of the left lung"])
        padded = tower(["liver", "a chest x-ray of the left lung"])[0]
    assert tower.dim == 384 and a.shape == (384,)
    assert torch.equal(a, b)
    assert torch.allclose(a, padded, atol=1e-5)  # padding tokens do not enter the mean
    assert torch.nn.functional.cosine_similarity(a, c, dim=0) < 0.9


def test_tower_folders_are_checked(tmp_path):
    with pytest.raises(ValueError, match=f"{tmp_path}: not a Hugging Face model folder"):
        HFVision(str(tmp_path))
    with pytest.raises(ValueError, match="train.vision.path: a local Hugging Face model folder is required"):
        HFVision(None)
