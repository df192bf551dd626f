"""Atomic file writes: write to a temporary name in the same folder, fsync, then rename.

An interrupted run therefore never leaves a file under its final name that looks complete
but is half written; at worst a ``.tmp-<name>.*`` file is left beside it (the release step
removes those from the release folder, see ``release.finalize``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path

#: Prefix of temporary files; anything starting with it is an unfinished write.
TMP_PREFIX = ".tmp-"

#: Fault injection for the interruption tests: when this environment variable holds a glob
#: matching a final path (absolute), the writer stops once the content is complete under its temporary
#: name (the worst moment for an interruption), says so on stderr and waits to be killed.
HOLD_ENV = "LOCLENS_HOLD_BEFORE_RENAME"
#: A held writer gives up after this many seconds (so a forgotten variable cannot hang a run).
HOLD_SECONDS = 600


def _hold_if_asked(final: Path) -> None:
    pattern = os.environ.get(HOLD_ENV)
    if not pattern or not fnmatch(os.path.abspath(final), pattern):
        return
    print(f"loclens: holding {final} before rename ({HOLD_ENV})", file=sys.stderr, flush=True)
    time.sleep(HOLD_SECONDS)
    raise RuntimeError(f"{final}: held before rename by {HOLD_ENV} and not killed")


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; rename it onto ``final`` on success."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{final.name}.", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        _hold_if_asked(final)
        # mkstemp creates 0600 files; releases are meant to be shared.
        os.chmod(tmp_path, 0o644)
        os.replace(tmp_path, final)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder next to ``final``; on success it replaces ``final`` whole
    (a checkpoint is either all there or absent)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}.", dir=final.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        if final.exists():
            old = final.with_name(f".old-{final.name}.{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old)
        else:
            os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_bytes(final: str | os.PathLike, data: bytes) -> None:
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)


def copy_file(source: str | os.PathLike, final: str | os.PathLike) -> None:
    with atomic_path(final) as tmp:
        shutil.copyfile(source, tmp)


def write_text(final: str | os.PathLike, text: str) -> None:
    write_bytes(final, text.encode("utf-8"))


def write_json(final: str | os.PathLike, obj) -> None:
    write_text(final, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def write_jsonl(final: str | os.PathLike, rows) -> None:
    lines = [json.dumps(r, sort_keys=True, ensure_ascii=False) for r in rows]
    write_text(final, "".join(line + "\n" for line in lines))
