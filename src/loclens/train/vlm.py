"""The paper's method inside a Hugging Face vision-language model (``train.model: vlm``).

Vision path, the same in training and at inference:

    original + lens views --model's own vision encoder--> patch tokens (V, N, C)
        --LensFusion (Eq. 4)--> N tokens laid out as the original's
        --model's connector with pixel shuffle r (Eq. 5)--> n = N / r^2 image tokens
        --spliced into the prompt's image-token slots of inputs_embeds--> the model's own forward.

- Lens fusion: the original's patch tokens are the queries of one attention over the tokens of
  every view present (the lens views and the original itself, each tagged with a learned
  embedding of its view column); the result is added to the original's tokens through a gate
  ``tanh(g)`` that starts at 0, so at initialisation the fused tokens *are* the original's and a
  pretrained model starts unchanged. At inference (and for the no-lens baseline) the original is
  the only view: the same operation over its own tokens. The language model therefore receives
  exactly ``n`` image tokens per sample with or without views.
- Connector and token layout are the family's (``families.py``): Idefics3 / SmolVLM run their own
  ``Idefics3Connector`` with scale factor r; LLaVA gets a pixel-shuffle step before its projector.
- Phase 1 (``align``): the pooled image tokens (mean over the n tokens, then ``image_head``)
  against the organ / region text (the language model's mean last hidden state over the text,
  then ``text_head``), under the phase's contrastive loss (DCL by default). The language model
  is frozen; vision encoder, fusion, connector and heads train (``train.align.trainable``).
- Phase 2 (``vqa``): question (with the lens) -> answer under the model's LM loss, plus
  ``train.vlm.contrastive_weight`` x InfoNCE between the pooled image and the question-answer
  text. What trains is ``train.vqa.trainable``; phase 2 starts from phase 1's weights.
- LoRA (peft) on the vision encoder and/or the language model: the component's base weights stay
  frozen and only its adapters train and are checkpointed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..schema import IMAGE_COLUMNS
from .families import family_for
from .losses import contrastive_loss, same_pairs
from .vlm_source import resolve_model_source

log = logging.getLogger(__name__)

IGNORE = -100
#: Trainable parts of the lens model (``train.<phase>.trainable``, ``train.vlm.lr``).
COMPONENTS = ("vision", "fusion", "connector", "heads", "lm")
#: What is always checkpointed: the parts that do not exist in (or differ from) the source model.
NEW_COMPONENTS = ("fusion", "connector", "heads")
#: Phase 1's prompt text is not used by the LM (it is frozen and gets no LM loss); phase 2's
#: chat turn is the question, the assistant turn the answer.


class LensFusion(nn.Module):
    """Paper Eq. 4 over patch tokens: the original's tokens attend to the views' tokens."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"train.fusion_heads={heads} must divide the vision width {dim}")
        self.view_type = nn.Embedding(len(IMAGE_COLUMNS), dim)
        self.norm_q, self.norm_kv = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.gate = nn.Parameter(torch.zeros(()))

    def forward(self, tokens: torch.Tensor, view_ids: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """tokens (B, V, N, C), the original in slot 0; view_ids, present (B, V) -> (B, N, C)."""
        b, v, n, c = tokens.shape
        original = tokens[:, 0]
        keys = self.norm_kv(tokens + self.view_type(view_ids)[:, :, None, :]).reshape(b, v * n, c)
        ignore = ~present.repeat_interleave(n, dim=1)
        fused, _ = self.attn(self.norm_q(original), keys, keys, key_padding_mask=ignore, need_weights=False)
        return original + torch.tanh(self.gate) * fused


def _lora(module: nn.Module, cfg: dict) -> None:
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(
        r=cfg["r"], lora_alpha=cfg["alpha"], lora_dropout=cfg["dropout"], target_modules=list(cfg["target_modules"])
    )
    inject_adapter_in_model(config, module)


class VLMLens(nn.Module):
    """A Hugging Face image-text-to-text model with the lens in its vision path."""

    kind = "vlm"

    def __init__(self, settings: dict):
        super().__init__()
        from transformers import AutoModelForImageTextToText, AutoProcessor

        cfg, conn = settings["vlm"], settings["connector"]
        self.settings = settings
        self.source = {"model": cfg["model"], "revision": cfg["revision"]}
        self.path = resolve_model_source(cfg["model"], cfg["revision"], cfg["download"])
        self.processor = AutoProcessor.from_pretrained(self.path)
        self.model = AutoModelForImageTextToText.from_pretrained(self.path, dtype=getattr(torch, cfg["dtype"]))
        self.family = family_for(self.model, self.processor, conn["factor"], conn["pixel_shuffle"])
        width = self.model.config.get_text_config().hidden_size
        self.fusion = LensFusion(self.family.vision_width, settings["fusion_heads"])
        self.image_head = nn.Linear(width, settings["embed_dim"])
        self.text_head = nn.Linear(width, settings["embed_dim"])
        self.lora = {name: bool(cfg["lora"][name]["enabled"]) for name in ("vision", "lm")}
        if self.lora["vision"]:
            _lora(self.vision_module(), cfg["lora"]["vision"])
        if self.lora["lm"]:
            _lora(self.family.language_model(), cfg["lora"]["lm"])
        self.weight, self.max_length = cfg["contrastive_weight"], cfg["max_length"]
        self.max_new_tokens = cfg["max_new_tokens"]
        self.modified = set(NEW_COMPONENTS)
        self.trainable: set[str] = set()
        self.requires_grad_(False)  # nothing trains until a phase says what (configure_phase)

    # -- components --------------------------------------------------------------------------
    def vision_module(self) -> nn.Module:
        prefix = self.family.vision_prefixes[0][len("model.") :].rstrip(".")
        return self.model.get_submodule(prefix)

    def component(self, name: str) -> str:
        f = self.family
        for comp, prefixes in (
            ("fusion", ("fusion.",)),
            ("heads", ("image_head.", "text_head.")),
            ("vision", f.vision_prefixes),
            ("connector", f.connector_prefixes),
            ("lm", f.lm_prefixes),
        ):
            if name.startswith(prefixes):
                return comp
        raise ValueError(f"parameter {name!r} belongs to no lens component")

    def _trains(self, name: str, comp: str) -> bool:
        return comp in self.trainable and (not self.lora.get(comp) or "lora_" in name)

    def configure_phase(self, trainable: Sequence[str]) -> None:
        """Train exactly these components (LoRA'd ones through their adapters only)."""
        unknown = set(trainable) - set(COMPONENTS)
        if unknown:
            raise ValueError(f"unknown trainable component(s) {sorted(unknown)}; known: {list(COMPONENTS)}")
        self.trainable = set(trainable)
        self.modified |= self.trainable
        for name, p in self.named_parameters():
            p.requires_grad_(self._trains(name, self.component(name)))

    def train(self, mode: bool = True):
        super().train(mode)
        if mode:  # frozen components: no dropout
            for comp, module in (("vision", self.vision_module()), ("lm", self.family.language_model())):
                if comp not in self.trainable:
                    module.eval()
        return self

    def param_groups(self, lr: float, weight_decay: float, lrs: dict) -> list[dict]:
        """AdamW groups per component; ``lrs[component]`` (null = ``lr``) sets its learning rate."""
        groups: dict[str, list] = {}
        for name, p in self.named_parameters():
            if p.requires_grad:
                groups.setdefault(self.component(name), []).append(p)
        return [
            {"params": ps, "lr": lrs.get(c) or lr, "weight_decay": weight_decay, "component": c}
            for c, ps in groups.items()
        ]

    # -- checkpoints ---------------------------------------------------------------------------
    def _saved(self, name: str) -> bool:
        comp = self.component(name)
        return comp in self.modified and (not self.lora.get(comp) or "lora_" in name)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """The components that differ from the source model (LoRA'd ones: their adapters);
        tied weights once (safetensors refuses shared tensors)."""
        seen, out = set(), {}
        for k, v in self.state_dict().items():
            if self._saved(k) and v.data_ptr() not in seen:
                seen.add(v.data_ptr())
                out[k] = v
        return out

    def load_trained(self, state: dict, where: str) -> None:
        """Load a checkpoint's components (a subset of the model's state); they count as modified."""
        own = self.state_dict()
        unexpected = sorted(set(state) - set(own))
        if unexpected:
            raise ValueError(f"{where}: does not fit this model (unexpected {unexpected[:5]})")
        if not any(k.startswith("fusion.") for k in state):
            raise ValueError(f"{where}: holds no lens fusion weights (not a loclens vlm checkpoint)")
        self.modified |= {self.component(k) for k in state}
        self.load_state_dict(state, strict=False)

    def spec(self) -> dict:
        return {
            "kind": self.kind,
            **self.source,
            "path": self.path,
            "family": type(self.family).__name__,
            "image_tokens": self.family.n_image_tokens,
        }

    # -- data side (DataLoader workers) -----------------------------------------------------------
    def _prompt(self, question: str, answer: str | None) -> str:
        """The chat text of one turn with the image placeholder replaced by the family's image
        tokens (as many as the connector yields)."""
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        if answer is not None:
            messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
        if not getattr(self.processor, "chat_template", None):
            raise ValueError(f"{self.path}: the processor has no chat template")
        text = self.processor.apply_chat_template(messages, add_generation_prompt=answer is None)
        placeholder = self.processor.image_token
        if text.count(placeholder) != 1:
            raise ValueError(
                f"{self.path}: the chat template renders {text.count(placeholder)} image placeholders, not 1"
            )
        return text.replace(placeholder, self.family.image_prompt())

    def _ids(self, text: str) -> list[int]:
        return self.processor.tokenizer(text)["input_ids"]

    def qa_tokens(self, question: str, answer: str) -> tuple[list[int], list[int]]:
        """input ids of the full turn and labels that score only the answer's tokens. The prompt's
        length is the common prefix with the full text's ids (right when a tokenizer appends an
        end token to every text)."""
        full, prefix = self._ids(self._prompt(question, answer)), self._ids(self._prompt(question, None))
        n_prefix = next((k for k, (a, b) in enumerate(zip(prefix, full)) if a != b), len(prefix))
        if len(full) > self.max_length:
            raise ValueError(
                f"a question-answer turn needs {len(full)} tokens, over train.vlm.max_length={self.max_length}"
            )
        return full, [IGNORE] * n_prefix + full[n_prefix:]

    def prepare(self, sample: dict) -> dict:
        sample = dict(sample)
        pixels = [self.family.pixels(im) for im in sample.pop("images")]
        sample["vision"] = {k: torch.stack([p[k] for p in pixels]) for k in pixels[0]}
        if sample["question"] is not None:
            sample["input_ids"], sample["labels"] = self.qa_tokens(sample["question"], sample["answer"])
        return sample

    def collate(self, samples: list[dict]) -> dict:
        b, v = len(samples), max(len(s["columns"]) for s in samples)
        first = samples[0]["vision"]
        vision = {k: t.new_zeros((b, v, *t.shape[1:])) for k, t in first.items()}
        present = torch.zeros((b, v), dtype=torch.bool)
        view_ids = torch.zeros((b, v), dtype=torch.long)
        for i, s in enumerate(samples):
            n = len(s["columns"])
            for k, t in s["vision"].items():
                vision[k][i, :n] = t
            present[i, :n] = True
            view_ids[i, :n] = torch.tensor([IMAGE_COLUMNS.index(c) for c in s["columns"]])
        batch = {
            "vision": vision,
            "present": present,
            "view_ids": view_ids,
            "texts": [s["text"] for s in samples],
            "image_ids": [s["image_id"] for s in samples],
            "keys": [s["key"] for s in samples],
        }
        if "input_ids" in samples[0]:
            batch.update(self._pad([s["input_ids"] for s in samples], [s["labels"] for s in samples], left=False))
        return batch

    def _pad(self, ids: list[list[int]], labels: list[list[int]] | None = None, left: bool = False) -> dict:
        pad = self.processor.tokenizer.pad_token_id
        pad = 0 if pad is None else pad
        width = max(len(x) for x in ids)
        out = {
            "input_ids": torch.full((len(ids), width), pad, dtype=torch.long),
            "attention_mask": torch.zeros((len(ids), width), dtype=torch.long),
        }
        if labels is not None:
            out["labels"] = torch.full((len(ids), width), IGNORE, dtype=torch.long)
        for i, x in enumerate(ids):
            sl = slice(width - len(x), width) if left else slice(0, len(x))
            out["input_ids"][i, sl] = torch.tensor(x)
            out["attention_mask"][i, sl] = 1
            if labels is not None:
                out["labels"][i, sl] = torch.tensor(labels[i])
        return out

    # -- model side --------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.image_head.weight.device

    def image_tokens(self, vision: dict, present: torch.Tensor, view_ids: torch.Tensor) -> torch.Tensor:
        """Views (B, V, ...) with the original in slot 0 -> the LM's image tokens (B, n, D)."""
        dev = self.device
        vision = {k: t.to(dev) for k, t in vision.items()}
        present, view_ids = present.to(dev), view_ids.to(dev)
        b, v = present.shape
        grad = torch.enable_grad() if "vision" in self.trainable and torch.is_grad_enabled() else torch.no_grad()
        with grad:
            patches = self.family.patch_embeddings({k: t[present] for k, t in vision.items()})
        grid = patches.new_zeros((b, v, *patches.shape[1:]), dtype=self.fusion.gate.dtype)
        grid[present] = patches.to(grid.dtype)
        fused = self.fusion(grid, view_ids, present)
        return self.family.connect(fused.to(self.model.dtype))

    def splice(self, input_ids: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """The prompt's token embeddings with its image-token slots holding ``image`` (B, n, D)."""
        embeds = self.family.input_embeddings()(input_ids)
        slots = input_ids == self.family.image_token_id
        counts = slots.sum(dim=1)
        if (counts != image.shape[1]).any():
            raise ValueError(f"prompts hold {counts.tolist()} image tokens, the vision path gives {image.shape[1]}")
        return embeds.masked_scatter(slots[..., None], image.to(embeds.dtype))

    def text_features(self, texts: list[str]) -> torch.Tensor:
        """Mean last hidden state of the language model over each text's tokens (B, D)."""
        tok = self.processor.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        mask = tok["attention_mask"].to(self.device)
        grad = torch.enable_grad() if "lm" in self.trainable and torch.is_grad_enabled() else torch.no_grad()
        with grad:
            hidden = self.family.language_model()(
                input_ids=tok["input_ids"].to(self.device), attention_mask=mask
            ).last_hidden_state
        m = mask[..., None].to(hidden.dtype)
        return ((hidden * m).sum(1) / m.sum(1).clamp_min(1.0)).float()

    def contrast(
        self, image: torch.Tensor, texts: list[str], image_ids: list[str], loss: str, temperature: float
    ) -> torch.Tensor:
        img = F.normalize(self.image_head(image.float().mean(dim=1)), dim=-1)
        txt = F.normalize(self.text_head(self.text_features(texts)), dim=-1)
        return contrastive_loss(loss, img @ txt.T / temperature, same_pairs(texts, image_ids).to(self.device))

    def forward(self, batch: dict, loss: str, temperature: float) -> torch.Tensor:
        """Phase 1 (no ``input_ids``): the contrastive loss. Phase 2: LM loss + weight x contrastive."""
        image = self.image_tokens(batch["vision"], batch["present"], batch["view_ids"])
        contrast = self.contrast(image, batch["texts"], batch["image_ids"], loss, temperature)
        if "input_ids" not in batch:
            return contrast
        ids = batch["input_ids"].to(self.device)
        out = self.model(
            inputs_embeds=self.splice(ids, image),
            attention_mask=batch["attention_mask"].to(self.device),
            labels=batch["labels"].to(self.device),
        )
        return out.loss + self.weight * contrast

    # -- inference -------------------------------------------------------------------------------------
    @torch.no_grad()
    def answer(self, image, questions: Sequence[str], max_new_tokens: int | None = None) -> list[str]:
        """Greedy answers to ``questions`` about one original image (no lens views), through the
        same vision path as training; the model's own ``generate`` on the spliced embeddings."""
        if not questions:
            return []
        pixels = self.family.pixels(np.asarray(image))
        vision = {k: t[None, None] for k, t in pixels.items()}
        one = torch.ones((1, 1), dtype=torch.bool)
        image_tokens = self.image_tokens(vision, one, torch.zeros((1, 1), dtype=torch.long))
        batch = self._pad([self._ids(self._prompt(q, None)) for q in questions], left=True)
        ids = batch["input_ids"].to(self.device)
        embeds = self.splice(ids, image_tokens.expand(len(questions), -1, -1))
        tok = self.processor.tokenizer
        out = self.model.generate(
            inputs_embeds=embeds,
            attention_mask=batch["attention_mask"].to(self.device),
            max_new_tokens=max_new_tokens or self.max_new_tokens,
            do_sample=False,
            pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else 0,
        )
        return [tok.decode(row, skip_special_tokens=True).strip() for row in out]


def generate_answers_for_rows(model: VLMLens, rows, max_new_tokens: int | None = None):
    """Release rows (``image`` cell and ``qa`` list, as ``evaluate.answer.iter_rows`` yields them)
    -> one ``{"image_id", "qid", "question", "prediction"}`` per question, from the original image
    alone. What evaluation calls for the lens VLMs."""
    from ..imageio import load_rgb

    for row in rows:
        questions = [qa["question"] for qa in row["qa"] or []]
        if not questions:
            continue
        image = load_rgb(row["image"]["bytes"], row["image_id"])
        for qa, text in zip(row["qa"], model.answer(image, questions, max_new_tokens)):
            yield {"image_id": row["image_id"], "qid": qa["qid"], "question": qa["question"], "prediction": text}
