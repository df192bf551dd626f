"""Cut the test subset of VQA-RAD (tests/data/vqa_rad/) from the full OSF release.

    python tests/data/make_vqa_rad_subset.py --source ../shared/datasets/vqa_rad

Image files are copied byte for byte; the JSON keeps every QA record of the chosen images, in the
release's order and its layout (a list, three-space indent, non-ASCII kept), so the real reader
meets the real file format and every quirk listed in tests/data/README.md. The script refuses a
source whose JSON is not the release it was written for (sha256 below).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

JSON_NAME = "VQA_RAD Dataset Public.json"
IMAGE_DIR = "VQA_RAD Image Folder"
SOURCE_SHA256 = "948b7156059b864cf72344fb10669233526b175c243e5a046d20d4201d297a95"
OUT = Path(__file__).resolve().parent / "vqa_rad"
#: sha256 of every image, in ``sha256sum`` format: ``sha256sum -c`` run in the full release's
#: folder shows the vendored images are its files, unmodified.
SUMS = Path(__file__).resolve().parent / "vqa_rad.sha256"

#: The chosen images, each with why: every region at several sizes, every quirk of the release the
#: reader must handle (tests/test_vqa_rad_reader.py checks each on this subset), and the release's
#: first five images by image_id, so a quick build (limit_images <= 5, as the workflow tests run)
#: takes the same images from the subset as from the full release.
IMAGES = {
    # the first five by image_id (content hash) in the full release
    "synpic21604.jpg": "ABD 512x512; both records without a question_rephrase key",
    "synpic26158.jpg": "ABD 800x713, train records only",
    "synpic56344.jpg": "HEAD 555x753",
    "synpic31248.jpg": "CHEST 1024x850, train records only",
    "synpic47737.jpg": "HEAD 296x336",
    # HEAD
    "synpic54610.jpg": '566x555; its first record has qid "0" as a string',
    "synpic35191.jpg": '960x720; both answer_type "CLOSED " (trailing space) records',
    "synpic46720.jpg": '263x324; question_type typo "Other"',
    "synpic59536.jpg": "256x256, the smallest size in the release",
    "synpic23631.jpg": "910x1138, head image taller than 1024",
    # CHEST
    "synpic100132.jpg": "2321x1384, the largest image in the release; train records only",
    "synpic100176.jpg": "1024x1024; records in both official splits (with 100132, the first two names: "
    "what `loclens bench --n-images 2` takes)",
    "synpic15006.jpg": "1024x842, the release's second commonest size",
    "synpic18461.jpg": '1024x1023; question_type typo "ATRIB"',
    "synpic53228.jpg": "1024x984; two answers that are JSON integers",
    "synpic25587.jpg": "1024x842; comma-joined multi-label question_type, test records",
    "synpic44865.jpg": "1024x1500, the tallest image in the release",
    # ABD
    "synpic22791.jpg": "512x512; an answer that is a JSON integer",
    "synpic28569.jpg": "512x512; an answer that is a JSON integer",
    "synpic45162.jpg": "512x512; an answer that is a JSON integer",
    "synpic23008.jpg": '1009x1200; question_type typo "PRSE"',
    "synpic27198.jpg": "1024x1170; multi-label question_type, test records",
    "synpic28718.jpg": "1024x1286, abdominal CT taller than 1024",
    # no QA record
    "synpic35356.jpg": "766x978; the release's one image file that no QA record names",
}

#: The whole subset must stay small enough to live in the repository.
MAX_BYTES = 3 * 1024 * 1024


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_subset(source: Path, out: Path, sums: Path) -> tuple[int, int]:
    """Write the subset under ``out`` and the images' checksums to ``sums``; returns (images, QA records)."""
    src_json = source / JSON_NAME
    if not src_json.is_file():
        raise SystemExit(f"{src_json}: not found; --source must be the VQA-RAD release folder")
    if sha256(src_json) != SOURCE_SHA256:
        raise SystemExit(f"{src_json}: sha256 is not {SOURCE_SHA256}; this script cuts that release only")
    raw = src_json.read_bytes()
    records = json.loads(raw)
    # The layout claim rests on this: the release is exactly json.dumps(indent=3, ensure_ascii=False).
    assert json.dumps(records, indent=3, ensure_ascii=False).encode("utf-8") == raw
    kept = [r for r in records if r["image_name"] in IMAGES]
    if out.exists():
        shutil.rmtree(out)
    (out / IMAGE_DIR).mkdir(parents=True)
    for name in sorted(IMAGES):
        shutil.copyfile(source / IMAGE_DIR / name, out / IMAGE_DIR / name)
    sums.write_text("".join(f"{sha256(out / IMAGE_DIR / n)}  {IMAGE_DIR}/{n}\n" for n in sorted(IMAGES)))
    (out / JSON_NAME).write_text(json.dumps(kept, indent=3, ensure_ascii=False), encoding="utf-8")
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    if total > MAX_BYTES:
        raise SystemExit(f"{out}: {total} bytes, over the {MAX_BYTES}-byte budget")
    return len(IMAGES), len(kept)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, required=True, help="the full VQA-RAD release folder")
    parser.add_argument("--out", type=Path, default=OUT, help=f"default: {OUT}")
    parser.add_argument("--sums", type=Path, default=SUMS, help=f"default: {SUMS}")
    args = parser.parse_args(argv)
    n_images, n_records = make_subset(args.source, args.out, args.sums)
    print(f"wrote {n_images} images and {n_records} QA records to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
