"""Publish a validated release to a Hugging Face dataset repo in one commit.

The work splits into a pure part and a network part, so the decisions are testable offline:
- :func:`release_files` lists what the release holds (card, manifest, shards, rejects) with
  size, sha256 and git blob id;
- :func:`remote_state_from_tree` turns a repo listing (``HfApi.list_repo_tree`` entries, with
  the LFS sha256 of large files) into a :class:`RemoteState`; :func:`remote_state_from_record`
  does the same from the record of the previous push, with no network at all;
- :func:`plan_commit` compares the two: files to upload (new or changed), files already there,
  and release files the remote has that this release no longer has (deleted in the same commit);
- :func:`execute_plan` runs a plan: pre-upload the large files, then one ``create_commit`` with
  ``parent_commit`` (so a concurrent push fails instead of being overwritten), each step retried
  on transient failures.

The token comes from ``HF_TOKEN`` or the standard huggingface_hub login (``get_token``) and is
never printed or logged. An invalid release, offline mode or a missing token stop the push
before any network call.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..atomic import write_json
from ..errors import LoclensError
from ..provenance import sha256_file
from .manifest import CARD, MANIFEST
from .validate import validate_release

log = logging.getLogger(__name__)

REPO_TYPE = "dataset"
#: Remote paths a release owns: a remote file matching these that the new release lacks is
#: deleted in the commit. Anything else in the repo (.gitattributes, extra docs) is left alone.
MANAGED_PATTERNS = ("*.parquet", "rejects/*.jsonl", CARD, MANIFEST)
#: HTTP statuses worth retrying (timeouts, rate limits, server errors).
TRANSIENT_STATUS = (408, 429, 500, 502, 503, 504)
#: Exception class names of transport-level failures (httpx and its forks, requests, stdlib).
TRANSIENT_NAMES = {
    "TimeoutException",
    "NetworkError",
    "RemoteProtocolError",
    "TransportError",
    "Timeout",
    "ConnectionError",
    "TimeoutError",
    "ChunkedEncodingError",
}


class PublishError(LoclensError, RuntimeError):
    """A push that must not or cannot happen; the message says why (never with the token)."""


@dataclass(frozen=True)
class LocalFile:
    path: str  # path in the repo (= relative to the release folder)
    size: int
    sha256: str
    git_oid: str
    local: str  # absolute path on disk


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    git_oid: str
    sha256: str | None = None  # LFS files only: the sha256 of the content


@dataclass
class RemoteState:
    repo_id: str
    revision: str
    commit: str | None  # head commit; None when the repo (or branch) does not exist yet
    files: dict[str, RemoteFile] = field(default_factory=dict)
    source: str = "hub"  # hub | record | assumed-empty


@dataclass
class Plan:
    repo_id: str
    revision: str
    parent_commit: str | None
    add: list[LocalFile]
    unchanged: list[LocalFile]
    delete: list[RemoteFile]
    remote_source: str = "hub"

    @property
    def noop(self) -> bool:
        return not self.add and not self.delete

    def text(self) -> str:
        parent = self.parent_commit or "none (new repo or branch)"
        lines = [
            f"publish plan for datasets/{self.repo_id}@{self.revision} (parent commit {parent}; remote state "
            f"from {self.remote_source})"
        ]
        lines += [f"  upload  {f.path}  {_size(f.size)}  sha256 {f.sha256[:16]}" for f in self.add]
        lines += [f"  keep    {f.path}  {_size(f.size)}  (unchanged)" for f in self.unchanged]
        lines += [f"  delete  {f.path}  {_size(f.size)}" for f in self.delete]
        total = sum(f.size for f in self.add)
        lines.append(
            f"{len(self.add)} to upload ({_size(total)}), {len(self.unchanged)} unchanged, "
            f"{len(self.delete)} to delete" + ("; nothing to push" if self.noop else "; one commit")
        )
        return "\n".join(lines)


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def git_blob_oid(path: Path) -> str:
    """The git blob id (sha1 of ``blob <size>\\0<content>``) the Hub reports for non-LFS files."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def release_files(release_dir, manifest: dict) -> list[LocalFile]:
    """Every file of the release, as the manifest defines it: card, manifest, shards, rejects."""
    release_dir = Path(release_dir).resolve()
    paths = [CARD, MANIFEST]
    for d in manifest["datasets"].values():
        paths += [s["file"] for sp in d["splits"].values() for s in sp["shards"]]
        paths.append(d["rejects_file"])
    out = []
    for rel in sorted(paths):
        p = release_dir / rel
        out.append(LocalFile(rel, p.stat().st_size, sha256_file(p), git_blob_oid(p), str(p)))
    return out


def remote_state_from_tree(repo_id: str, revision: str, commit: str | None, entries: Iterable) -> RemoteState:
    """A RemoteState from ``HfApi.list_repo_tree(recursive=True)`` entries (folders skipped)."""
    files = {}
    for e in entries:
        if not hasattr(e, "blob_id"):
            continue  # RepoFolder
        lfs = getattr(e, "lfs", None)
        files[e.path] = RemoteFile(e.path, e.size, e.blob_id, lfs.sha256 if lfs is not None else None)
    return RemoteState(repo_id, revision, commit, files, "hub")


def remote_state_from_record(record: dict) -> RemoteState:
    files = {p: RemoteFile(p, f["size"], f["git_oid"], f.get("sha256")) for p, f in record["files"].items()}
    return RemoteState(record["repo_id"], record["revision"], record["commit"], files, "record of the last push")


def _same(local: LocalFile, remote: RemoteFile) -> bool:
    if remote.sha256 is not None:
        return remote.sha256 == local.sha256
    return remote.git_oid == local.git_oid


def _managed(path: str) -> bool:
    return any(fnmatch.fnmatch(path, pattern) for pattern in MANAGED_PATTERNS)


def plan_commit(local: list[LocalFile], remote: RemoteState) -> Plan:
    add: list[LocalFile] = []
    unchanged: list[LocalFile] = []
    for f in local:
        r = remote.files.get(f.path)
        (unchanged if r is not None and _same(f, r) else add).append(f)
    wanted = {f.path for f in local}
    delete = [r for p, r in sorted(remote.files.items()) if p not in wanted and _managed(p)]
    return Plan(remote.repo_id, remote.revision, remote.commit, add, unchanged, delete, remote.source)


def is_transient(exc: BaseException) -> bool:
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if isinstance(exc, OfflineModeIsEnabled):
        return False
    if isinstance(exc, HfHubHTTPError):
        status = getattr(exc.response, "status_code", None)
        return status in TRANSIENT_STATUS
    return any(cls.__name__ in TRANSIENT_NAMES for cls in type(exc).__mro__)


def with_retries(step: str, fn: Callable, attempts: int = 5, base_delay: float = 2.0, sleep=time.sleep):
    """Run ``fn()``; on a transient failure wait (exponential backoff) and try again."""
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as exc:
            if attempt == attempts or not is_transient(exc):
                raise
            delay = base_delay * 2 ** (attempt - 1)
            log.warning(
                "%s: transient failure (%s), retry %d/%d in %.0fs",
                step,
                exc.__class__.__name__,
                attempt,
                attempts - 1,
                delay,
            )
            sleep(delay)
    raise AssertionError("unreachable")


def fetch_remote_state(api, repo_id: str, revision: str) -> RemoteState:
    """The repo's head commit and files (network, read-only); empty when it does not exist."""
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    try:
        info = api.repo_info(repo_id, repo_type=REPO_TYPE, revision=revision)
    except RepositoryNotFoundError:
        return RemoteState(repo_id, revision, None, {}, "hub (repo does not exist)")
    except RevisionNotFoundError:
        return RemoteState(repo_id, revision, None, {}, f"hub (no branch {revision})")
    entries = api.list_repo_tree(repo_id, recursive=True, revision=info.sha, repo_type=REPO_TYPE)
    return remote_state_from_tree(repo_id, revision, info.sha, entries)


def execute_plan(api, plan: Plan, message: str, private: bool, sleep=time.sleep) -> str:
    """Create the repo if needed, pre-upload the large files, then one commit; returns its id."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    with_retries(
        "create_repo",
        lambda: api.create_repo(plan.repo_id, repo_type=REPO_TYPE, private=private, exist_ok=True),
        sleep=sleep,
    )
    if plan.parent_commit is None and plan.revision != "main":
        with_retries(
            "create_branch",
            lambda: api.create_branch(plan.repo_id, branch=plan.revision, repo_type=REPO_TYPE, exist_ok=True),
            sleep=sleep,
        )
    additions = [CommitOperationAdd(path_in_repo=f.path, path_or_fileobj=f.local) for f in plan.add]
    deletions = [CommitOperationDelete(path_in_repo=f.path) for f in plan.delete]
    if additions:
        # Uploads the LFS payloads now; the commit then only references them. Re-running after a
        # failure skips what the Hub already has.
        with_retries(
            "preupload_lfs_files",
            lambda: api.preupload_lfs_files(
                plan.repo_id, additions=additions, repo_type=REPO_TYPE, revision=plan.revision
            ),
            sleep=sleep,
        )
    # parent_commit makes the commit fail if the branch moved since it was listed. A retried
    # commit whose first attempt did land fails the same way: nothing is committed twice, and a
    # new `publish` finds nothing left to push.
    info = with_retries(
        "create_commit",
        lambda: api.create_commit(
            plan.repo_id,
            operations=[*additions, *deletions],
            commit_message=message,
            repo_type=REPO_TYPE,
            revision=plan.revision,
            parent_commit=plan.parent_commit,
        ),
        sleep=sleep,
    )
    return info.oid


def _record(plan: Plan, commit: str | None, pushed: bool, manifest_sha256: str, remote: RemoteState) -> dict:
    files = {p: asdict(r) for p, r in remote.files.items() if p not in {f.path for f in plan.delete}}
    for f in [*plan.add, *plan.unchanged]:
        files[f.path] = {"path": f.path, "size": f.size, "git_oid": f.git_oid, "sha256": f.sha256}
    return {
        "repo_id": plan.repo_id,
        "revision": plan.revision,
        "commit": commit,
        "pushed": pushed,
        "manifest_sha256": manifest_sha256,
        "files": dict(sorted(files.items())),
    }


def check_valid(release_dir: Path, validation_report: Path | None) -> str:
    """Refuse an invalid release; returns the manifest sha256. A passing validation report of
    this very manifest (as the workflow's ``validate`` rule writes) spares the row scan; the
    files are still checked against the manifest."""
    if validation_report is not None and Path(validation_report).is_file():
        prior = json.loads(Path(validation_report).read_text())
        quick = validate_release(release_dir, deep=False)
        if (
            quick.ok
            and quick.manifest_sha256
            and prior.get("ok")
            and prior.get("manifest_sha256") == quick.manifest_sha256
        ):
            return quick.manifest_sha256
        report = quick if not quick.ok else validate_release(release_dir)
    else:
        report = validate_release(release_dir)
    if not report.ok or report.manifest_sha256 is None:  # a valid release has a manifest
        raise PublishError("refusing to publish an invalid release:\n" + report.text())
    return report.manifest_sha256


def get_token() -> str:
    from huggingface_hub import get_token as hf_get_token

    token = hf_get_token()
    if not token:
        raise PublishError("no Hugging Face token: set HF_TOKEN or log in with `hf auth login`")
    return token


def publish(
    release_dir,
    repo_id: str,
    *,
    revision: str = "main",
    private: bool = True,
    dry_run: bool = False,
    message: str | None = None,
    record_path=None,
    validation_report=None,
    compare_remote: bool = False,
    api=None,
    sleep=time.sleep,
) -> tuple[Plan, dict | None]:
    """Validate, plan and (unless ``dry_run``) push; returns the plan and the push record."""
    from huggingface_hub import HfApi
    from huggingface_hub.constants import is_offline_mode

    release_dir = Path(release_dir)
    manifest_sha256 = check_valid(release_dir, validation_report)
    manifest = json.loads((release_dir / MANIFEST).read_text())
    local = release_files(release_dir, manifest)
    record_path = Path(record_path) if record_path else None
    previous = json.loads(record_path.read_text()) if record_path and record_path.is_file() else None
    if previous and (previous["repo_id"], previous["revision"]) != (repo_id, revision):
        previous = None

    network_needed = not dry_run or compare_remote
    if network_needed and is_offline_mode():
        raise PublishError(
            "HF_HUB_OFFLINE is set: refusing to contact the Hub (nothing was uploaded); "
            "unset it to publish, or use --dry-run"
        )
    if network_needed and api is None:
        api = HfApi(token=get_token())

    if dry_run and not compare_remote:
        remote = (
            remote_state_from_record(previous)
            if previous
            else RemoteState(repo_id, revision, None, {}, "assumed empty (no record of an earlier push)")
        )
        return plan_commit(local, remote), None

    from huggingface_hub.errors import HfHubHTTPError

    try:
        remote = with_retries("list remote", lambda: fetch_remote_state(api, repo_id, revision), sleep=sleep)
        plan = plan_commit(local, remote)
        if dry_run:
            return plan, None
        if plan.noop:
            record = _record(plan, remote.commit, False, manifest_sha256, remote)
        else:
            msg = message or f"loclens release {manifest['config_hash']} (loclens {manifest['loclens_version']})"
            commit = execute_plan(api, plan, msg, private, sleep=sleep)
            record = _record(plan, commit, True, manifest_sha256, remote)
    except HfHubHTTPError as exc:
        status = getattr(exc.response, "status_code", "?")
        hint = " (the branch moved since it was listed: run publish again)" if status == 412 else ""
        raise PublishError(f"datasets/{repo_id}: the Hub answered {status}{hint}: {exc}") from None
    if record_path:
        write_json(record_path, record)
    return plan, record
