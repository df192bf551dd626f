"""Publishing: the commit plan (first push, unchanged re-push, fewer shards), the push sequence,
and refusals before any network call. The Hub cannot be reached from tests: the remote state is
built from the same `RepoFile` objects `HfApi.list_repo_tree` returns, and the push sequence runs
against a recording API object."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
from conftest import build_release, copy_release, small_config
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError
from huggingface_hub.hf_api import RepoFile, RepoFolder

from loclens.release.publish import (
    PublishError,
    RemoteState,
    execute_plan,
    plan_commit,
    publish,
    release_files,
    remote_state_from_record,
    remote_state_from_tree,
)

REPO = "someone/loclens-test"


def _manifest(release):
    return json.loads((release / "manifest.json").read_text())


def _hub_listing(local_files, extra=()) -> list:
    """What list_repo_tree(recursive=True) returns for a repo holding ``local_files``: Parquet
    as LFS (sha256 in .lfs), small text files as plain git blobs, folders as RepoFolder."""
    entries = [RepoFile(path=".gitattributes", size=2400, oid="a" * 40)]
    folders = set()
    for f in [*local_files, *extra]:
        lfs = {"size": f.size, "oid": f.sha256, "pointerSize": 134} if f.path.endswith(".parquet") else None
        entries.append(RepoFile(path=f.path, size=f.size, oid=f.git_oid if lfs is None else "b" * 40, lfs=lfs))
        if "/" in f.path:
            folders.add(f.path.rsplit("/", 1)[0])
    entries += [RepoFolder(path=p, oid="c" * 40) for p in sorted(folders)]
    return entries


class RecordingApi:
    """Records every call; ``fail`` maps a method to the exceptions its first calls raise."""

    def __init__(self, fail=None):
        self.calls = []
        self.fail = {k: list(v) for k, v in (fail or {}).items()}

    def __getattr__(self, name):
        def call(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            if self.fail.get(name):
                raise self.fail[name].pop(0)
            if name == "create_commit":
                return type("CommitInfo", (), {"oid": "d" * 40})()
            return None

        return call


def _response(status: int):
    """The parts of an HTTP response huggingface_hub's errors read."""
    return SimpleNamespace(status_code=status, headers={}, request=None)


def _http_error(status: int) -> HfHubHTTPError:
    return HfHubHTTPError(f"{status} error", response=_response(status))


def test_first_push_uploads_everything(small_release):
    local = release_files(small_release.release, _manifest(small_release.release))
    plan = plan_commit(local, RemoteState(REPO, "main", None, {}))
    paths = [f.path for f in plan.add]
    assert "README.md" in paths and "manifest.json" in paths and "rejects/sample.jsonl" in paths
    assert sorted(p for p in paths if p.endswith(".parquet")) == sorted(
        str(p.relative_to(small_release.release)) for p in small_release.release.rglob("*.parquet")
    )
    assert not plan.delete and not plan.unchanged and not plan.noop
    text = plan.text()
    for f in plan.add:
        assert f"upload  {f.path}" in text
    assert f"{len(local)} to upload" in text and "0 to delete" in text and "parent commit none" in text


def test_unchanged_repush_is_a_noop(small_release):
    local = release_files(small_release.release, _manifest(small_release.release))
    remote = remote_state_from_tree(REPO, "main", "e" * 40, _hub_listing(local))
    plan = plan_commit(local, remote)
    assert plan.noop and len(plan.unchanged) == len(local) and plan.parent_commit == "e" * 40
    assert ".gitattributes" not in {f.path for f in plan.delete}
    assert "nothing to push" in plan.text()
    # a changed card (plain git blob) and a changed shard (LFS sha256) are both noticed
    card = next(f for f in local if f.path == "README.md")
    shard = next(f for f in local if f.path.endswith(".parquet"))
    stale = [
        f if f not in (card, shard) else type(f)(**{**f.__dict__, "sha256": "0" * 64, "git_oid": "0" * 40})
        for f in local
    ]
    replan = plan_commit(local, remote_state_from_tree(REPO, "main", "e" * 40, _hub_listing(stale)))
    assert sorted(f.path for f in replan.add) == sorted([card.path, shard.path])


def test_push_with_fewer_shards_deletes_the_old_ones(small_release, tmp_path):
    first = release_files(small_release.release, _manifest(small_release.release))
    remote = remote_state_from_tree(REPO, "main", "e" * 40, _hub_listing(first))
    # Rebuild with two rows per shard (reusing the mask cache): train goes from 2 shards to 1.
    root = tmp_path / "rebuild"
    copy_release(small_release, root / "results" / "release")
    config = small_config(root, release={"rows_per_shard": 2})
    rebuilt = build_release(root, config, masks=small_release.masks)
    second = release_files(rebuilt.release, _manifest(rebuilt.release))
    plan = plan_commit(second, remote)
    deleted = {f.path for f in plan.delete}
    assert deleted == {"sample/train-00000-of-00002.parquet", "sample/train-00001-of-00002.parquet"}
    assert not (rebuilt.release / "sample" / "train-00000-of-00002.parquet").exists()  # stale shards removed locally
    # Every row records the config hash, which includes rows_per_shard: all shards are new bytes.
    assert {"sample/train-00000-of-00001.parquet", "sample/test-00000-of-00001.parquet"} <= {f.path for f in plan.add}
    assert [f.path for f in plan.unchanged] == ["rejects/sample.jsonl"]
    assert all(f"delete  {p}" in plan.text() for p in deleted)


def test_push_sequence_preuploads_then_one_commit_with_parent_and_retries(small_release):
    local = release_files(small_release.release, _manifest(small_release.release))
    extra = [type(local[0])("sample/train-00005-of-00006.parquet", 10, "f" * 64, "f" * 40, "/nonexistent")]
    remote = remote_state_from_tree(REPO, "main", "e" * 40, _hub_listing(local[:2], extra))
    plan = plan_commit(local, remote)
    api = RecordingApi(fail={"create_commit": [_http_error(503)], "preupload_lfs_files": [ConnectionError("reset")]})
    sleeps = []
    commit = execute_plan(api, plan, "msg", private=True, sleep=sleeps.append)
    assert commit == "d" * 40 and sleeps == [2.0, 2.0]
    names = [c[0] for c in api.calls]
    assert names == ["create_repo", "preupload_lfs_files", "preupload_lfs_files", "create_commit", "create_commit"]
    assert api.calls[0][2]["private"] is True and api.calls[0][2]["exist_ok"] is True
    kwargs = api.calls[-1][2]
    assert kwargs["parent_commit"] == "e" * 40 and kwargs["repo_type"] == "dataset"
    ops = kwargs["operations"]
    adds = sorted(op.path_in_repo for op in ops if type(op).__name__ == "CommitOperationAdd")
    assert adds == sorted(f.path for f in plan.add)
    assert [op.path_in_repo for op in ops if type(op).__name__ == "CommitOperationDelete"] == [extra[0].path]

    refused = RecordingApi(fail={"create_commit": [_http_error(412)]})
    with pytest.raises(HfHubHTTPError):  # a moved branch is not retried
        execute_plan(refused, plan, "msg", private=True, sleep=sleeps.append)
    assert [c[0] for c in refused.calls].count("create_commit") == 1


def test_dry_run_needs_no_network_and_reads_the_last_record(small_release, tmp_path, capsys, monkeypatch):
    from loclens.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["publish", str(small_release.release), "--repo", REPO, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "assumed empty" in out and "upload  README.md" in out and "upload  sample/test-00000-of-00001.parquet" in out
    local = release_files(small_release.release, _manifest(small_release.release))
    plan = plan_commit(local, RemoteState(REPO, "main", None, {}))
    record = {
        "repo_id": REPO,
        "revision": "main",
        "commit": "e" * 40,
        "pushed": True,
        "manifest_sha256": "x",
        "files": {f.path: {"path": f.path, "size": f.size, "git_oid": f.git_oid, "sha256": f.sha256} for f in local},
    }
    assert plan_commit(local, remote_state_from_record(record)).noop
    path = tmp_path / "commit.json"
    path.write_text(json.dumps(record))
    assert main(["publish", str(small_release.release), "--repo", REPO, "--dry-run", "--record", str(path)]) == 0
    out = capsys.readouterr().out
    assert "record of the last push" in out and "nothing to push" in out and len(plan.add) == len(local)


def test_offline_publish_fails_cleanly_before_any_upload(small_release, tmp_path):
    secret = "hf_THIS_TOKEN_MUST_NOT_APPEAR_0123456789"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_TOKEN": secret}
    record = tmp_path / "commit.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "loclens.cli",
            "publish",
            str(small_release.release),
            "--repo",
            REPO,
            "--record",
            str(record),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "HF_HUB_OFFLINE" in proc.stderr and "nothing was uploaded" in proc.stderr
    assert secret not in proc.stdout + proc.stderr and not record.exists()

    api = RecordingApi()
    with pytest.raises(PublishError, match="HF_HUB_OFFLINE"):
        publish(small_release.release, REPO, api=api)
    assert api.calls == []


def test_invalid_release_is_refused_before_any_network_call(small_release, tmp_path, monkeypatch):
    release = copy_release(small_release, tmp_path / "r")
    shard = next(release.rglob("*.parquet"))
    shard.write_bytes(shard.read_bytes()[:-100])
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)  # as if online
    api = RecordingApi()
    with pytest.raises(PublishError, match="refusing to publish an invalid release") as info:
        publish(release, REPO, api=api)
    assert str(shard.relative_to(release)) in str(info.value)
    assert api.calls == []
    # ... and a valid one goes through the whole sequence, recording the commit.
    record = tmp_path / "commit.json"
    api = RecordingApi(fail={"repo_info": [RepositoryNotFoundError("no repo", response=_response(404))]})
    plan, rec = publish(small_release.release, REPO, api=api, record_path=record)
    assert [c[0] for c in api.calls] == ["repo_info", "create_repo", "preupload_lfs_files", "create_commit"]
    assert rec["pushed"] and rec["commit"] == "d" * 40 and json.loads(record.read_text()) == rec
    assert set(rec["files"]) == {f.path for f in plan.add}
