"""prepare_data: validated manifests from a source (synthetic, hf, local).

Every source yields :class:`Candidate` items: a record (id, text, language,
split, speaker, gender) plus a reference to its audio. One loop checks the
record (main process: ids, text, language, token length), then produces,
checks and writes the audio as 16 kHz mono WAV in parallel workers. Every
candidate ends kept or rejected with a reason; the output folder appears
only when complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from pipeline.core.errors import DwPipeError
from pipeline.core.fsutil import atomic_dir, atomic_write_text
from pipeline.core.progress import progress
from pipeline.core.scoring import normalize
from pipeline.data.audio import (
    SAMPLE_RATE,
    AudioError,
    Voice,
    load_audio,
    resample,
    synthesize,
    to_float_mono,
    write_wav,
)
from pipeline.data.festival import FestivalVoice, synthesize_festival
from pipeline.data.manifest import (
    SPLITS,
    Candidate,
    Checker,
    Rejection,
    Utterance,
    audio_problem,
    summarize,
    write_jsonl,
)
from pipeline.data.recordings import LongformRecordings, TimestampWindows, build_recordings, build_windows
from pipeline.data.synthetic import SyntheticConfig, check_split_voices, plan_corpus, voice_design

log = logging.getLogger(__name__)


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


def _audio_samples(ref: object) -> np.ndarray:
    if isinstance(ref, tuple) and len(ref) == 2 and isinstance(ref[0], Voice):
        return synthesize(ref[1], ref[0])
    if isinstance(ref, tuple) and len(ref) == 2 and isinstance(ref[0], FestivalVoice):
        return synthesize_festival(ref[1], ref[0])
    if isinstance(ref, tuple):
        samples, rate = ref
        return resample(to_float_mono(np.asarray(samples)), int(rate))
    return load_audio(ref)


def _produce(job: tuple[int, object, Path]) -> tuple[int, float | None, str | None]:
    """Worker: decode or synthesize, check, write the WAV. Returns (index, duration, problem)."""
    index, ref, target = job
    try:
        samples = _audio_samples(ref)
    except DwPipeError:
        raise
    except AudioError as exc:
        return index, None, str(exc)
    except Exception as exc:  # any decoder failure is a property of this item
        return (
            index,
            None,
            f"unreadable audio: {type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}",
        )
    problem = audio_problem(samples)
    if problem:
        return index, None, problem
    target.parent.mkdir(parents=True, exist_ok=True)
    write_wav(target, samples)
    return index, len(samples) / SAMPLE_RATE, None


def _audio_name(uid: str) -> str:
    safe = re.sub(r"[^\w.-]", "_", uid)
    return safe if safe == uid else f"{safe}-{hashlib.sha1(uid.encode()).hexdigest()[:8]}"


def process(
    candidates: list[Candidate], checker: Checker, out: Path, workers: int
) -> tuple[list[Utterance], list[Rejection]]:
    """Check and materialize every candidate; returns (kept in input order, rejected)."""
    rejected: list[Rejection] = []
    jobs, accepted = [], {}
    for i, c in enumerate(candidates):
        r = c.record
        problem = c.record.get("_problem") or checker.record_problem(
            r.get("id"), r.get("text"), r.get("language"), r.get("split"), r.get("translation")
        )
        if problem:
            rejected.append(Rejection(c.source, problem, r.get("id") if isinstance(r.get("id"), str) else None, c.line))
            continue
        audio_rel = f"audio/{r['split']}/{_audio_name(r['id'])}.wav"
        accepted[i] = audio_rel
        jobs.append((i, c.audio, out / audio_rel))
    results: dict[int, tuple[float | None, str | None]] = {}
    ctx = multiprocessing.get_context("forkserver")
    pool = ctx.Pool(workers) if workers > 1 else None
    try:
        mapped = pool.imap_unordered(_produce, jobs, chunksize=4) if pool else map(_produce, jobs)
        for index, duration, problem in progress(mapped, desc="audio", total=len(jobs), unit="utt"):
            results[index] = (duration, problem)
    finally:
        if pool:
            pool.close()
            pool.join()
    kept = []
    for i, audio_rel in accepted.items():
        c, (duration, problem) = candidates[i], results[i]
        r = c.record
        if problem:
            rejected.append(Rejection(c.source, problem, r["id"], c.line))
            continue
        kept.append(
            Utterance(
                id=r["id"],
                audio=audio_rel,
                text=r["text"].strip(),
                language=r["language"],
                duration=round(duration, 4),
                split=r["split"],
                source=r.get("source") or c.source,
                speaker=str(r.get("speaker") or ""),
                gender=normalize_gender(r.get("gender")),
                age=normalize_age(r.get("age")),
                translation=str(r.get("translation") or "").strip(),
            )
        )
    return kept, rejected


def normalize_gender(value: object) -> str:
    text = str(value or "").strip().lower()
    if text.startswith(("female", "woman", "f")) and text not in ("", "false"):
        return "female"
    if text.startswith(("male", "man", "m")):
        return "male"
    return "other" if text in ("other", "non-binary", "nonbinary") else "unknown"


ADULT_AGES = frozenset(
    {"adult", "twenties", "thirties", "fourties", "forties", "fifties", "sixties", "seventies", "eighties", "nineties"}
)  # Common Voice's age bands from twenties on


def normalize_age(value: object) -> str:
    """``child``, ``adult``, or ``""`` where not known (a teenager is neither)."""
    text = str(value or "").strip().lower()
    if text in ("child", "children", "kid"):
        return "child"
    return "adult" if text in ADULT_AGES else ""


def synthetic_candidates(cfg: PrepareDataConfig) -> tuple[list[Candidate], dict]:
    check_split_voices(cfg.synthetic.voices)
    items, text_stats = plan_corpus(cfg.synthetic, cfg.seed)
    candidates = [
        Candidate(
            "synthetic",
            {
                "id": it.id,
                "text": it.text,
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
    return candidates, {"text_filter": text_stats, "voices": voice_design(items)}


def local_candidates(manifest: Path, allow_outside: bool) -> Iterator[Candidate]:
    """Items of a manifest in our format; paths are checked against its folder."""
    from pipeline.data.manifest import read_jsonl

    if not manifest.is_file():
        raise DwPipeError(f"local manifest {manifest} not found")
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
        candidates = list(local_candidates(Path(cfg.input), cfg.allow_outside_paths))
    elif cfg.source == "hf":
        from pipeline.data.hub import hf_candidates

        datasets = [cfg.hf] if cfg.input else list(cfg.hf_datasets)
        if not datasets or any(not (d.input or cfg.input) for d in datasets):
            raise DwPipeError(
                "source hf needs --input NAME_OR_FOLDER, or prepare_data.hf_datasets entries with an input each"
            )
        candidates, selection = [], {}
        for d in datasets:
            found, chosen = hf_candidates(d.input if d.input and not cfg.input else cfg.input, d, languages)
            candidates += found
            selection |= chosen
        extra = {"selection": selection}
    else:
        raise DwPipeError(f"unknown source {cfg.source!r}: use synthetic, hf or local")
    log.info("prepare_data: %d candidate utterances from %s", len(candidates), cfg.source)
    with atomic_dir(cfg.out_dir, overwrite=True) as tmp:
        kept, rejected = process(candidates, Checker(languages, tokenizer, normalize), tmp, cfg.workers)
        if not kept:
            raise DwPipeError(nothing_kept(cfg, len(candidates), rejected))
        windows = build_windows(kept, tmp, cfg.windows, cfg.seed) if cfg.windows else []
        for split in SPLITS:
            write_jsonl(tmp / f"{split}.jsonl", (u for u in kept + windows if u.split == split))
        write_jsonl(tmp / "rejects.jsonl", rejected)
        recordings = build_recordings(kept, tmp, cfg.longform, cfg.seed) if cfg.longform else []
        with open(tmp / "longform.jsonl", "w", encoding="utf-8") as handle:  # empty without prepare_data.longform
            handle.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in recordings)
        extra["windows"] = {
            lang: sum(1 for w in windows if w.language == lang) for lang in sorted({w.language for w in windows})
        }
        extra["longform"] = {r["id"]: {"seconds": r["duration"], "segments": len(r["segments"])} for r in recordings}
        if cfg.longform:
            extra["longform_missing"] = sorted(set(cfg.longform.languages) - {r["language"] for r in recordings})
        summary = summarize(kept, rejected, len(candidates)) | extra | {"source": cfg.source, "config": _jsonable(cfg)}
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    failed_before(cfg).unlink(missing_ok=True)  # what an earlier run that kept nothing left beside the folder
    for r in rejected[:5]:
        log.warning("rejected %s: %s", r.id or f"line {r.line}", r.reason)
    log.info("prepare_data: kept %d, rejected %d of %d", len(kept), len(rejected), len(candidates))
    return summary


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
