"""Hashes that identify content and configuration (images, checkpoints, configs)."""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path

#: Length of the hex prefix of an image's sha256 used as its ``image_id``. 16 hex digits
#: (64 bits) make collisions negligible for any Med-VQA dataset while staying readable.
IMAGE_ID_HEX = 16


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@lru_cache(maxsize=32)
def cached_checkpoint_sha256(path: str) -> str:
    """sha256 of a (large, immutable) checkpoint file, computed once per process."""
    return sha256_file(path)


def image_id_from_bytes(data: bytes) -> str:
    """Images are identified by content, so renamed or duplicated files map to one id."""
    return sha256_bytes(data)[:IMAGE_ID_HEX]


def canonical_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def config_hash(obj) -> str:
    """Short, stable hash of a JSON-able configuration (key order does not matter)."""
    return sha256_bytes(canonical_json(obj).encode("utf-8"))[:16]


def seeded_int(*parts) -> int:
    """A 64-bit integer derived from ``parts`` only: random draws keyed on it do not depend
    on processing order or sharding."""
    return int.from_bytes(hashlib.sha256(canonical_json(list(parts)).encode()).digest()[:8], "little")


def package_version() -> str:
    from loclens import __version__

    return __version__


def resolve(path: str | os.PathLike) -> Path:
    return Path(path).expanduser().resolve()
