"""Checkpoints: where weights come from, sha256-verified fetching (local file URLs, network
disabled, Hugging Face offline), and errors that say what to fetch."""

from __future__ import annotations

import socket

import pytest
import yaml

from loclens.cli import main
from loclens.config import validate
from loclens.provenance import sha256_file
from loclens.segment import checkpoints
from loclens.segment.checkpoints import CheckpointError


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
    with pytest.raises(CheckpointError, match=r"could not fetch medsam_vit_b\.pth from the Hugging Face repo someone/medsam"):
        checkpoints.fetch(spec, tmp_path / "medsam_vit_b.pth")


def test_cli_fetches_what_the_config_needs(tmp_path, weights, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = {
        "datasets": {"sample": {}},
        "resources": "res",
        "segment": {"sam": {"enabled": True, "arch": {"encoder_depth": 1},
                            "download": {"url": weights.as_uri(), "sha256": sha256_file(weights), "filename": "tiny.pth"}}},
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

    argv = ["segment", "--records", "r.jsonl", "--plan", "p.json", "--shard", "0", "--segmenter", "medsam",
            "--settings", json.dumps(settings), "--out", str(tmp_path / "x.parquet")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "medsam_vit_b.pth from the MedSAM repository" in err
    assert main(argv + ["--checkpoint", str(tmp_path / "nope.pth")]) == 2
    assert f"{tmp_path / 'nope.pth'}: checkpoint for segment.medsam (medsam_vitb) not found" in capsys.readouterr().err
