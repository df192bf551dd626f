"""Safe extraction of downloaded zip archives (SLAKE's ``imgs.zip``, the VQA-RAD OSF zip).

Archives come from the network, so every member is checked before anything is written: no
absolute paths, no drive letters, no ``..`` components, no symbolic links, nothing that resolves
outside the target folder, and a bound on the total uncompressed size (zip bombs). A bad member
refuses the whole archive with an error naming the archive and the member; nothing is written.

Extraction goes to a staging folder beside the target and is moved into place member by member
once complete; a marker file (``.loclens-unpacked-<archive>.json``, written last) records the
archive's sha256, so extracting the same archive again is a no-op.
"""

from __future__ import annotations

import json
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from .atomic import write_json
from .errors import LoclensError
from .provenance import sha256_file

#: Refuse archives that would unpack to more than this many bytes (SLAKE's imgs.zip: ~200 MB).
MAX_UNPACKED_BYTES = 64 * 1024**3
#: Refuse archives with more members than this.
MAX_MEMBERS = 1_000_000


class ArchiveError(LoclensError, ValueError):
    """An archive that cannot be extracted safely; the message names the archive and member."""


def _member_path(archive: Path, info: zipfile.ZipInfo) -> PurePosixPath | None:
    """The member's relative path, or None for a directory entry; raise for unsafe members."""
    name = info.filename.replace("\\", "/")
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise ArchiveError(f"{archive}: member {info.filename!r} is a symbolic link; refusing the archive")
    path = PurePosixPath(name)
    if name.startswith("/") or (path.parts and ":" in path.parts[0]):
        raise ArchiveError(f"{archive}: member {info.filename!r} has an absolute path; refusing the archive")
    if any(part == ".." for part in path.parts):
        raise ArchiveError(f"{archive}: member {info.filename!r} escapes the target folder; refusing the archive")
    if name.endswith("/") or not path.parts:
        return None
    return path


def _plan(archive: Path, zf: zipfile.ZipFile) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    members = zf.infolist()
    if len(members) > MAX_MEMBERS:
        raise ArchiveError(f"{archive}: {len(members)} members exceed the limit of {MAX_MEMBERS}")
    total = sum(m.file_size for m in members)
    if total > MAX_UNPACKED_BYTES:
        raise ArchiveError(f"{archive}: unpacks to {total} bytes, over the limit of {MAX_UNPACKED_BYTES}")
    plan = []
    for info in members:
        path = _member_path(archive, info)
        # macOS resource forks carry no data of the dataset.
        if path is not None and path.parts[0] != "__MACOSX":
            plan.append((info, path))
    return plan


def marker_path(archive: Path, target: Path) -> Path:
    return target / f".loclens-unpacked-{archive.name}.json"


def safe_extract(archive: str | Path, target: str | Path) -> list[str]:
    """Extract ``archive`` under ``target``; return the member paths written (relative).

    A second call with the same archive (same sha256) does nothing and returns the same list.
    """
    archive, target = Path(archive), Path(target)
    digest = sha256_file(archive)
    marker = marker_path(archive, target)
    if marker.exists():
        recorded = json.loads(marker.read_text())
        if recorded.get("sha256") == digest:
            return recorded["members"]
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArchiveError(f"{archive}: not a readable zip archive ({exc})") from None
    with zf:
        plan = _plan(archive, zf)
        target.mkdir(parents=True, exist_ok=True)
        root = target.resolve()
        for _, path in plan:
            final = (root / path).resolve()
            if root not in final.parents:
                raise ArchiveError(f"{archive}: member {str(path)!r} resolves outside {target}; refusing the archive")
        staging = Path(tempfile.mkdtemp(prefix=".tmp-unpack-", dir=target))
        try:
            for info, path in plan:
                out = staging / path
                out.parent.mkdir(parents=True, exist_ok=True)
                try:
                    with zf.open(info) as src, open(out, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
                except (zipfile.BadZipFile, OSError, EOFError) as exc:
                    raise ArchiveError(f"{archive}: member {info.filename!r} is corrupt ({exc})") from None
            for _, path in plan:
                final = target / path
                final.parent.mkdir(parents=True, exist_ok=True)
                (staging / path).replace(final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    members = sorted(str(p) for _, p in plan)
    write_json(marker, {"archive": archive.name, "sha256": digest, "members": members})
    return members


__all__ = ["ArchiveError", "safe_extract", "marker_path", "MAX_UNPACKED_BYTES"]
