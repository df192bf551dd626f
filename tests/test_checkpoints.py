"""Checkpoints: where weights come from, sha256-verified fetching (local file URLs, network
disabled, Hugging Face offline), errors that say what to fetch, and transformers SamModel
checkpoints converted to segment_anything's layout."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import TINY_SAM_ARCH, TINY_SAM_GENERATOR, phantom_rgb

from loclens.cli import main
from loclens.config import validate
from loclens.provenance import sha256_file
from loclens.segment import build_segmenter, checkpoints
from loclens.segment.checkpoints import CheckpointError
from loclens.segment.sam_hf_format import is_transformers_sam, to_segment_anything
from loclens.segment.sam_models import ARCHS, build_sam_network, load_sam_network


def _segment_cfg(**segment) -> dict:
    return validate({"datasets": {"sample": {}}, "segment": segment})["segment"]


@pytest.fixture()
def weights(tmp_path):
    path = tmp_path / "src" / "weights.pth"
    path.parent.mkdir()
    path.write_bytes(b"pretend these are weights" * 1000)
    return path


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again on exit: connections are refused


def test_where_weights_come_from(tmp_path):
    seg = _segment_cfg()
    assert checkpoints.checkpoint_target("medsam", seg["medsam"], tmp_path) is None  # packaged LiteMedSAM
    sam = seg["sam"]
    target = checkpoints.checkpoint_target("sam", sam, tmp_path)
    assert target == tmp_path / "checkpoints" / "sam_vit_b_01ec64.pth"
    assert checkpoints.download_spec("sam", sam)["sha256"].startswith("ec2df627")
    local = _segment_cfg(sam={"checkpoint": "~/w/sam.pth"})["sam"]
    assert checkpoints.checkpoint_target("sam", local, tmp_path).name == "sam.pth"
    # The official weights never stand in for a test architecture.
    tiny = _segment_cfg(sam={"arch": {"encoder_depth": 1}})["sam"]
    with pytest.raises(CheckpointError, match="has no checkpoint"):
        checkpoints.checkpoint_target("sam", tiny, tmp_path)


def test_missing_sam_weights_name_the_fetch_command_source_and_target(tmp_path):
    sam = _segment_cfg()["sam"]
    with pytest.raises(CheckpointError) as err:
        checkpoints.require(None, "sam", sam, tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "checkpoints" / "sam_vit_b_01ec64.pth") in msg
    assert "loclens fetch-checkpoint --segmenter sam" in msg and "snakemake fetch_checkpoints" in msg
    assert "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth" in msg and "ec2df627" in msg
    assert "segment.sam.checkpoint" in msg


def test_fetch_verifies_sha256_and_keeps_nothing_on_mismatch(tmp_path, weights):
    dest = tmp_path / "resources" / "checkpoints" / "weights.pth"
    good = {"url": weights.as_uri(), "sha256": sha256_file(weights)}
    assert checkpoints.fetch(good, dest) == good["sha256"]
    assert dest.read_bytes() == weights.read_bytes()
    mtime = dest.stat().st_mtime_ns
    checkpoints.fetch(good, dest)  # already there and intact: not downloaded again
    assert dest.stat().st_mtime_ns == mtime

    other = tmp_path / "resources" / "checkpoints" / "other.pth"
    with pytest.raises(CheckpointError, match="does not match the expected"):
        checkpoints.fetch({**good, "sha256": "0" * 64}, other)
    assert sorted(p.name for p in other.parent.iterdir()) == ["weights.pth"]  # no partial file left


def test_network_disabled_gives_a_clear_error(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}/sam_vit_b.pth"
    dest = tmp_path / "checkpoints" / "sam_vit_b.pth"
    with pytest.raises(CheckpointError, match=rf"could not download {url}: .*offline.*copy it to {dest}"):
        checkpoints.fetch({"url": url, "sha256": "0" * 64}, dest, timeout=5)
    assert not dest.exists()


def test_hugging_face_offline_gives_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = {"hf": {"repo_id": "someone/medsam", "filename": "medsam_vit_b.pth"}, "sha256": "0" * 64}
    with pytest.raises(
        CheckpointError, match=r"could not fetch medsam_vit_b\.pth from the Hugging Face repo someone/medsam"
    ):
        checkpoints.fetch(spec, tmp_path / "medsam_vit_b.pth")


def test_cli_fetches_what_the_config_needs(tmp_path, weights, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = {
        "datasets": {"sample": {}},
        "resources": "res",
        "segment": {
            "sam": {
                "enabled": True,
                "arch": {"encoder_depth": 1},
                "download": {"url": weights.as_uri(), "sha256": sha256_file(weights), "filename": "tiny.pth"},
            }
        },
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    assert main(["fetch-checkpoint", "--config", "config.yaml"]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "res" / "checkpoints" / "tiny.pth").read_bytes() == weights.read_bytes()
    assert "segment.sam: res/checkpoints/tiny.pth sha256" in out and "nothing to fetch" in out  # medsam: packaged

    config["segment"]["sam"]["download"]["url"] = f"http://127.0.0.1:{_closed_port()}/tiny.pth"
    config["segment"]["sam"]["download"]["filename"] = "tiny2.pth"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    assert main(["fetch-checkpoint", "--config", "config.yaml", "--segmenter", "sam"]) == 2
    assert "could not download" in capsys.readouterr().err


def test_segment_without_weights_exits_with_instructions(tmp_path, capsys):
    settings = _segment_cfg(medsam={"backend": "medsam_vitb"})["medsam"]
    import json

    argv = [
        "segment",
        "--records",
        "r.jsonl",
        "--plan",
        "p.json",
        "--shard",
        "0",
        "--segmenter",
        "medsam",
        "--settings",
        json.dumps(settings),
        "--out",
        str(tmp_path / "x.parquet"),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    target = Path("resources") / "checkpoints" / "medsam-vit-base_pytorch_model.bin"
    assert f"{target}: checkpoint for segment.medsam (medsam_vitb) not found" in err
    assert "loclens fetch-checkpoint --segmenter medsam" in err and "flaviagiammarino/medsam-vit-base" in err
    assert main(argv + ["--checkpoint", str(tmp_path / "nope.pth")]) == 2
    assert f"{tmp_path / 'nope.pth'}: checkpoint for segment.medsam (medsam_vitb) not found" in capsys.readouterr().err


def test_medsam_vitb_defaults_to_the_pinned_hub_copy(tmp_path):
    medsam = _segment_cfg(medsam={"backend": "medsam_vitb"})["medsam"]
    spec = checkpoints.download_spec("medsam", medsam)
    assert spec["hf"] == {
        "repo_id": "flaviagiammarino/medsam-vit-base",
        "filename": "pytorch_model.bin",
        "revision": "7f4cdedabc736e857fb0406a8427b1ce6a2a3c03",
    }
    assert len(spec["sha256"]) == 64 and int(spec["sha256"], 16)
    target = checkpoints.checkpoint_target("medsam", medsam, tmp_path)
    assert target == tmp_path / "checkpoints" / "medsam-vit-base_pytorch_model.bin"
    with pytest.raises(CheckpointError) as err:
        checkpoints.require(None, "medsam", medsam, tmp_path)
    msg = str(err.value)
    assert f"{target}: checkpoint for segment.medsam (medsam_vitb) not found" in msg
    assert "loclens fetch-checkpoint --segmenter medsam" in msg and "snakemake fetch_checkpoints" in msg
    assert "hf://flaviagiammarino/medsam-vit-base/pytorch_model.bin@7f4cdedabc736e857fb0406a8427b1ce6a2a3c03" in msg
    assert spec["sha256"] in msg and "segment.medsam.checkpoint" in msg
    # A test architecture never falls back to the real weights; the message names both sources.
    tiny = _segment_cfg(medsam={"backend": "medsam_vitb", "arch": {"encoder_depth": 1}})["medsam"]
    with pytest.raises(CheckpointError, match=r"medsam_vit_b\.pth from the MedSAM repository .*flaviagiammarino"):
        checkpoints.checkpoint_target("medsam", tiny, tmp_path)


def test_offline_hub_download_names_repo_revision_and_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    dest = tmp_path / "checkpoints" / checkpoints.MEDSAM_VITB_HUB["filename"]
    with pytest.raises(CheckpointError) as err:
        checkpoints.fetch(checkpoints.MEDSAM_VITB_HUB, dest)
    msg = str(err.value)
    assert "could not fetch pytorch_model.bin from the Hugging Face repo flaviagiammarino/medsam-vit-base" in msg
    assert "at revision 7f4cdedabc736e857fb0406a8427b1ce6a2a3c03" in msg and f"copy it to {dest}" in msg
    assert not dest.exists() and not list(dest.parent.glob("*"))


# --- transformers SamModel checkpoints --------------------------------------------------------


def _tiny_hf_sam(seed: int = 0):
    """A randomly initialised transformers SamModel of loclens's tiny test architecture."""
    from transformers import SamConfig, SamModel

    a = TINY_SAM_ARCH
    config = SamConfig(
        vision_config={
            "hidden_size": a["encoder_embed_dim"],
            "num_hidden_layers": a["encoder_depth"],
            "num_attention_heads": a["encoder_num_heads"],
            "global_attn_indexes": a["encoder_global_attn_indexes"],
            "window_size": a["window_size"],
            "image_size": a["image_size"],
            "output_channels": a["prompt_embed_dim"],
            "num_pos_feats": a["prompt_embed_dim"] // 2,
        },
        prompt_encoder_config={"hidden_size": a["prompt_embed_dim"], "image_size": a["image_size"]},
        mask_decoder_config={
            "hidden_size": a["prompt_embed_dim"],
            "mlp_dim": a["decoder_mlp_dim"],
            "num_attention_heads": a["decoder_num_heads"],
            "iou_head_hidden_dim": a["iou_head_hidden_dim"],
        },
    )
    torch.manual_seed(seed)
    model = SamModel(config).eval()
    # Decoder weights far from their initialisation, so that masks are not near-empty noise.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


@pytest.fixture(scope="module")
def hf_sam(tmp_path_factory):
    """The same tiny random weights in three files: transformers' folder (safetensors), its
    pytorch_model.bin, and converted to segment_anything's layout."""
    root = tmp_path_factory.mktemp("hf_sam")
    model = _tiny_hf_sam()
    model.save_pretrained(root / "hf")
    # transformers 5 saves safetensors only; pytorch_model.bin is what older versions wrote
    # (torch.save of the state dict), the format of the MedSAM ViT-B copy on the Hub.
    (root / "hf_bin").mkdir()
    torch.save(model.state_dict(), root / "hf_bin" / "pytorch_model.bin")
    torch.save(to_segment_anything(model.state_dict()), root / "sam.pth")
    return model, root


def test_converted_keys_and_shapes_are_segment_anythings(hf_sam):
    model, root = hf_sam
    converted = to_segment_anything(model.state_dict())
    expected = build_sam_network("vit_b", TINY_SAM_ARCH).state_dict()
    assert {k: v.shape for k, v in converted.items()} == {k: v.shape for k, v in expected.items()}
    # The files saved by transformers read back to the same tensors, whichever format.
    for path in (
        root / "hf",
        root / "hf" / "model.safetensors",
        root / "hf_bin",
        root / "hf_bin" / "pytorch_model.bin",
    ):
        state = checkpoints.read_state_dict(path)
        assert is_transformers_sam(state)
        got = to_segment_anything(state)
        assert got.keys() == converted.keys() and all(torch.equal(got[k], converted[k]) for k in got), path


@pytest.mark.parametrize("model_type", ["vit_b", "vit_h"])
def test_published_sammodel_layouts_map_onto_segment_anythings(model_type):
    """The full-size architectures (built on the meta device: shapes, no memory), e.g. the
    vit_b of facebook/sam-vit-base and flaviagiammarino/medsam-vit-base."""
    from transformers import SamConfig, SamModel

    a = ARCHS[model_type]
    vision = {
        "hidden_size": a["encoder_embed_dim"],
        "num_hidden_layers": a["encoder_depth"],
        "num_attention_heads": a["encoder_num_heads"],
        "global_attn_indexes": a["encoder_global_attn_indexes"],
    }
    with torch.device("meta"):
        theirs = SamModel(SamConfig(vision_config=vision)).state_dict()
        ours = build_sam_network(model_type).state_dict()
    del theirs["shared_image_embedding.positional_embedding"]  # its tied copy; meta tensors cannot be compared
    converted = to_segment_anything(theirs)
    assert {k: v.shape for k, v in converted.items()} == {k: v.shape for k, v in ours.items()}


def test_converted_network_computes_what_sammodel_computes(hf_sam):
    """segment_anything's network with the converted weights against transformers' SamModel on
    the same input: image embedding, box-prompted low-resolution mask logits and IoU."""
    model, root = hf_sam
    net = load_sam_network("vit_b", root / "hf", TINY_SAM_ARCH)
    torch.manual_seed(1)
    pixels = torch.randn(1, 3, 256, 256)
    boxes = torch.tensor([[30.0, 40.0, 200.0, 180.0], [100.0, 20.0, 250.0, 240.0]])
    with torch.no_grad():
        theirs = model(pixel_values=pixels, input_boxes=boxes[None], multimask_output=False)
        emb = net.image_encoder(pixels)
        torch.testing.assert_close(emb, model.get_image_embeddings(pixels), rtol=1e-4, atol=1e-5)
        sparse, dense = net.prompt_encoder(points=None, boxes=boxes[:, None, :], masks=None)
        logits, iou = net.mask_decoder(
            image_embeddings=emb,
            image_pe=net.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
    their_logits = theirs.pred_masks[0]  # (boxes, 1, h, w)
    assert their_logits.shape == logits.shape
    torch.testing.assert_close(logits, their_logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(iou, theirs.iou_scores[0], rtol=1e-4, atol=1e-5)
    assert 0.02 < float((logits > 0).float().mean()) < 0.98  # masks that can disagree


def test_transformers_and_segment_anything_files_give_identical_masks(hf_sam):
    """Through loclens: MedSAM ViT-B and SAM from the transformers folder, its weights files,
    and the converted .pth."""
    _, root = hf_sam
    image, _ = phantom_rgb("chest", 192, 2)
    boxes = np.array([[20, 30, 150, 170], [60, 10, 180, 120]], np.float32)
    medsam = {}
    for path in (root / "sam.pth", root / "hf", root / "hf" / "model.safetensors", root / "hf_bin"):
        cfg = _segment_cfg(medsam={"backend": "medsam_vitb", "checkpoint": str(path), "arch": TINY_SAM_ARCH})["medsam"]
        seg = build_segmenter("medsam", cfg, "cpu")
        medsam[path] = seg.decode(seg.encode([image])[0], boxes)
    ref_masks, ref_scores = medsam[root / "sam.pth"]
    assert ref_masks.any() and not ref_masks.all()
    for path, (masks, scores) in medsam.items():
        assert np.array_equal(masks, ref_masks) and np.array_equal(scores, ref_scores), path
    assert seg.checkpoint.endswith("pytorch_model.bin")  # a folder is recorded by its weights file

    sam = {}
    for path in (root / "sam.pth", root / "hf"):
        cfg = _segment_cfg(
            sam={"enabled": True, "checkpoint": str(path), "arch": TINY_SAM_ARCH, "generator": dict(TINY_SAM_GENERATOR)}
        )["sam"]
        seg = build_segmenter("sam", cfg, "cpu")
        sam[path] = [(c.rle["counts"], c.score) for c in seg.generate(seg.encode([image])[0], image)]
    assert sam[root / "hf"] == sam[root / "sam.pth"]


def test_bad_transformers_checkpoints_are_named(tmp_path, hf_sam):
    _, root = hf_sam
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(
        CheckpointError, match=r"empty: a checkpoint folder must hold model\.safetensors or pytorch_model\.bin"
    ):
        checkpoints.read_state_dict(empty)
    (empty / "model.safetensors.index.json").write_text("{}")
    with pytest.raises(CheckpointError, match="sharded checkpoints"):
        checkpoints.read_state_dict(empty)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="broken.safetensors: not a readable safetensors file"):
        checkpoints.read_state_dict(broken)
    # The weights of another architecture: the mismatching keys are named, not half-loaded.
    with pytest.raises(CheckpointError, match="does not fit the vit_b architecture"):
        load_sam_network("vit_b", root / "hf", {**TINY_SAM_ARCH, "encoder_embed_dim": 64})
    assert checkpoints.require(root / "hf", "sam", _segment_cfg()["sam"]) == root / "hf"
    with pytest.raises(CheckpointError, match="not found"):
        checkpoints.require(empty, "sam", _segment_cfg()["sam"])
