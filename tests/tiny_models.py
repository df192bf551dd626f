"""Tiny randomly initialised Hugging Face models saved to a folder, for the towers that have no
small pretrained weights here (a ViT for the "any HF vision model" tower, an Idefics3 VLM for
the lens VLM families: Idefics3 / SmolVLM and LLaVA). They are loaded back by path exactly as
real ones are."""

from __future__ import annotations

from pathlib import Path

import torch

#: A SmolVLM-like chat format: images then text in the user turn, answer in the assistant turn.
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] | capitalize }}:"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)


def tiny_vit(out: Path) -> Path:
    """ViT with a 64x64 input and 8x8 patches: an 8x8 grid of 32 channels."""
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    config = ViTConfig(
        image_size=64, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    ViTModel(config, add_pooling_layer=False).save_pretrained(out)
    return out


def _tokenizer(image_tokens: list[str]):
    """MiniLM's WordPiece tokenizer (shipped offline) plus a VLM family's special tokens."""
    from transformers import AutoTokenizer

    from loclens.train.towers import default_text_path

    tok = AutoTokenizer.from_pretrained(default_text_path())
    tok.add_special_tokens({"additional_special_tokens": image_tokens})
    return tok


def _llama(tok) -> dict:
    return {
        "model_type": "llama",
        "vocab_size": len(tok),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "pad_token_id": tok.pad_token_id,
        "max_position_embeddings": 512,
    }


def tiny_idefics3(out: Path, image_size: int = 64, patch_size: int = 8, scale_factor: int = 2) -> Path:
    """Idefics3 (SigLIP vision + Llama text) of a few thousand parameters, with a processor
    built on MiniLM's tokenizer plus Idefics3's special tokens; 64x64 images, an 8x8 patch
    grid, the model's own pixel shuffle factor 2."""
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessor,
        Idefics3Processor,
    )

    special = ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"]
    special += [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
    tok = _tokenizer(special)
    images = Idefics3ImageProcessor(
        do_image_splitting=False, size={"longest_edge": image_size}, max_image_size={"longest_edge": image_size}
    )
    seq = (image_size // patch_size) ** 2 // scale_factor**2
    processor = Idefics3Processor(image_processor=images, tokenizer=tok, image_seq_len=seq, chat_template=CHAT_TEMPLATE)
    config = Idefics3Config(
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": image_size,
            "patch_size": patch_size,
        },
        text_config=_llama(tok),
        scale_factor=scale_factor,
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    Idefics3ForConditionalGeneration(config).save_pretrained(out)
    processor.save_pretrained(out)
    return out


def tiny_llava(out: Path, image_size: int = 64, patch_size: int = 8) -> Path:
    """LLaVA (CLIP vision tower + Llama text, LLaVA-Med's architecture) of a few thousand
    parameters; 64x64 images, an 8x8 patch grid after the CLS token is dropped."""
    from transformers import (
        CLIPImageProcessor,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tok = _tokenizer(["<image>", "<end_of_utterance>"])
    images = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    processor = LlavaProcessor(
        image_processor=images,
        tokenizer=tok,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
    )
    config = LlavaConfig(
        vision_config={
            "model_type": "clip_vision_model",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": image_size,
            "patch_size": patch_size,
            "projection_dim": 32,
        },
        text_config=_llama(tok),
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    torch.manual_seed(0)
    LlavaForConditionalGeneration(config).save_pretrained(out)
    processor.save_pretrained(out)
    return out
