"""A teacher cache on the Hub: push, fetch once per commit, verify, refuse; cache_teacher and train_student read it.

The Hub is a local folder here (``FakeHub``): ``huggingface_hub``'s calls are monkeypatched, no test goes to the
network. A repository is ROOT/OWNER--NAME/, each commit a sub-folder named by its (fake) sha, and refs.json maps
branches to commits, as the Hub resolves a revision.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import pytest
from typer.testing import CliRunner

from pipeline.cache.build import CacheMismatchError, CacheTeacherConfig, build_cache
from pipeline.cache.hub import fetch_cache, parse_hub_uri, push_cache
from pipeline.cache.reader import CacheError, cache_fingerprint, verify_cache
from pipeline.cli import app
from pipeline.core.errors import DwPipeError
from pipeline.student.config import TrainConfig
from pipeline.student.inputs import load_training_data, training_inputs
from tests.conftest import write_tiny_manifest

URI = "hf://datasets/team/tiny-cache"


class FakeHub:
    """The Hub's dataset repositories in a local folder, with a count of each call."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.calls: dict[str, int] = {}
        self.messages: dict[str, str] = {}  # commit message of each commit

    def _count(self, name: str, repo_type: str | None) -> None:
        assert repo_type == "dataset", f"{name} asked for a {repo_type} repository"
        self.calls[name] = self.calls.get(name, 0) + 1

    def repo(self, repo_id: str) -> Path:
        return self.root / repo_id.replace("/", "--")

    def refs(self, repo_id: str) -> dict[str, str]:
        path = self.repo(repo_id) / "refs.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def resolve(self, repo_id: str, revision: str | None) -> str:
        revision = revision or "main"
        sha = self.refs(repo_id).get(revision, revision)
        if not (self.repo(repo_id) / sha).is_dir():
            raise ValueError(
                f"Revision Not Found for url: https://huggingface.co/api/datasets/{repo_id}/revision/{revision}"
            )
        return sha

    def commit(self, repo_id: str, branch: str, files: dict[str, bytes], message: str) -> str:
        sha = hashlib.sha1(f"{repo_id}:{message}:{len(list(self.repo(repo_id).glob('*/')))}".encode()).hexdigest()
        folder = self.repo(repo_id) / sha
        folder.mkdir(parents=True)
        for name, data in files.items():
            (folder / name).write_bytes(data)
        refs = {**self.refs(repo_id), branch: sha}
        (self.repo(repo_id) / "refs.json").write_text(json.dumps(refs))
        self.messages[sha] = message
        return sha

    def files(self, repo_id: str, revision: str | None = None) -> dict[str, bytes]:
        folder = self.repo(repo_id) / self.resolve(repo_id, revision)
        return {p.name: p.read_bytes() for p in folder.iterdir()}

    def install(self, monkeypatch) -> FakeHub:
        hub = self

        def create_repo(api, repo_id, *, repo_type=None, exist_ok=False, private=None, **kw):
            hub._count("create_repo", repo_type)
            if not hub.repo(repo_id).is_dir():
                hub.commit(repo_id, "main", {".gitattributes": b"*.parquet filter=lfs\n"}, "initial commit")
            elif not exist_ok:
                raise FileExistsError(repo_id)
            return f"https://huggingface.co/datasets/{repo_id}"

        def create_branch(api, repo_id, *, branch, repo_type=None, exist_ok=False, **kw):
            hub._count("create_branch", repo_type)
            refs = hub.refs(repo_id)
            if branch not in refs:
                (hub.repo(repo_id) / "refs.json").write_text(json.dumps({**refs, branch: refs["main"]}))

        def upload_folder(
            api, *, repo_id, folder_path, repo_type=None, revision=None, commit_message=None, **kw
        ) -> SimpleNamespace:
            hub._count("upload_folder", repo_type)
            files = hub.files(repo_id, revision)
            for pattern in kw.get("delete_patterns") or []:
                files = {n: d for n, d in files.items() if n == ".gitattributes" or not fnmatch.fnmatch(n, pattern)}
            for path in Path(folder_path).rglob("*"):
                name = path.relative_to(folder_path).as_posix()
                allowed = kw.get("allow_patterns")
                if path.is_file() and (allowed is None or any(fnmatch.fnmatch(name, p) for p in allowed)):
                    files[name] = path.read_bytes()
            sha = hub.commit(repo_id, revision or "main", files, commit_message)
            return SimpleNamespace(oid=sha, commit_url=f"https://huggingface.co/datasets/{repo_id}/commit/{sha}")

        def dataset_info(api, repo_id, *, revision=None, **kw) -> SimpleNamespace:
            hub._count("dataset_info", "dataset")
            return SimpleNamespace(sha=hub.resolve(repo_id, revision))

        def snapshot_download(repo_id, *, repo_type=None, revision=None, local_dir=None, allow_patterns=None, **kw):
            hub._count("snapshot_download", repo_type)
            local_dir = Path(local_dir)
            for name, data in hub.files(repo_id, revision).items():
                if allow_patterns is None or any(fnmatch.fnmatch(name, p) for p in allow_patterns):
                    (local_dir / name).write_bytes(data)
            (local_dir / ".cache" / "huggingface").mkdir(parents=True)  # what a local_dir download leaves beside
            return str(local_dir)

        for name, fake in [
            ("create_repo", create_repo),
            ("create_branch", create_branch),
            ("upload_folder", upload_folder),
            ("dataset_info", dataset_info),
        ]:
            monkeypatch.setattr(huggingface_hub.HfApi, name, fake)
        monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
        return self


@pytest.fixture()
def hub(tmp_path, monkeypatch) -> FakeHub:
    return FakeHub(tmp_path / "hub").install(monkeypatch)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_hf_dir) -> dict:
    """A tiny cache of three shards, the config that built it, and a dev manifest."""
    root = tmp_path_factory.mktemp("hub-data")
    train = write_tiny_manifest(root, "train.jsonl", seed=0)
    cfg = CacheTeacherConfig(
        teacher=tiny_hf_dir,
        manifest=train,
        out_dir=root / "cache",
        top_k=8,
        min_prob=0.0,
        id_encoding="rank",
        value_encoding="float16",
        shard_target_mb=0.0012,
        batch_size=4,
    )
    content = build_cache(cfg)
    assert len(content["shards"]) >= 3
    return {"cfg": cfg, "cache": cfg.out_dir, "dev": write_tiny_manifest(root, "dev.jsonl", seed=1)}


def _copy(cache: Path, to: Path) -> Path:
    shutil.copytree(cache, to)
    return to


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_push_uploads_the_cache_files_only_and_fetch_downloads_each_commit_once(tiny, hub, tmp_path):
    folder = _copy(tiny["cache"], tmp_path / "cache")
    (folder / "notes.txt").write_text("not part of the cache")
    content = json.loads((folder / "cache.json").read_text())
    shards = [s["file"] for s in content["shards"]]

    pushed = push_cache(folder, "team/tiny-cache", private=True)
    (sha,) = [s for s in hub.refs("team/tiny-cache").values()]
    assert pushed == f"{URI}@{sha}"
    on_hub = hub.files("team/tiny-cache")
    # the shards, cache.json and the card; not the stray file nor the build's checksum sidecars
    assert sorted(on_hub) == sorted([".gitattributes", "cache.json", "README.md", *shards])
    assert hub.messages[sha].startswith(f"dw-pipe teacher cache {content['identity_sha256'][:16]}: ")

    root = tmp_path / "hub-caches"
    fetched = fetch_cache(URI, root)
    assert (fetched.folder, fetched.uri, fetched.commit) == (root / f"team--tiny-cache@{sha}", URI, sha)
    assert sorted(p.name for p in fetched.folder.iterdir()) == sorted(["cache.json", "README.md", *shards])
    assert (fetched.folder / "cache.json").read_bytes() == (folder / "cache.json").read_bytes()
    assert verify_cache(fetched.folder) == []
    assert hub.calls["snapshot_download"] == 1

    again = fetch_cache(URI, root)
    assert again == fetched and hub.calls["snapshot_download"] == 1  # downloaded once
    pinned = fetch_cache(pushed, root)  # a commit names itself: no call to the Hub at all
    assert pinned.folder == fetched.folder and hub.calls["dataset_info"] == 2
    assert sorted(p.name for p in root.iterdir()) == [fetched.folder.name]  # no temporary folder left

    _flip_a_byte(fetched.folder / shards[0])  # a local copy that no longer verifies is downloaded again
    assert verify_cache(fetch_cache(URI, root).folder) == [] and hub.calls["snapshot_download"] == 2


def test_a_tampered_shard_on_the_hub_is_refused_in_one_line_and_nothing_is_kept(tiny, hub, tmp_path):
    push_cache(tiny["cache"], "team/tiny-cache")
    sha = hub.refs("team/tiny-cache")["main"]
    _flip_a_byte(hub.repo("team/tiny-cache") / sha / "shard-00001.parquet")
    root = tmp_path / "hub-caches"
    with pytest.raises(CacheError) as exc:
        fetch_cache(URI, root)
    assert _one_line(exc).startswith(f"Hub cache {URI} (commit {sha[:12]}) failed verification: shard-00001.parquet: ")
    assert "sha256 mismatch" in str(exc.value) and "push the cache again" in str(exc.value)
    assert list(root.iterdir()) == []


def test_push_to_a_branch_replaces_the_shards_of_an_earlier_push(tiny, hub, tmp_path):
    push_cache(tiny["cache"], "team/tiny-cache", revision="v2")
    folder = _copy(tiny["cache"], tmp_path / "cache")
    content = json.loads((folder / "cache.json").read_text())
    last = content["shards"].pop()  # a cache of one shard fewer, under the same names
    content["rows"] -= last["rows"]
    content["tokens"] -= last["tokens"]
    (folder / last["file"]).unlink()
    (folder / "cache.json").write_text(json.dumps(content))
    pushed = push_cache(folder, "team/tiny-cache", revision="v2")
    assert hub.calls["create_branch"] == 2
    assert sorted(hub.files("team/tiny-cache", "v2")) == sorted(
        [".gitattributes", "cache.json", "README.md", *(s["file"] for s in content["shards"])]
    )
    assert list(hub.files("team/tiny-cache")) == [".gitattributes"]  # main untouched
    assert fetch_cache(f"{URI}@v2", tmp_path / "hc").commit == parse_hub_uri(pushed).revision


@pytest.mark.parametrize(
    "uri",
    [
        "hf://models/team/tiny-cache",
        "hf://datasets/tiny-cache",
        "hf://datasets/team/tiny-cache/cache.json",
        "hf://datasets/team/tiny-cache@",
        "hf://datasets/team/tiny-cache@main/extra",
        "hf://datasets/team/tiny cache",
        "hf:datasets/team/tiny-cache",
    ],
)
def test_a_malformed_uri_is_refused_in_one_line(uri, hub, tmp_path):
    with pytest.raises(DwPipeError) as exc:
        fetch_cache(uri, tmp_path)
    assert _one_line(exc).startswith(f"{uri!r} is not a Hub cache: write hf://datasets/OWNER/NAME")
    with pytest.raises(DwPipeError, match=r"^cache_teacher: from_hub: .* is not a Hub cache") as exc:
        CacheTeacherConfig(teacher=tmp_path, manifest=tmp_path, out_dir=tmp_path, from_hub=uri).check()
    _one_line(exc)
    assert hub.calls == {}


def test_uri_forms():
    assert parse_hub_uri(URI) == parse_hub_uri(Path(URI))  # Path() leaves hf:/datasets/...: the same repository
    assert str(Path(URI)) == "hf:/datasets/team/tiny-cache"
    ref = parse_hub_uri("hf://datasets/team/tiny-cache@refs%2Fpr%2F3")
    assert (ref.repo_id, ref.revision, ref.uri) == ("team/tiny-cache", "refs/pr/3", f"{URI}@refs%2Fpr%2F3")
    assert parse_hub_uri(URI).revision is None


def test_push_refuses_a_folder_that_is_not_a_verified_cache(tiny, hub, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    building = _copy(tiny["cache"], tmp_path / "building")
    content = json.loads((building / "cache.json").read_text())
    (building / "cache.json").write_text(json.dumps({"status": "building", "identity": content["identity"]}))
    corrupt = _copy(tiny["cache"], tmp_path / "corrupt")
    _flip_a_byte(corrupt / "shard-00002.parquet")
    for folder, problem in [
        (empty, "no cache.json"),
        (building, "the cache build did not finish"),
        (corrupt, "shard-00002.parquet: sha256 mismatch"),
    ]:
        with pytest.raises(CacheError) as exc:
            push_cache(folder, "team/tiny-cache")
        message = _one_line(exc)
        assert (
            message.startswith(f"{folder} failed verification: {problem}") and "only a cache that verifies" in message
        )
    with pytest.raises(DwPipeError, match="'tiny-cache' is not a Hub repository id: write OWNER/NAME"):
        push_cache(tiny["cache"], "tiny-cache")
    assert hub.calls == {}


def test_cache_teacher_from_hub_installs_the_cache_without_the_teacher_and_refuses_another(
    tiny, hub, tmp_path, monkeypatch
):
    import transformers

    def no_teacher(*args, **kwargs):
        raise AssertionError("the teacher ran")

    monkeypatch.setattr(transformers.WhisperForConditionalGeneration, "from_pretrained", no_teacher)
    push_cache(tiny["cache"], "team/tiny-cache")
    cfg = replace(tiny["cfg"], out_dir=tmp_path / "data" / "cache", from_hub=URI)
    monkeypatch.chdir(tmp_path)  # the default download root, data/hub-caches, is the working directory's
    content = build_cache(cfg)
    assert content == json.loads((tiny["cache"] / "cache.json").read_text())
    assert (cfg.out_dir / "cache.json").read_bytes() == (tiny["cache"] / "cache.json").read_bytes()
    assert verify_cache(cfg.out_dir) == []
    assert (tmp_path / "data" / "hub-caches" / f"team--tiny-cache@{hub.refs('team/tiny-cache')['main']}").is_dir()
    # The same settings without from_hub keep every shard: the checksum sidecars are there, the teacher never runs.
    assert build_cache(replace(cfg, from_hub=None)) == content
    assert build_cache(cfg) == content and hub.calls["snapshot_download"] == 1

    other = replace(cfg, out_dir=tmp_path / "other", top_k=4)
    with pytest.raises(CacheMismatchError) as exc:
        build_cache(other)
    message = _one_line(exc)
    assert message.startswith(f"cache_teacher: the Hub cache {URI} (commit ") and "top_k: 8 -> 4" in message
    assert "from_hub: null" in message and not other.out_dir.exists()


def _train_config(tiny, tiny_hf_dir, out: Path, **kw) -> TrainConfig:
    return replace(
        TrainConfig(
            mode="distilwhisper",
            languages=("pl", "cs"),
            base=tiny_hf_dir,
            cache=Path(URI),  # as params.yaml gives it, through from_mapping's Path
            train=tiny["cfg"].manifest,
            dev=tiny["dev"],
            out_dir=out,
            clsr_decoder_layers=(0, 1),
            epochs=1,
            max_steps=1,
            batch_size=4,
            max_new_tokens=4,
        ),
        **kw,
    )


def test_a_student_records_the_hub_commit_and_a_new_revision_makes_it_stale(
    tiny, hub, tiny_hf_dir, tmp_path, monkeypatch
):
    from pipeline.student.train import train_student, trained_summary

    monkeypatch.chdir(tmp_path)
    first = push_cache(tiny["cache"], "team/tiny-cache")
    cfg = _train_config(tiny, tiny_hf_dir, tmp_path / "student")
    inputs = training_inputs(cfg)
    local = tmp_path / "data" / "hub-caches" / f"team--tiny-cache@{parse_hub_uri(first).revision}"
    assert inputs["cache_uri"] == URI and inputs["cache_commit"] == parse_hub_uri(first).revision
    assert inputs["cache_sha256"] == cache_fingerprint(tiny["cache"]) == cache_fingerprint(local)
    train_student(cfg, inputs)
    record = json.loads((cfg.out_dir / "student.json").read_text())
    assert record["inputs"] == inputs and record["training"]["cache"] == URI
    assert trained_summary(cfg, training_inputs(cfg)) is not None  # unchanged: up to date

    other = replace(tiny["cfg"], out_dir=tmp_path / "other-cache", top_k=4)  # main moves to another cache
    build_cache(other)
    second = push_cache(other.out_dir, "team/tiny-cache")
    moved = training_inputs(cfg)
    assert moved["cache_commit"] == parse_hub_uri(second).revision != inputs["cache_commit"]
    assert moved["cache_sha256"] == cache_fingerprint(other.out_dir) != inputs["cache_sha256"]
    assert trained_summary(cfg, moved) is None  # retrained
    pinned = training_inputs(replace(cfg, cache=Path(first)))  # the first revision, by its commit
    assert (pinned["cache_commit"], pinned["cache_sha256"]) == (inputs["cache_commit"], inputs["cache_sha256"])
    assert load_training_data(cfg, inputs).cache.folder.resolve() == local  # the commit its inputs recorded


def test_a_hub_cache_of_another_tokenizer_than_the_students_base_is_refused(
    tiny, hub, tiny_hf_dir, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    push_cache(tiny["cache"], "team/tiny-cache")
    base = _copy(tiny_hf_dir, tmp_path / "base")
    tokenizer = base / "tokenizer.json"
    tokenizer.write_text(tokenizer.read_text().replace('"<|de|>"', '"<|xx|>"'))
    cfg = _train_config(tiny, tiny_hf_dir, tmp_path / "student", base=base)
    with pytest.raises(CacheError) as exc:
        load_training_data(cfg, training_inputs(cfg))
    assert "was built with another tokenizer than" in _one_line(exc) and "team--tiny-cache@" in str(exc.value)


def test_cli_push_and_pull(tiny, hub, tmp_path):
    runner = CliRunner()  # stdout and the library's log lines (stderr) together: the result is the last line
    result = runner.invoke(app, ["cache", "push", str(tiny["cache"]), "team/tiny-cache", "--revision", "v1"])
    assert result.exit_code == 0, result.output
    sha = hub.refs("team/tiny-cache")["v1"]
    assert result.output.splitlines()[-1] == f"{tiny['cache']}: pushed as {URI}@{sha}"
    result = runner.invoke(app, ["cache", "pull", f"{URI}@v1", "--dest", str(tmp_path / "hc")])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "hc" / f"team--tiny-cache@{sha}"
    assert result.output.splitlines()[-1] == f"{URI}@v1 (commit {sha}): verified in {folder}"
    assert verify_cache(folder) == []
    result = runner.invoke(app, ["cache", "pull", "hf://datasets/tiny-cache"])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: 'hf://datasets/tiny-cache' is not")
