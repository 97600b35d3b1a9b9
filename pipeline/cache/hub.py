"""A teacher cache on the Hugging Face Hub: push a verified cache as a dataset repository, fetch one back.

A cache on the Hub is named ``hf://datasets/OWNER/NAME[@REVISION]``; the revision is a branch, a tag or a
40-hex commit (a slash in it written ``%2F``, as in ``huggingface_hub``'s own ``hf://`` paths), the default
branch when left out. :func:`push_cache` uploads exactly the files of a cache that verifies (``cache.json``,
the card ``README.md``, the shards ``cache.json`` lists) and removes shards an earlier push left.
:func:`fetch_cache` resolves the revision to a commit first, so a moving branch is never served from an older
copy, downloads that commit once into ``ROOT/OWNER--NAME@COMMIT`` (default root ``data/hub-caches``), and
keeps it only when every shard verifies against its ``cache.json`` (sha256, schema, rows, tokens): a later
fetch of the same commit downloads nothing. A consumer checks what only it knows: training, the tokenizer
and manifest (``open_cache``); ``cache_teacher``, the identity it would compute itself.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from pipeline.cache.reader import CacheError, read_cache_json, verification_error, verify_cache
from pipeline.core.errors import DwPipeError
from pipeline.core.fsutil import atomic_dir, project_path

log = logging.getLogger(__name__)

HUB_CACHES = Path("data/hub-caches")  # where fetched caches are kept (a DVC experiment's copy shares the project's)
CACHE_PATTERNS = ["cache.json", "README.md", "shard-*.parquet"]  # what a download asks for; nothing else is kept
_NAME = r"[A-Za-z0-9][\w.-]*"
_REPO = re.compile(rf"{_NAME}/{_NAME}")
# One slash of hf:// may be missing: a URI that went through pathlib.Path (TrainConfig.cache, a Path-typed option
# of the CLI) comes back as hf:/datasets/..., and names the same repository.
_URI = re.compile(rf"hf://?datasets/(?P<repo>{_NAME}/{_NAME})(?:@(?P<revision>[\w.-]+(?:%2F[\w.-]+)*))?")
_COMMIT = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class HubCacheRef:
    """A cache on the Hub: a dataset repository, at a revision (None: the default branch)."""

    repo_id: str
    revision: str | None = None

    @property
    def uri(self) -> str:
        revision = f"@{self.revision.replace('/', '%2F')}" if self.revision else ""
        return f"hf://datasets/{self.repo_id}{revision}"


@dataclass(frozen=True)
class FetchedCache:
    """A Hub cache downloaded and verified: its local folder, its URI and the commit the URI resolved to."""

    folder: Path
    uri: str
    commit: str

    def record(self) -> dict[str, str]:
        """What a consumer records of where the cache came from (beside the cache's own fingerprint)."""
        return {"cache_uri": self.uri, "cache_commit": self.commit}


def is_hub_uri(value: str | Path) -> bool:
    """Whether a cache is given as a Hub URI rather than a folder (a malformed URI counts: it is refused later)."""
    return str(value).startswith("hf:")


def parse_hub_uri(value: str | Path) -> HubCacheRef:
    """``hf://datasets/OWNER/NAME[@REVISION]``, or one line saying how to write it."""
    match = _URI.fullmatch(str(value))
    if match is None:
        raise DwPipeError(
            f"{str(value)!r} is not a Hub cache: write hf://datasets/OWNER/NAME or hf://datasets/OWNER/NAME@REVISION "
            "(a branch, tag or commit; a slash in it as %2F)"
        )
    revision = match["revision"]
    return HubCacheRef(match["repo"], revision.replace("%2F", "/") if revision else None)


def _hub_error(what: str, exc: Exception, fix: str) -> DwPipeError:
    detail = str(exc).splitlines()[0] if str(exc) else "no detail"
    return DwPipeError(f"{what} ({type(exc).__name__}: {detail}); {fix}")


def resolve_commit(ref: HubCacheRef, token: str | None = None) -> str:
    """The commit ``ref``'s revision points at now. A commit names itself, with no call: a pinned cache fetched
    once is read offline."""
    if ref.revision and _COMMIT.fullmatch(ref.revision):
        return ref.revision
    from huggingface_hub import HfApi

    try:
        sha = HfApi(token=token).dataset_info(ref.repo_id, revision=ref.revision).sha
    except Exception as exc:  # not found, private, no network: huggingface_hub's and the HTTP library's own errors
        raise _hub_error(
            f"{ref.uri}: cannot resolve the revision on the Hub",
            exc,
            "check the repository and revision, log in (hf auth login, or HF_TOKEN) for a private one; offline, "
            "name a commit fetched before (hf://datasets/OWNER/NAME@COMMIT)",
        ) from exc
    if not sha:
        raise DwPipeError(f"{ref.uri}: the Hub named no commit for this revision; name a commit (@COMMIT)")
    return sha


def cache_files(folder: Path) -> list[str]:
    """The files that make a cache: ``cache.json``, the card (when there is one) and the shards it lists."""
    content = read_cache_json(folder)
    card = ["README.md"] if (Path(folder) / "README.md").is_file() else []
    return ["cache.json", *card, *(s["file"] for s in content["shards"])]


def _problems(folder: Path) -> list[str]:
    """What :func:`verify_cache` finds, including a missing, unfinished or other-version ``cache.json``."""
    try:
        return verify_cache(folder)
    except CacheError as exc:
        return [str(exc).removeprefix(f"{folder}: ")]


def hub_folder(root: Path, ref: HubCacheRef, commit: str) -> Path:
    owner, name = ref.repo_id.split("/")
    return Path(root) / f"{owner}--{name}@{commit}"


def fetch_cache(
    uri: str | Path, dest_root: Path | None = None, *, commit: str | None = None, token: str | None = None
) -> FetchedCache:
    """Download the cache ``uri`` names (once per commit) into ``dest_root`` (default ``data/hub-caches``), verify
    it, and return where it is. ``commit``: the commit ``uri`` resolved to for the caller already, so every reader
    of one run reads the same commit even if the branch moves meanwhile."""
    ref = parse_hub_uri(uri)
    commit = commit or resolve_commit(ref, token)
    folder = hub_folder(dest_root or project_path(HUB_CACHES), ref, commit)
    where = f"Hub cache {ref.uri} (commit {commit[:12]})"
    if (folder / "cache.json").is_file():
        problems = _problems(folder)
        if not problems:
            log.info("%s: verified copy in %s", where, folder)
            return FetchedCache(folder, ref.uri, commit)
        log.warning("%s: the copy in %s fails verification (%s); downloading it again", where, folder, problems[0])
    from huggingface_hub import snapshot_download

    log.info("%s: downloading into %s", where, folder)
    with atomic_dir(folder, overwrite=True) as tmp:  # a download that fails or does not verify leaves nothing
        try:
            snapshot_download(
                repo_id=ref.repo_id,
                repo_type="dataset",
                revision=commit,
                local_dir=tmp,
                allow_patterns=CACHE_PATTERNS,
                token=token,
            )
        except Exception as exc:
            raise _hub_error(
                f"{where}: download failed", exc, "check the network and the Hub login, and run again"
            ) from exc
        problems = _problems(tmp)
        if problems:
            raise verification_error(
                where, problems, "nothing was kept: push the cache again from a folder that verifies"
            )
        keep = set(cache_files(tmp))
        for path in tmp.iterdir():  # huggingface_hub's .cache/, .gitattributes, shards cache.json does not list
            if path.name not in keep:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    return FetchedCache(folder, ref.uri, commit)


def copy_cache(source: Path, out: Path) -> None:
    """Replace ``out`` with a copy of the cache in ``source``, its files only: hard links where the file system
    allows (no file of a cache is ever written in place, so two names may share one), else copies."""
    with atomic_dir(out, overwrite=True) as tmp:
        for name in cache_files(source):
            try:
                os.link(source / name, tmp / name)
            except OSError:  # another file system, or one without hard links
                shutil.copy2(source / name, tmp / name)


def push_cache(
    folder: Path, repo_id: str, *, revision: str | None = None, private: bool = False, token: str | None = None
) -> str:
    """Upload the cache in ``folder`` as the dataset repository ``repo_id`` (created if need be; on ``revision``, a
    branch, created if need be). Returns the URI of the commit made, ``hf://datasets/REPO_ID@COMMIT``."""
    folder = Path(folder)
    if not _REPO.fullmatch(repo_id):
        raise DwPipeError(f"{repo_id!r} is not a Hub repository id: write OWNER/NAME")
    problems = _problems(folder)
    if problems:
        raise verification_error(
            str(folder), problems, "only a cache that verifies is pushed: finish or rebuild it (cache-teacher)"
        )
    content = read_cache_json(folder)
    ident = content["identity"]
    message = (
        f"dw-pipe teacher cache {content['identity_sha256'][:16]}: {ident['teacher']} on {ident['manifest']} "
        f"({content['rows']} utterances, top_k {ident['top_k']}, min_prob {ident['min_prob']:g})"
    )
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="dataset", exist_ok=True, private=private)
        if revision:
            api.create_branch(repo_id, branch=revision, repo_type="dataset", exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id,
            repo_type="dataset",
            folder_path=folder,
            revision=revision,
            allow_patterns=cache_files(folder),
            delete_patterns=["shard-*.parquet"],  # shards of an earlier push; the ones uploaded now stay
            commit_message=message,
        )
    except Exception as exc:
        raise _hub_error(
            f"cannot push {folder} to the Hub dataset {repo_id}",
            exc,
            "log in with write access (hf auth login, or HF_TOKEN) and check the repository id",
        ) from exc
    log.info("pushed %s to %s", folder, commit.commit_url)
    return HubCacheRef(repo_id, commit.oid).uri
