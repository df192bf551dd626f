"""Reader for SLAKE 1.0 (Liu et al., ISBI 2021), from either published layout.

- Original release: ``train.json``, ``validate.json``, ``test.json``, ``mask.txt``, ``KG/`` and
  ``imgs/xmlab<N>/{source.jpg, mask.png, detection.json, question.json}`` with N = ``img_id``.
- Hugging Face copy ``BoKelvin/SLAKE``: the same JSON files with ``validate.json`` renamed to
  ``validation.json``, and the images only inside ``imgs.zip`` (which holds ``imgs/xmlab<N>/...``).
  The archive is extracted safely (``loclens.archive``) into the ``unpack_dir`` the ingest stage
  passes (``<resources>/unpacked/<dataset>``), unless ``imgs/`` already exists beside it.

Both layouts give identical records: ``source_file`` is ``imgs/xmlab<N>/source.jpg`` either way.

Records are JSON arrays of flat objects with 12 keys in varying order (``img_id``, ``img_name``,
``question``, ``answer``, ``q_lang``, ``location``, ``modality``, ``answer_type``, ``base_type``,
``content_type``, ``triple``, ``qid``). Quirks handled: half the rows are Chinese (``q_lang: zh``;
the ingest stage keeps the configured ``lang``, the others are rejected with that reason);
Chinese rows of one image can sit in another split than its English rows (under
``split: grouped`` an image is in exactly one split); answers can be empty strings (rejected with
the reason); CLOSED does not mean yes/no (the official label is kept). ``content_type`` becomes
the QA's ``question_type``; every other field is kept verbatim in ``extra``. The per-image
``question.json`` duplicates the split files and ``KG/`` is the knowledge graph: neither is read.

Expert annotations per image folder (``mask.png``, ``detection.json``, classes named in the
top-level ``mask.txt``) are validated and attached as described in ``sources/expert.py``.
"""

from __future__ import annotations

import collections
import functools
import re
from pathlib import Path

from ..archive import ArchiveError, safe_extract
from .base import (
    QA,
    ImageRecord,
    IngestResult,
    Reject,
    SourceError,
    group_records,
    load_images,
    load_json_list,
    normalise_answer,
    normalise_answer_type,
    normalise_question,
)
from .expert import expert_masks, read_boxes, read_class_names

#: Official split -> the file names it has in the two layouts (original first).
SPLIT_FILES = {"train": ("train.json",), "validation": ("validate.json", "validation.json"), "test": ("test.json",)}
IMAGE_DIR = "imgs"
IMAGE_ZIP = "imgs.zip"
CLASS_NAMES = "mask.txt"
MASK_FILE = "mask.png"
BOXES_FILE = "detection.json"

#: Keys every record must have.
REQUIRED_KEYS = ("qid", "img_id", "img_name", "question", "answer", "answer_type", "q_lang", "content_type")
#: Keys mapped onto QA fields; all others (and img_id, img_name) are kept in ``extra`` verbatim.
CORE_KEYS = {"qid", "question", "answer", "answer_type", "q_lang", "content_type"}
LANGS = ("en", "zh")

#: SLAKE ``location`` -> body_region (the vocabulary VQA-RAD rows use).
BODY_REGIONS = {
    "lung": "chest",
    "chest_lung": "chest",
    "chest_heart": "chest",
    "chest_mediastinal": "chest",
    "abdomen": "abdomen",
    "pelvic cavity": "pelvis",
    "brain": "head",
    "brain_tissue": "head",
    "brain_face": "head",
    "neck": "neck",
}

_IMG_NAME = re.compile(r"^xmlab(\d+)/source\.jpg$")


def _as_int(value, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip().isdigit():
        raise ValueError(f"{key} {value!r} is not an integer")
    return int(value)


def _parse_qa(rec: dict, split: str) -> tuple[QA, str]:
    """Normalise one record to (QA, image file ``xmlab<N>/source.jpg``); raise ValueError naming the problem."""
    missing = [k for k in REQUIRED_KEYS if rec.get(k) is None]
    if missing:
        raise ValueError(f"missing key(s) {missing}")
    qid = _as_int(rec["qid"], "qid")
    img_id = _as_int(rec["img_id"], "img_id")
    img_name = str(rec["img_name"]).replace("\\", "/").strip()
    match = _IMG_NAME.match(img_name)
    if not match or int(match.group(1)) != img_id:
        raise ValueError(
            f"img_name {rec['img_name']!r} does not match img_id {img_id} (expected xmlab{img_id}/source.jpg)"
        )
    question = normalise_question(rec["question"])
    answer = normalise_answer(rec["answer"])  # rejects empty answers
    answer_type = normalise_answer_type(rec["answer_type"])
    lang = str(rec["q_lang"]).strip().lower()
    if lang not in LANGS:
        raise ValueError(f"unknown q_lang {rec['q_lang']!r}")
    content_type = str(rec["content_type"]).strip()
    if not content_type:
        raise ValueError("empty content_type")
    extra = {k: v for k, v in rec.items() if k not in CORE_KEYS}
    extra["official_split"] = split  # the same in both layouts (validate.json = validation.json)
    qa = QA(
        qid=str(qid),
        question=question,
        answer=answer,
        answer_type=answer_type,
        question_type=[content_type],
        lang=lang,
        linked_id=None,
        official_split=split,
        extra=extra,
    )
    return qa, img_name


def split_files(root: Path) -> list[tuple[str, Path]]:
    """(official split, file) for the split files present; both validation names is an error."""
    out: list[tuple[str, Path]] = []
    for split, names in SPLIT_FILES.items():
        present = [root / n for n in names if (root / n).is_file()]
        if len(present) > 1:
            raise SourceError(f"{root}: both {' and '.join(p.name for p in present)} exist; keep one of them")
        out.extend((split, p) for p in present)
    return out


def input_files(root: Path) -> list[Path]:
    """The files an ingest of ``root`` depends on (those that exist)."""
    candidates = [root / n for names in SPLIT_FILES.values() for n in names] + [root / CLASS_NAMES, root / IMAGE_ZIP]
    return [p for p in candidates if p.is_file()]


def missing_message(root: Path) -> str:
    return (
        f"{root}: no SLAKE split files (train.json, validate.json or validation.json, test.json). Get SLAKE "
        f"with `snakemake download` or `loclens download slake --out {root}` (needs internet), or put the "
        f"original release or the files of https://huggingface.co/datasets/BoKelvin/SLAKE in {root}"
    )


def image_folder(root: Path, unpack_dir: Path | None) -> tuple[Path, Path]:
    """(folder holding ``xmlab<N>/``, the folder ``source_file`` paths are relative to)."""
    if (root / IMAGE_DIR).is_dir():
        return root / IMAGE_DIR, root
    archive = root / IMAGE_ZIP
    if not archive.is_file():
        raise SourceError(f"{root}: neither {IMAGE_DIR}/ nor {IMAGE_ZIP} found (SLAKE images)")
    if unpack_dir is None:
        raise SourceError(f"{archive}: images are only inside the archive and no folder to unpack it to was given")
    try:
        safe_extract(archive, unpack_dir)
    except ArchiveError as exc:
        raise SourceError(str(exc)) from None
    if not (unpack_dir / IMAGE_DIR).is_dir():
        raise SourceError(f"{archive}: expected the archive to hold {IMAGE_DIR}/xmlab<N>/source.jpg")
    return unpack_dir / IMAGE_DIR, unpack_dir


def _collect(dataset: str, root: Path) -> tuple[dict[str, list[QA]], list[Reject], int]:
    """QA grouped by image file (``xmlab<N>/source.jpg``), rejects, and the number of records."""
    by_file: dict[str, list[QA]] = {}
    rejects: list[Reject] = []
    seen: dict[str, tuple[dict, str]] = {}  # qids are unique across the split files
    total = 0
    for split, path in split_files(root):
        records = load_json_list(path, "QA records", keep_undecodable=True)
        total += len(records)
        rejects += group_records(dataset, records, path.name, functools.partial(_parse_qa, split=split), seen, by_file)
    return by_file, rejects, total


def _attach_annotations(image: ImageRecord, folder: Path, class_names) -> None:
    if (folder / MASK_FILE).is_file():
        image.expert_masks = expert_masks(folder / MASK_FILE, image.width, image.height, class_names())
    if (folder / BOXES_FILE).is_file():
        image.expert_boxes = read_boxes(folder / BOXES_FILE, image.width, image.height)


def _describe(image: ImageRecord) -> None:
    locations = collections.Counter(str(qa.extra.get("location") or "").strip() for qa in image.qa)
    regions = sorted({BODY_REGIONS.get(loc.lower(), loc.lower()) for loc in locations if loc})
    image.body_region = ",".join(regions) or None
    modalities = collections.Counter(str(qa.extra.get("modality") or "").strip() for qa in image.qa)
    modalities.pop("", None)
    image.modality = min(modalities, key=lambda m: (-modalities[m], m)) if modalities else None


def read_slake(root, dataset: str = "slake", unpack_dir=None) -> IngestResult:
    root = Path(root)
    if not split_files(root):
        raise SourceError(missing_message(root))
    images_root, base = image_folder(root, None if unpack_dir is None else Path(unpack_dir))
    by_file, rejects, total = _collect(dataset, root)

    # mask.txt is read (and must exist) only when some image has a mask.png.
    class_names = functools.cache(lambda: read_class_names(root / CLASS_NAMES))
    ordered = {f: by_file[f] for f in sorted(by_file, key=lambda f: int(f.split("/")[0][len("xmlab") :]))}
    images, image_rejects = load_images(dataset, base, images_root, ordered)
    rejects += image_rejects
    for image in images.values():
        # The first folder of an image's pixels holds the annotations used.
        _attach_annotations(image, images_root / Path(image.source_file).parent.name, class_names)

    folders = {f.split("/")[0] for f in by_file}
    for path in sorted(p for p in images_root.iterdir() if p.is_dir() and p.name not in folders):
        rejects.append(Reject(dataset, f"{IMAGE_DIR}/{path.name}", "image folder has no QA record", kind="image"))
    for image in images.values():
        _describe(image)
    return IngestResult(dataset, sorted(images.values(), key=lambda i: i.image_id), rejects, total)


__all__ = ["read_slake", "input_files", "split_files", "image_folder", "missing_message"]
