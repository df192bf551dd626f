"""A crafted dataset in the VQA-RAD release layout holding every kind of bad input at once,
with the outcome each must have. Used by the fast unit tests and by the shared workflow builds
(tests/test_reliability_workflow.py), so one Snakemake build exercises all cases."""

from __future__ import annotations

import io
import json
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from loclens.provenance import sha256_bytes
from loclens.sources.sample import _phantom
from loclens.sources.vqa_rad import IMAGE_DIR, JSON_NAME

#: Side of the large image: above the reduced-read size tests use (segment.read_max_side),
#: made cheaply (a phantom scaled up, so its PNG is small) but decoded at full size.
LARGE_SIZE = (4000, 3000)


def phantom(region: str = "abdomen", size: int = 256, seed: int = 0) -> np.ndarray:
    """A grayscale phantom with organs (so the otsu prompts and LiteMedSAM find structure)."""
    gray, _ = _phantom(region, size, np.random.default_rng(seed))
    return np.round(gray * 255).astype(np.uint8)


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (a decompression bomb), made without
    allocating the pixels: signature, IHDR and a tiny IDAT."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")
    )


def image_files() -> dict[str, bytes]:
    """File name -> bytes of every image in the crafted folder."""
    gray16 = phantom("head", 256, 3).astype(np.uint16) * 16 + 100  # a 12-bit CT-like range
    alpha = np.zeros((256, 256), np.uint8)
    alpha[16:-16, 16:-16] = 255  # an opaque body, a transparent frame
    rgba = np.dstack([np.repeat(phantom("abdomen", 256, 4)[..., None], 3, axis=2), alpha])
    cmyk = Image.fromarray(phantom("chest", 256, 5)).convert("CMYK")
    large = Image.fromarray(phantom("abdomen", 400, 6)).resize(LARGE_SIZE, Image.Resampling.NEAREST)
    truncated = encode(Image.fromarray(phantom("chest", 256, 7)), "JPEG", quality=90)
    return {
        "gray16.png": encode(Image.fromarray(gray16), "PNG"),
        "cmyk.jpg": encode(cmyk, "JPEG", quality=90),
        "alpha.png": encode(Image.fromarray(rgba, "RGBA"), "PNG"),
        "jpeg_named.png": encode(Image.fromarray(phantom("head", 256, 8)), "JPEG", quality=90),
        "large.png": encode(large, "PNG", compress_level=1),
        "palette.png": encode(
            Image.fromarray(phantom("chest", 256, 12)).convert("P", palette=Image.Palette.ADAPTIVE), "PNG"
        ),
        "truncated.jpg": truncated[: len(truncated) // 2],
        "not_png.png": b"<html><body>404 Not Found</body></html>\n",
        "tiny.png": encode(Image.new("L", (1, 1), 128), "PNG"),
        "bomb.png": png_header_only(20000, 20000),
        "orphan.png": encode(Image.fromarray(phantom("head", 256, 9)), "PNG"),
    }


@dataclass
class Expected:
    """What the build must make of the crafted dataset."""

    released: set[str] = field(default_factory=set)  # qids
    rejected: list[tuple[str | None, str, str]] = field(default_factory=list)  # (qid, file fragment, reason fragment)
    orphans: set[str] = field(default_factory=set)  # image files without QA
    input_records: int = 0
    outside_sha256: str = ""  # bytes of the file a '../' name points at: must never be released


#: Placeholders replaced by raw bytes after JSON encoding (non-UTF-8 text in the file).
LATIN1_PLACEHOLDER = "@@LATIN1@@"


def _qa(qid, image, question="Is there a liver?", answer="yes", phrase="freeform", **kw) -> dict:
    rec = {
        "qid": qid,
        "phrase_type": phrase,
        "qid_linked_id": f"link-{qid}",
        "image_name": image,
        "image_organ": "ABD",
        "question": question,
        "answer": answer,
        "answer_type": "CLOSED",
        "question_type": "PRES",
    }
    rec.update(kw)
    return rec


def write_messy_release(root: Path) -> Expected:
    """Write the crafted dataset under ``root``; return what each record must become."""
    images = root / IMAGE_DIR
    images.mkdir(parents=True, exist_ok=True)
    for name, data in image_files().items():
        (images / name).write_bytes(data)
    outside = encode(Image.fromarray(phantom("chest", 256, 10)), "PNG")
    (root / "outside.png").write_bytes(outside)

    exp = Expected(outside_sha256=sha256_bytes(outside), orphans={"orphan.png"})
    records: list = []
    # Images that must be released, each of another kind (the segmenter costs seconds per
    # image on a CPU, so there is no plain one: an 8-bit palette PNG and JPEGs cover those).
    good = ["gray16.png", "cmyk.jpg", "alpha.png", "jpeg_named.png", "large.png", "palette.png"]
    qid = 100
    for k, name in enumerate(good):
        records.append(_qa(qid, name))
        exp.released.add(str(qid))
        qid += 1
        if k % 2 == 0:  # some images also have a test question (VQA-RAD's split is by question)
            records.append(
                _qa(
                    qid,
                    name,
                    question="What organ is this?",
                    answer="liver",
                    phrase="test_freeform",
                    answer_type="OPEN",
                    question_type="ORGAN",
                )
            )
            exp.released.add(str(qid))
            qid += 1

    def bad(rec, file_fragment: str, reason_fragment: str):
        records.append(rec)
        exp.rejected.append((str(rec["qid"]), file_fragment, reason_fragment))

    bad(_qa(200, "truncated.jpg"), "truncated.jpg", "truncated or corrupt")
    bad(_qa(201, "not_png.png"), "not_png.png", "not a readable image")
    bad(_qa(202, "tiny.png"), "tiny.png", "too small")
    bad(_qa(203, "bomb.png"), "bomb.png", "exceeds the limit")
    bad(_qa(204, "missing.png"), "missing.png", "image file not found")
    bad(_qa(205, "../outside.png"), "outside.png", "escapes the dataset root")
    bad(_qa(206, "/etc/hostname"), "hostname", "escapes the dataset root")
    bad(
        _qa(207, good[0], question=f"Is the l{LATIN1_PLACEHOLDER}sion visible?"),
        JSON_NAME,
        "'question' is not valid UTF-8",
    )
    bad(_qa(208, good[0], answer="\udc9f"), JSON_NAME, "'answer' is not valid UTF-8")
    bad(_qa(209, good[0], question="   "), JSON_NAME, "empty or non-text question")
    bad(_qa(210, good[0], answer=""), JSON_NAME, "empty answer")
    bad(_qa(211, good[0], answer=" "), JSON_NAME, "empty answer")
    bad(_qa(212, good[0], answer=None), JSON_NAME, "missing key 'answer'")
    # duplicates of qid 100 (kept): identical, then conflicting
    bad(_qa(100, good[0]), JSON_NAME, "duplicate record (identical to")
    bad(_qa(100, good[0], answer="no"), JSON_NAME, "duplicate qid with conflicting content")
    records.append(42)
    exp.rejected.append((None, JSON_NAME, "not an object"))
    records.append({k: v for k, v in _qa(0, good[0]).items() if k != "qid"})
    exp.rejected.append((None, JSON_NAME, "missing key 'qid'"))
    exp.input_records = len(records)

    text = json.dumps(records, indent=1)  # \udc9f stays an escape: valid JSON, invalid text
    data = text.encode("ascii").replace(LATIN1_PLACEHOLDER.encode(), "é".encode("latin-1"))
    (root / JSON_NAME).write_bytes(data)
    return exp


__all__ = ["write_messy_release", "image_files", "Expected", "phantom", "png_header_only", "LARGE_SIZE"]


def check_outcome(exp: Expected, released_qids: list[str], rejects: list[dict]) -> None:
    """Every record of the crafted dataset ended where it must, with the file and the reason;
    rejects are dicts as in rejects.jsonl."""
    assert sorted(released_qids) == sorted(exp.released), "released QA differ"
    qa_rejects = [r for r in rejects if r["kind"] == "qa"]
    unmatched = list(qa_rejects)
    for qid, file_fragment, reason_fragment in exp.rejected:
        hit = next(
            (
                r
                for r in unmatched
                if r["qid"] == qid and file_fragment in r["source_file"] and reason_fragment in r["reason"]
            ),
            None,
        )
        assert hit is not None, (
            f"no reject for qid {qid} naming {file_fragment!r} with {reason_fragment!r}: {qa_rejects}"
        )
        unmatched.remove(hit)
    assert not unmatched, f"unexpected rejects: {unmatched}"
    assert {Path(r["source_file"]).name for r in rejects if r["kind"] == "image"} == exp.orphans
    assert len(released_qids) + len(qa_rejects) == exp.input_records
    for r in rejects:  # reports must not carry absolute local paths (they are published)
        assert not r["reason"].startswith("/") and "/tmp" not in r["reason"], r
