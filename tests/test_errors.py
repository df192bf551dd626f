"""User-facing errors share one base, and the command line turns any of them into one line."""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil

import pytest

import loclens
from loclens import cli
from loclens.config import validate
from loclens.errors import LoclensError
from loclens.ingest import RECORD_KEYS
from loclens.plan import Plan, write_plan
from loclens.segment import gpu_slots


def _package_exceptions() -> list[type]:
    """Every exception class defined in a loclens module."""
    found = {}
    for info in pkgutil.walk_packages(loclens.__path__, "loclens."):
        module = importlib.import_module(info.name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__ == info.name:
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return [found[k] for k in sorted(found)]


PACKAGE_EXCEPTIONS = _package_exceptions()


def test_every_error_the_package_defines_derives_from_loclens_error():
    names = {e.__name__ for e in PACKAGE_EXCEPTIONS}
    assert {"ConfigError", "SourceError", "MissingTagsError", "NoFreeGPU", "ReleaseError"} <= names
    assert [e.__qualname__ for e in PACKAGE_EXCEPTIONS if not issubclass(e, LoclensError)] == []


def test_errors_keep_the_builtin_their_callers_catch():
    from loclens.config import ConfigError
    from loclens.evaluate.tags import MissingTagsError
    from loclens.sources import SourceError

    assert all(issubclass(e, ValueError) for e in (ConfigError, SourceError, MissingTagsError))
    assert issubclass(gpu_slots.NoFreeGPU, RuntimeError)


@pytest.mark.parametrize("error", [e for e in PACKAGE_EXCEPTIONS if e is not LoclensError], ids=lambda e: e.__name__)
def test_cli_prints_any_user_error_as_one_line(error, monkeypatch, tmp_path, capsys):
    def fails(args):
        raise error("/data/x.json: the problem and what to do")

    monkeypatch.setattr(cli, "cmd_sample", fails)
    assert cli.main(["sample", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == "loclens sample: error: /data/x.json: the problem and what to do\n"


def test_busy_gpus_end_the_segment_command_with_one_line(monkeypatch, tmp_path, capsys):
    """The real path: ``loclens segment --device auto`` with every GPU slot held by another job."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setenv("LOCLENS_GPU_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.setenv("LOCLENS_GPU_WAIT_S", "0")
    try:
        assert {gpu_slots.try_acquire(2), gpu_slots.try_acquire(2)} == {0, 1}  # the other jobs
        record = dict.fromkeys(RECORD_KEYS) | {"image_id": "a" * 16, "path": str(tmp_path / "a.png")}
        (tmp_path / "records.jsonl").write_text(json.dumps(record) + "\n")
        write_plan(tmp_path / "plan.json", Plan(dataset="sample", segment_shards=[["a" * 16]], release_shards=[]))
        settings = validate({"datasets": {"sample": {}}})["segment"]["medsam"]
        code = cli.main(
            [
                "segment",
                "--records",
                str(tmp_path / "records.jsonl"),
                "--plan",
                str(tmp_path / "plan.json"),
                "--shard",
                "0",
                "--segmenter",
                "medsam",
                "--settings",
                json.dumps(settings),
                "--out",
                str(tmp_path / "masks.parquet"),
            ]
        )
    finally:
        gpu_slots.release_all()
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("loclens segment: error: all 2 GPUs are taken by other loclens jobs")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "masks.parquet").exists()
