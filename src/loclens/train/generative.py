"""Generative adapter: SmolVLM / Idefics3 trained with the language-model loss plus a contrastive term.

The three views of a sample (original, two lens views) are passed as three images in one user
turn, followed by the prompt (phase 1: which region / organs; phase 2: the question); the
assistant turn is the target (the region text; the answer). The loss is

    LM loss on the assistant tokens + contrastive_weight * contrastive(image, text),

where the image representation is the mean of the projected image tokens of the sample's views,
the text representation the mean of the language model's last hidden states over the answer
tokens, and the contrastive loss the phase's (DCL or InfoNCE). The image features are computed
once and handed to the language model, so the vision tower runs once per step.

Loaded from a local folder (``train.generative.path``) with ``AutoProcessor`` and
``AutoModelForImageTextToText``; nothing is downloaded.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .losses import contrastive_loss, same_pairs
from .towers import _hf_folder

ALIGN_PROMPT = "Which body region and organs does this image show?"
IGNORE = -100


class GenerativeAdapter(nn.Module):
    kind = "generative"

    def __init__(self, settings: dict):
        super().__init__()
        from transformers import AutoModelForImageTextToText, AutoProcessor

        cfg = settings["generative"]
        self.settings = settings
        self.path = _hf_folder(cfg["path"], "train.generative.path")
        self.processor = AutoProcessor.from_pretrained(self.path)
        self.processor.tokenizer.padding_side = "right"  # prompts start at 0, so the prefix mask is a slice
        self.model = AutoModelForImageTextToText.from_pretrained(self.path, dtype=torch.float32)
        self.weight, self.max_length = cfg["contrastive_weight"], cfg["max_length"]
        self.frozen_prefix = "model.model.vision_model." if cfg["freeze_vision"] else None
        if self.frozen_prefix:
            self.model.model.vision_model.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen_prefix:
            self.model.model.vision_model.eval()
        return self

    # -- data side (DataLoader workers) ---------------------------------------------------------
    def _messages(self, n_images: int, prompt: str, answer: str | None) -> list[dict]:
        content = [{"type": "image"} for _ in range(n_images)] + [{"type": "text", "text": prompt}]
        messages = [{"role": "user", "content": content}]
        if answer is not None:
            messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
        return messages

    def prepare(self, sample: dict) -> dict:
        prompt, answer = (sample["question"], sample["answer"]) if sample["question"] else (ALIGN_PROMPT, sample["text"])
        n = len(sample["images"])
        template = self.processor.apply_chat_template
        return {
            **sample,
            "full": template(self._messages(n, prompt, answer), add_generation_prompt=False),
            "prefix": template(self._messages(n, prompt, None), add_generation_prompt=True),
        }

    def collate(self, samples: list[dict]) -> dict:
        images = [s["images"] for s in samples]
        kwargs = {"padding": True, "truncation": False, "return_tensors": "pt"}
        batch = self.processor(text=[s["full"] for s in samples], images=images, **kwargs)
        labels = batch["input_ids"].clone()
        for i, s in enumerate(samples):
            # The prompt (images included) is not a target: mask its tokens out of the LM loss.
            # Its length is the common prefix with the full text's tokens, which stays right
            # when a tokenizer appends an end token to every text.
            prefix = self.processor(text=[s["prefix"]], images=[s["images"]])["input_ids"][0]
            full = batch["input_ids"][i].tolist()
            n_prefix = next((k for k, (a, b) in enumerate(zip(prefix, full)) if a != b), len(prefix))
            labels[i, :n_prefix] = IGNORE
        labels[batch["attention_mask"] == 0] = IGNORE
        if labels.shape[1] > self.max_length:
            raise ValueError(f"a batch needs {labels.shape[1]} tokens, over train.generative.max_length={self.max_length}")
        return {
            "inputs": dict(batch),
            "labels": labels,
            "n_images": [len(s["images"]) for s in samples],
            "texts": [s["text"] for s in samples],
            "image_ids": [s["image_id"] for s in samples],
            "keys": [s["key"] for s in samples],
        }

    # -- model side -------------------------------------------------------------------------
    def forward(self, batch: dict, loss: str, temperature: float) -> torch.Tensor:
        device = self.model.lm_head.weight.device
        inputs = {k: v.to(device) for k, v in batch["inputs"].items()}
        labels = batch["labels"].to(device)
        core = self.model.model
        image = core.get_image_features(inputs.pop("pixel_values"), inputs.pop("pixel_attention_mask", None), return_dict=True)
        out = self.model(**inputs, mm_encoder_outputs={"image": image}, labels=labels, output_hidden_states=True)
        if self.weight == 0:
            return out.loss
        image_rep = torch.stack([f.float().mean(dim=0) for f in image.pooler_output])  # (B, hidden)
        answer = (labels != IGNORE).unsqueeze(-1).float()
        hidden = out.hidden_states[-1].float()
        text_rep = (hidden * answer).sum(1) / answer.sum(1).clamp_min(1.0)
        logits = F.normalize(image_rep, dim=-1) @ F.normalize(text_rep, dim=-1).T / temperature
        positives = same_pairs(batch["texts"], batch["image_ids"]).to(device)
        return out.loss + self.weight * contrastive_loss(loss, logits, positives)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        state = self.state_dict()
        if self.frozen_prefix:
            state = {k: v for k, v in state.items() if not k.startswith(self.frozen_prefix)}
        # Tied weights (lm_head = embeddings) are stored once; safetensors refuses shared tensors.
        seen, out = set(), {}
        for k, v in state.items():
            if v.data_ptr() in seen:
                continue
            seen.add(v.data_ptr())
            out[k] = v
        return out

    def spec(self) -> dict:
        return {"kind": self.kind, "path": self.path}
