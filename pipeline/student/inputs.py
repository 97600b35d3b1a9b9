"""What a training run reads: its utterances, their targets, and the fingerprints that make a student stale.

:func:`load_training_data` opens and checks everything before a model is
built, so a wrong language or a stale teacher cache fails in one line, not
after minutes of encoding. :func:`training_inputs` fingerprints the contents
a student is made from (student.json "inputs"; checkpoints and finished
students from other contents are not reused).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core.distributed import rank_and_world
from pipeline.core.errors import DwPipeError
from pipeline.core.fsutil import sha256_files
from pipeline.data.manifest import Utterance, load_labelled
from pipeline.models.forward import targets_of
from pipeline.student.config import TrainConfig


@dataclass
class Example:
    """A training utterance, its prompt and label token ids, and (from the cache) the teacher's top-k targets."""

    utt: Utterance
    prompt: list[int]
    labels: list[int]
    targets: object | None = None  # SparseTargets given as they are (bench/train_step.py's online teacher)
    by_teacher: bool = False  # its labels are the teacher's transcript (train_student.teacher_labels)
    cache: object | None = None  # the TeacherCache that holds its targets, unpadded

    def teacher(self):
        """The teacher's targets, padded to top_k: read from the cache when asked, so that a run holds the cache's
        compact arrays and one batch's padded copies, not a padded copy of every utterance."""
        return self.targets if self.targets is not None else self.cache.targets(self.utt.id)


@dataclass
class TrainingData:
    """The tokenizer, feature extractor and teacher cache (KD modes; else None) of a run, and what it trains on."""

    tokenizer: Any
    extractor: Any
    cache: Any
    train_utts: list[Utterance]
    dev_utts: list[Utterance]
    examples: list[Example]
    teacher_rows: dict | None = None  # with teacher_labels: read, kept, filtered and why (pipeline/student/pseudo.py)


def load_training_data(cfg: TrainConfig, inputs: dict[str, str] | None = None) -> TrainingData:
    """Open the base's tokenizer and extractor, the teacher cache when the mode distils, both manifests; check
    that they fit together (:func:`check_languages`, :func:`check_temperature`). ``inputs``: the run's
    :func:`training_inputs`, whose commit a Hub cache is read at."""
    from transformers import WhisperFeatureExtractor, WhisperTokenizer

    tokenizer = WhisperTokenizer.from_pretrained(cfg.base)
    extractor = WhisperFeatureExtractor.from_pretrained(cfg.base)
    cache = None
    if cfg.uses_kd or cfg.teacher_labels:
        from pipeline.cache.reader import open_cache

        folder = cache_folder(cfg.cache, (inputs or {}).get("cache_commit"))
        cache = open_cache(
            folder, tokenizer_json=cfg.base / "tokenizer.json", manifest=cfg.train, teacher_labels=cfg.teacher_labels
        )
    train_utts = training_utterances(cfg)
    dev_utts = [u for u in load_labelled(cfg.dev, "train_student's dev set (scored)") if u.language in cfg.languages]
    pseudo, record = [], None
    if cfg.teacher_labels:
        from pipeline.student.pseudo import teacher_rows

        pseudo, record = teacher_rows(cfg, cache, tokenizer)
    check_languages(cfg, tokenizer, train_utts + pseudo, dev_utts, cache)
    check_temperature(cfg, cache if cfg.uses_kd else None)  # a mode without KD reads only the cache's labels
    examples = examples_of(train_utts, tokenizer, cache) + examples_of(pseudo, tokenizer, cache, by_teacher=True)
    return TrainingData(tokenizer, extractor, cache, train_utts + pseudo, dev_utts, examples, record)


def examples_of(utts: list[Utterance], tokenizer, cache, by_teacher: bool = False) -> list[Example]:
    """Prompt and labels of each utterance: the cache's (with the teacher's targets) when there is one."""
    out = []
    for u in utts:
        if cache is not None:
            out.append(Example(u, *cache.labels_of(u.id), by_teacher=by_teacher, cache=cache))
        else:
            out.append(Example(u, *targets_of(u, tokenizer)))
    return out


def training_utterances(cfg: TrainConfig) -> list[Utterance]:
    """The train manifest's utterances of ``cfg.languages``; its timestamped windows only with timestamp_windows."""
    return [
        u
        for u in load_labelled(cfg.train, "train_student")
        if u.language in cfg.languages and (cfg.timestamp_windows or not u.segments)
    ]


def training_inputs(cfg: TrainConfig) -> dict[str, str]:
    """Content fingerprints of what a run reads: the base weights and tokenizer, both manifests, and the
    teacher cache when the mode distils. A student or checkpoint made from other contents is stale, whatever
    the paths say (a cache rebuilt with another top_k sits at the same path)."""
    for what, path in (("train manifest", cfg.train), ("dev manifest", cfg.dev)):
        if not path.is_file():
            raise DwPipeError(f"train_student: {what} {path} does not exist; run prepare_data first")
    weights = sorted(cfg.base.glob("*.safetensors"))
    if not weights:
        raise DwPipeError(f"train_student: base {cfg.base} holds no .safetensors weights; run import_models first")
    inputs = {
        "base_weights_sha256": sha256_files(weights),
        "base_tokenizer_sha256": sha256_files(sorted(cfg.base.glob("tokenizer*.json"))),
        "train_manifest_sha256": sha256_files([cfg.train]),
        "dev_manifest_sha256": sha256_files([cfg.dev]),
    }
    if cfg.uses_kd or cfg.teacher_labels:
        inputs.update(cache_inputs(cfg.cache))
    if cfg.teacher_labels:
        inputs["unlabelled_manifest_sha256"] = sha256_files([cfg.unlabelled])
    return inputs


def cache_inputs(cache: Path) -> dict[str, str]:
    """What a student records of its teacher cache: the cache's fingerprint (identity and every shard's checksum);
    for a Hub cache also its URI and the commit that URI names now (fetched and verified here), so that a student
    of another revision, or of a branch that moved, is stale."""
    from pipeline.cache.hub import fetch_cache, is_hub_uri
    from pipeline.cache.reader import cache_fingerprint

    if not is_hub_uri(cache):
        return {"cache_sha256": cache_fingerprint(cache)}
    rank, world = rank_and_world()
    fetched = fetch_cache(cache) if rank == 0 else None
    if world > 1:  # rank 0 downloads; the others read its copy at its commit (never two writers of one folder)
        import torch.distributed as dist

        commit = [fetched.commit if fetched else None]
        dist.broadcast_object_list(commit, src=0)
        fetched = fetched or fetch_cache(cache, commit=commit[0])
    return {**fetched.record(), "cache_sha256": cache_fingerprint(fetched.folder)}


def cache_folder(cache: Path, commit: str | None = None) -> Path:
    """The local folder of ``cache``: the folder itself, or a Hub cache's verified download at ``commit`` (the one
    :func:`cache_inputs` recorded, so the run reads what its student records), else at the commit it names now."""
    from pipeline.cache.hub import fetch_cache, is_hub_uri

    return fetch_cache(cache, commit=commit).folder if is_hub_uri(cache) else cache


def check_languages(cfg: TrainConfig, tokenizer, train_utts: list[Utterance], dev_utts: list[Utterance], cache) -> None:
    """Refuse, in one line, training languages the tokenizer has no token for, or that the manifests or the
    teacher cache hold no utterance of (such a language would get untrained experts, or no dev choice)."""
    unk = tokenizer.unk_token_id
    unknown = [lang for lang in cfg.languages if tokenizer.convert_tokens_to_ids(f"<|{lang}|>") in (None, unk)]
    if unknown:
        raise DwPipeError(f"train_student: languages {unknown} have no language token in the tokenizer of {cfg.base}")
    for what, path, utts in (("train", cfg.train, train_utts), ("dev", cfg.dev, dev_utts)):
        absent = [lang for lang in cfg.languages if not any(u.language == lang for u in utts)]
        if absent:
            raise DwPipeError(f"train_student: the {what} manifest {path} has no utterance in {absent}")
    if cache is not None:
        missing = [u for u in train_utts if u.id not in cache]
        if missing:
            langs = sorted({u.language for u in missing})
            raise DwPipeError(
                f"train_student: {len(missing)} training utterances ({langs}; first: {missing[0].id}) are not in the "
                f"teacher cache {cfg.cache}; rerun cache_teacher on {cfg.train}"
            )


def check_temperature(cfg: TrainConfig, cache) -> None:
    """KD at the cache's temperature, or (renorm only) at another one by exact re-tempering of the stored top-k.

    With the ghost bucket the mass outside the top-k cannot be re-tempered (the teacher's other logits are
    unknown), so a mismatch there is refused."""
    if cache is None:
        return
    stored = float(cache.content["identity"]["temperature"])
    if stored != cfg.temperature and cfg.tail != "renorm":
        raise DwPipeError(
            f"train_student: temperature {cfg.temperature} differs from the cache's {stored} ({cfg.cache}); "
            "train at the cache's temperature, use tail: renorm (re-tempered exactly), or rebuild the cache"
        )
