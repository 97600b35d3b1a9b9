"""prepare_data: validated manifests from a source (synthetic, hf, local).

Every source yields :class:`Candidate` items: a record (id, text, language,
split, speaker, gender) plus a reference to its audio. A first pass checks
the records (ids, text, language, token length); a second produces, checks
and writes the audio as 16 kHz mono WAV in parallel workers
(:mod:`pipeline.data.materialize`: streamed, and resumed after a kill).
Every candidate ends kept or rejected with a reason; the output folder
appears only when complete.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipeline.core.errors import DwPipeError
from pipeline.core.fsutil import atomic_dir, atomic_write_text
from pipeline.core.scoring import normalize
from pipeline.data.manifest import (
    SPLITS,
    UNLABELLED,
    WITHHELD_TEXTS,
    Candidate,
    Candidates,
    Checker,
    Rejection,
    Utterance,
    summarize,
    write_jsonl,
)
from pipeline.data.materialize import JOURNAL, process
from pipeline.data.recordings import LongformRecordings, TimestampWindows, build_recordings, build_windows
from pipeline.data.synthetic import SyntheticConfig, plan_corpus
from pipeline.data.voices import check_split_voices, voice_design

log = logging.getLogger(__name__)
WITHHELD = "withheld"  # synthetic_candidates' extra: id -> text of each unlabelled pool row


@dataclass(frozen=True)
class SplitSelection:
    """Which rows of one dataset split to keep; the others are counted, not rejected.

    ``rows``: a JSON file ``{config: {dataset split: [row, ...]}}`` of 0-based
    row positions (the layout of DistilWhisper's Common Voice lists).
    ``top_by`` + ``n``: the ``n`` first rows after a stable sort by these
    columns (``-col`` descending), so ties keep the dataset's row order.
    Both: the listed rows, refused unless they are what the rule picks here
    (which tells a copy of the dataset in another row order).
    """

    rows: Path | None = None
    top_by: tuple[str, ...] = ()
    n: int = 0

    def check(self, where: str) -> None:
        if self.rows is None and not self.top_by:
            raise DwPipeError(f"{where}: give rows (a list file) or top_by with n")
        if self.rows is None and self.n <= 0:
            raise DwPipeError(f"{where}: top_by needs n > 0 (how many rows to keep)")
        if self.rows is not None and self.n:
            raise DwPipeError(f"{where}: n is the length of the rows list; leave n out with rows")


@dataclass(frozen=True)
class HFSourceConfig:
    """One Hugging Face dataset (config) and how its splits map onto ours."""

    splits: dict[str, str]  # our split -> dataset split name
    name: str | None = None  # dataset config (e.g. FLEURS "pl_pl", CV "pl")
    language: str | None = None  # force one language (otherwise from locale / language columns)
    max_per_split: int = 0  # 0: all; else the first N (dataset order) of each split, after select
    input: str | None = None  # hub id or save_to_disk folder (else prepare_data.input)
    select: dict[str, SplitSelection] = field(default_factory=dict)  # our split -> its rows; absent: all rows


@dataclass(frozen=True)
class PrepareDataConfig:
    source: str
    out_dir: Path
    model: Path  # HF Whisper folder: tokenizer and known languages
    seed: int
    workers: int
    synthetic: SyntheticConfig
    hf: HFSourceConfig
    input: str | None = None
    hf_datasets: tuple[HFSourceConfig, ...] = ()  # several datasets (e.g. Common Voice + FLEURS per language)
    allow_outside_paths: bool = False
    longform: LongformRecordings | None = None  # long-form recordings made of held-out utterances; None: none
    windows: TimestampWindows | None = None  # timestamped training windows of joined train utterances; None: none


def synthetic_candidates(cfg: PrepareDataConfig) -> tuple[list[Candidate], dict]:
    """The planned corpus (a list: its texts are few and its audio is made, not read)."""
    check_split_voices(cfg.synthetic.voices)
    items, text_stats = plan_corpus(cfg.synthetic, cfg.seed)
    candidates = [
        Candidate(
            "synthetic",
            {
                "id": it.id,
                "text": "" if it.split == UNLABELLED else it.text,  # a pool's texts are withheld
                "language": it.language,
                "split": it.split,
                "source": f"synthetic-{it.source}",
                "speaker": it.speaker,
                "gender": it.gender,
                "age": it.age,
                "translation": it.translation,
            },
            (it.voice, it.text),
        )
        for it in items
    ]
    withheld = {it.id: it.text for it in items if it.split == UNLABELLED}
    return candidates, {"text_filter": text_stats, "voices": voice_design(items), WITHHELD: withheld}


def local_candidates(manifest: Path, allow_outside: bool) -> Iterator[Candidate]:
    """Items of a manifest in our format (which prepare_data checks exists); paths are checked against its folder."""
    from pipeline.data.manifest import read_jsonl

    base = manifest.parent.resolve()
    for number, record, problem in read_jsonl(manifest):
        record = dict(record or {})
        audio = record.get("audio")
        if problem is None:
            problem = _path_problem(audio, base, allow_outside)
        if problem:
            record["_problem"] = problem
        path = (base / audio).resolve() if isinstance(audio, str) and audio else None
        yield Candidate(f"local:{manifest.name}", record, path, line=number)


def _path_problem(audio: object, base: Path, allow_outside: bool) -> str | None:
    if not isinstance(audio, str) or not audio:
        return "missing audio path"
    path = Path(audio)
    if not allow_outside:
        if path.is_absolute():
            return "absolute audio path: paths must be relative to the manifest (or pass --allow-outside-paths)"
        if not (base / path).resolve().is_relative_to(base):
            return "audio path escapes the manifest's folder: (or pass --allow-outside-paths)"
    if not (base / path).is_file():
        return f"unreadable audio: file not found: {audio}"
    return None


def prepare_data(cfg: PrepareDataConfig) -> dict:
    """Build ``out_dir`` with the split manifests, audio, rejects.jsonl and summary.json."""
    from transformers import GenerationConfig, WhisperTokenizer

    if not (cfg.model / "tokenizer.json").is_file():
        raise DwPipeError(f"prepare_data.model {cfg.model} holds no Whisper tokenizer; run import_models first")
    tokenizer = WhisperTokenizer.from_pretrained(cfg.model)
    languages = frozenset(t.strip("<|>") for t in GenerationConfig.from_pretrained(cfg.model).lang_to_id)
    extra: dict = {}
    if cfg.source == "synthetic":
        candidates, extra = synthetic_candidates(cfg)
    elif cfg.source == "local":
        if not cfg.input:
            raise DwPipeError("source local needs --input PATH (a manifest .jsonl)")
        manifest = Path(cfg.input)
        if not manifest.is_file():
            raise DwPipeError(f"local manifest {manifest} not found")
        candidates = Candidates(lambda _records_only: local_candidates(manifest, cfg.allow_outside_paths))
    elif cfg.source == "hf":
        from pipeline.data.hub import hf_candidates

        datasets = [cfg.hf] if cfg.input else list(cfg.hf_datasets)
        if not datasets or any(not (d.input or cfg.input) for d in datasets):
            raise DwPipeError(
                "source hf needs --input NAME_OR_FOLDER, or prepare_data.hf_datasets entries with an input each"
            )
        parts, selection = [], {}
        for d in datasets:
            found, chosen = hf_candidates(d.input if d.input and not cfg.input else cfg.input, d, languages)
            parts.append(found)
            selection |= chosen
        candidates = Candidates.chain(parts)
        extra = {"selection": selection}
    else:
        raise DwPipeError(f"unknown source {cfg.source!r}: use synthetic, hf or local")
    # resume: a run killed part-way left its audio in .<out_dir>.partial with a journal; this run keeps what still
    # matches its source and produces the rest (pipeline/data/materialize.py)
    with atomic_dir(cfg.out_dir, overwrite=True, resume=True) as tmp:
        kept, rejected = process(candidates, Checker(languages, tokenizer, normalize), tmp, cfg.workers)
        read = len(kept) + len(rejected)
        log.info("prepare_data: %d candidate utterances from %s", read, cfg.source)
        if not kept:
            shutil.rmtree(tmp)  # nothing in it worth resuming from
            raise DwPipeError(nothing_kept(cfg, read, rejected))
        windows = build_windows(kept, tmp, cfg.windows, cfg.seed) if cfg.windows else []
        for split in SPLITS:
            write_jsonl(tmp / f"{split}.jsonl", (u for u in kept + windows if u.split == split))
        write_jsonl(tmp / "rejects.jsonl", rejected)
        write_withheld(tmp / WITHHELD_TEXTS, kept, extra.pop(WITHHELD, {}))
        recordings = build_recordings(kept, tmp, cfg.longform, cfg.seed) if cfg.longform else []
        with open(tmp / "longform.jsonl", "w", encoding="utf-8") as handle:  # empty without prepare_data.longform
            handle.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in recordings)
        extra["windows"] = {
            lang: sum(1 for w in windows if w.language == lang) for lang in sorted({w.language for w in windows})
        }
        extra["longform"] = {r["id"]: {"seconds": r["duration"], "segments": len(r["segments"])} for r in recordings}
        if cfg.longform:
            extra["longform_missing"] = sorted(set(cfg.longform.languages) - {r["language"] for r in recordings})
        summary = summarize(kept, rejected, read) | extra | {"source": cfg.source, "config": _jsonable(cfg)}
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        (tmp / JOURNAL).unlink()  # the folder is complete: nothing left to resume
    failed_before(cfg).unlink(missing_ok=True)  # what an earlier run that kept nothing left beside the folder
    for r in rejected[:5]:
        log.warning("rejected %s: %s", r.id or f"line {r.line}", r.reason)
    log.info("prepare_data: kept %d, rejected %d of %d", len(kept), len(rejected), read)
    return summary


def write_withheld(path: Path, kept: list[Utterance], texts: dict[str, str]) -> None:
    """The texts of the kept rows of an unlabelled pool, one ``{"id", "language", "text"}`` line each (empty without
    a pool): no stage trains or selects on them; they only score the teacher's labels of the pool
    (pipeline/student/pseudo.py: label_quality)."""
    lines = [
        json.dumps({"id": u.id, "language": u.language, "text": texts[u.id]}, ensure_ascii=False) + "\n"
        for u in kept
        if u.id in texts
    ]
    atomic_write_text(path, "".join(lines))


def failed_before(cfg: PrepareDataConfig) -> Path:
    """Where a run that kept nothing writes its rejections (its output folder is left as it was)."""
    return cfg.out_dir.parent / f"{cfg.out_dir.name}.rejects.jsonl"


def nothing_kept(cfg: PrepareDataConfig, read: int, rejected: list[Rejection], shown: int = 3) -> str:
    """The one line a stage that kept nothing ends with: each kind of reason (its text before the first colon)
    with its count, the first rejections in full, and where every rejection is written (beside the output
    folder, which stays as it was)."""
    path = failed_before(cfg)
    cfg.out_dir.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "".join(r.to_json() + "\n" for r in rejected))
    kinds = Counter(r.reason.split(":", 1)[0] for r in rejected).most_common()
    first = "; ".join(f"{r.id or f'line {r.line}'}: {r.reason}" for r in rejected[:shown])
    return (
        f"no valid utterance among {read} from {cfg.source}: {', '.join(f'{n} {kind}' for kind, n in kinds)} "
        f"(first: {first}; all {len(rejected)} in {path})"
    )


def _jsonable(cfg: PrepareDataConfig) -> dict:
    return json.loads(json.dumps(asdict(cfg), default=str))
