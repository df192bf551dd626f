"""The lens inside real VLM families (tiny randomly initialised Idefics3 / SmolVLM and LLaVA built
from configs, no download): the vision path is the model's own at initialisation, image-token
counts (views vs original alone, pixel shuffle on / off), what each phase trains, overfitting,
generation, and where a model comes from."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from loclens.train import default_settings
from loclens.train.families import adapted_projection, space_to_depth
from loclens.train.loop import build_model, make_optimizer
from loclens.train.vlm import COMPONENTS
from loclens.train.vlm_source import ModelSourceError, resolve_model_source

FAMILIES = ("idefics3", "llava")


@pytest.fixture(scope="module")
def folders(tiny_idefics3, tiny_llava):
    return {"idefics3": tiny_idefics3, "llava": tiny_llava}


def settings_for(folder, **overrides):
    vlm = {"model": str(folder), **overrides.pop("vlm", {})}
    return default_settings(model="vlm", vlm=vlm, device="cpu", fusion_heads=2, **overrides)


def images(n: int, seed: int = 0, shape=(50, 40)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*shape, 3), dtype=np.uint8) for _ in range(n)]


COLUMNS = ["image", "sam_unicolor", "medsam_multicolor"]


def samples(model, n: int = 4, views: int = 2, qa: bool = False) -> dict:
    """A batch of ``n`` samples, each the original and ``views`` lens views, distinct texts."""
    out = []
    for i in range(n):
        sample = {
            "images": images(1 + views, seed=i),
            "columns": COLUMNS[: 1 + views],
            "text": f"organ {i} region {i}",
            "question": f"what is shown in image {i}?" if qa else None,
            "answer": f"answer {i}" if qa else None,
            "image_id": f"img{i}",
            "key": f"img{i}" + ("/q" if qa else ""),
        }
        out.append(model.prepare(sample))
    return model.collate(out)


def checksums(model) -> dict[str, float]:
    """Sum of |w| per component (LoRA adapters counted apart, as ``lm.lora`` / ``vision.lora``)."""
    sums: dict[str, float] = {}
    for name, p in model.named_parameters():
        comp = model.component(name) + (".lora" if "lora_" in name else "")
        sums[comp] = sums.get(comp, 0.0) + p.detach().double().abs().sum().item()
    return sums


def steps(model, batch, n: int, loss: str = "dcl") -> list[float]:
    optimizer = make_optimizer(model, model.settings, "align" if "input_ids" not in batch else "vqa")
    model.train()
    losses = []
    for _ in range(n):
        value = model(batch, loss, 0.1)
        value.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(value.item())
    return losses


@pytest.mark.parametrize("family", FAMILIES)
def test_at_init_the_vision_path_and_prompt_are_the_models_own(family, folders):
    """With the model's own connector (Idefics3: its factor 2; LLaVA: no shuffle) and the fusion
    gate at 0, the lens path gives exactly the model's image features and the model's own forward
    from the processor's inputs gives the same logits as ours from spliced embeddings."""
    own = {"idefics3": {"factor": 2}, "llava": {"pixel_shuffle": False}}[family]
    model = build_model(settings_for(folders[family], connector=own)).eval()
    image = images(1)[0]
    batch = samples(model, n=1, views=0, qa=True)
    with torch.no_grad():
        ours = model.image_tokens(batch["vision"], batch["present"], batch["view_ids"])
        prompt = model._prompt("what is shown in image 0?", "answer 0").replace(model.family.image_prompt(), "<image>")
        inputs = model.processor(
            text=[prompt], images=[[image]] if family == "idefics3" else [image], return_tensors="pt"
        )
        inputs.pop("token_type_ids", None)
        theirs = model.model.get_image_features(**{k: v for k, v in inputs.items() if k.startswith("pixel")})
        assert torch.allclose(ours[0], torch.cat(list(theirs.pooler_output)).reshape(ours[0].shape), atol=1e-5)
        assert inputs["input_ids"][0].tolist() == batch["input_ids"][0].tolist()
        logits = model.model(
            inputs_embeds=model.splice(batch["input_ids"], ours), attention_mask=batch["attention_mask"]
        ).logits
        assert torch.allclose(logits, model.model(**inputs).logits, atol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_lm_gets_as_many_image_tokens_with_views_as_from_the_original_alone(family, folders):
    model = build_model(settings_for(folders[family], connector={"factor": 4})).eval()
    with torch.no_grad():
        training = samples(model, n=2, views=2, qa=True)
        inference = samples(model, n=2, views=0, qa=True)
        fused = model.image_tokens(training["vision"], training["present"], training["view_ids"])
        alone = model.image_tokens(inference["vision"], inference["present"], inference["view_ids"])
    n = model.family.n_image_tokens
    assert n == (8 // 4) ** 2  # 8x8 patch grid, r = 4
    assert training["vision"]["pixel_values"].shape[1] == 3 and inference["vision"]["pixel_values"].shape[1] == 1
    assert fused.shape == alone.shape == (2, n, 32)
    for batch in (training, inference):
        assert (batch["input_ids"] == model.family.image_token_id).sum(dim=1).tolist() == [n, n]
    # At initialisation (gate 0) the views change nothing; once the gate opens they do.
    assert torch.allclose(fused, alone, atol=1e-6)
    with torch.no_grad():
        model.fusion.gate.fill_(1.0)
        opened = model.image_tokens(training["vision"], training["present"], training["view_ids"])
    assert not torch.allclose(opened, alone, atol=1e-3)


@pytest.mark.parametrize("family", FAMILIES)
def test_pixel_shuffle_off_multiplies_the_image_tokens_by_r_squared(family, folders):
    counts = {}
    for r, on in ((4, True), (2, True), (4, False)):
        model = build_model(settings_for(folders[family], connector={"factor": r, "pixel_shuffle": on})).eval()
        with torch.no_grad():
            batch = samples(model, n=1, views=2)
            counts[(r, on)] = model.image_tokens(batch["vision"], batch["present"], batch["view_ids"]).shape[1]
    assert counts[(4, False)] == 64 and counts[(4, True)] * 16 == counts[(4, False)]
    assert counts[(2, True)] * 4 == counts[(4, False)]


def test_adapted_projection_equals_the_models_own_on_uniform_features():
    torch.manual_seed(0)
    c, s, d = 3, 2, 5
    native = torch.nn.Linear(c * s * s, d)
    x = torch.randn(2, 1, c).expand(2, 16, c)  # a uniform 4x4 grid per image
    own = native(space_to_depth(x, s))
    for r in (1, 4):
        adapted = adapted_projection(native, c, r)
        assert adapted.in_features == c * r * r
        out = adapted(space_to_depth(x, r) if r > 1 else x)
        assert torch.allclose(out[:, :1].expand(2, own.shape[1], d), own, atol=1e-5)


def test_space_to_depth_keeps_each_neighbourhood_in_one_token():
    tokens = torch.arange(16.0).reshape(1, 16, 1)  # a 4x4 grid, one channel
    out = space_to_depth(tokens, 2)
    assert out[0].tolist() == [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]]
    assert space_to_depth(torch.ones(1, 25, 2), 2).shape == (1, 9, 8)  # 5x5 zero-padded to 6x6


@pytest.mark.parametrize("family", FAMILIES)
def test_phase1_trains_the_vision_side_and_not_the_lm_and_its_loss_falls(family, folders):
    settings = settings_for(folders[family], lr=3e-3)
    model = build_model(settings)
    before = checksums(model)
    batch = samples(model, n=4, views=2)
    losses = steps(model, batch, 15)
    after = checksums(model)
    changed = {c for c in before if abs(after[c] - before[c]) > 1e-6}
    assert changed == {"vision", "fusion", "connector", "heads"}, changed
    assert after["lm"] == before["lm"]
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3]), losses


@pytest.mark.parametrize("family", FAMILIES)
def test_phase2_trains_what_its_config_says(family, folders):
    lora = {"lora": {"lm": {"enabled": True, "r": 4}}}
    settings = settings_for(folders[family], lr=3e-3, vlm=lora, vqa={"trainable": ["fusion", "lm"]})
    model = build_model(settings)
    before = checksums(model)
    steps(model, samples(model, n=2, views=2, qa=True), 3, loss="infonce")
    after = checksums(model)
    changed = {c for c in before if abs(after[c] - before[c]) > 1e-6}
    assert changed == {"fusion", "lm.lora"}, changed  # the LM through its adapters only
    state = model.trainable_state()
    lm_keys = [k for k in state if model.component(k) == "lm"]
    assert lm_keys and all("lora_" in k for k in lm_keys)  # LoRA'd LM: adapters checkpointed, not its base


@pytest.mark.parametrize("family", FAMILIES)
def test_phase2_overfits_one_small_batch(family, folders):
    model = build_model(settings_for(folders[family], lr=1e-2))
    losses = steps(model, samples(model, n=2, views=2, qa=True), 20, loss="infonce")
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3]), losses


def test_learning_rate_per_component(folders):
    settings = settings_for(folders["llava"], lr=1e-3, vlm={"lr": {"vision": 1e-5}})
    model = build_model(settings)
    optimizer = make_optimizer(model, settings, "align")
    lrs = {g["component"]: g["lr"] for g in optimizer.param_groups}
    assert lrs == {"vision": 1e-5, "fusion": 1e-3, "connector": 1e-3, "heads": 1e-3}
    assert all(g["weight_decay"] == 0.01 for g in optimizer.param_groups)


@pytest.mark.parametrize("family", FAMILIES)
def test_answers_come_from_the_original_image_and_batching_does_not_change_them(family, folders):
    model = build_model(settings_for(folders[family], connector={"factor": 4})).eval()
    with torch.no_grad():
        model.fusion.gate.fill_(0.5)
    image = images(1)[0]
    questions = ["what?", "which organ is on the left side of the image?"]
    together = model.answer(image, questions, max_new_tokens=4)
    alone = [model.answer(image, [q], max_new_tokens=4)[0] for q in questions]
    assert together == alone and all(isinstance(a, str) and a for a in together)


def test_an_unknown_family_is_named(folders, tmp_path):
    from transformers import AutoConfig

    from loclens.train.families import family_for

    class Fake:
        config = AutoConfig.for_model("blip-2")

    with pytest.raises(ValueError, match="'blip-2' has no lens adapter.*idefics3.*llava"):
        family_for(Fake(), None, 4, True)


def test_a_hub_model_is_read_from_the_cache_only_unless_download_is_asked(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    rev = "a" * 40
    with pytest.raises(ModelSourceError, match=f"hf download HuggingFaceTB/SmolVLM-256M-Instruct --revision {rev}"):
        resolve_model_source("HuggingFaceTB/SmolVLM-256M-Instruct", rev, download=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelSourceError, match="HF_HUB_OFFLINE.*hf download"):
        resolve_model_source("HuggingFaceTB/SmolVLM-256M-Instruct", rev, download=True)
    with pytest.raises(ModelSourceError, match="pinned revision"):
        resolve_model_source("HuggingFaceTB/SmolVLM-256M-Instruct", None)
    with pytest.raises(ModelSourceError, match="model folder not found"):
        resolve_model_source(str(tmp_path / "nowhere"))
    (tmp_path / "folder").mkdir()
    with pytest.raises(ModelSourceError, match="no config.json"):
        resolve_model_source(str(tmp_path / "folder"))


def test_components_cover_every_parameter(folders):
    for family in FAMILIES:
        model = build_model(settings_for(folders[family], vlm={"lora": {"vision": {"enabled": True}}}))
        assert {model.component(n) for n, _ in model.named_parameters()} == set(COMPONENTS)


def test_bf16_weights_train_a_step_with_the_new_modules_in_fp32(folders):
    model = build_model(settings_for(folders["llava"], vlm={"dtype": "bfloat16"}))
    assert model.model.dtype == torch.bfloat16 and model.fusion.gate.dtype == torch.float32
    losses = steps(model, samples(model, n=2, views=2, qa=True), 2, loss="infonce")
    assert all(np.isfinite(losses))


def test_a_checkpoint_of_another_model_is_refused(folders, tmp_path):
    from safetensors.torch import save_file

    from loclens.train.checkpoint import load_weights

    model = build_model(settings_for(folders["idefics3"]))
    save_file(
        {"fusion.gate": torch.zeros(()), "model.model.vision_tower.x": torch.zeros(1)},
        str(tmp_path / "model.safetensors"),
    )
    with pytest.raises(ValueError, match="model.safetensors: does not fit this model.*vision_tower"):
        load_weights(tmp_path, model)
    save_file({"image_head.bias": torch.zeros(256)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="no lens fusion weights"):
        load_weights(tmp_path, model)


def test_cli_names_the_model_to_fetch_when_offline(tmp_path, monkeypatch, capsys):
    from huggingface_hub import constants

    from loclens import cli

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    settings = (
        '{"model": "vlm", "vlm": {"model": "HuggingFaceTB/SmolVLM-500M-Instruct", "revision": "' + "b" * 40 + '"}}'
    )
    (tmp_path / "release").mkdir()
    argv = [
        "train",
        "--phase",
        "align",
        "--release",
        str(tmp_path / "release"),
        "--settings",
        settings,
        "--out",
        str(tmp_path / "out"),
    ]
    assert cli.main(argv) == 2
    assert "hf download HuggingFaceTB/SmolVLM-500M-Instruct --revision bbbb" in capsys.readouterr().err
