"""What the benchmark runs: its config, and the run matrix drawn from it.

:class:`BenchmarkConfig` is the ``benchmark`` section of params.yaml. The
functions below read it into what every engine decodes: the utterances a
model is decoded on (:func:`scoped`; :func:`stand_in_languages` for the
languages a student takes from the untrained one), the task
(:func:`task_of`) and the token caps (:func:`caps_of`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from pipeline.data.manifest import Utterance, load_labelled
from pipeline.evaluate.caps import Caps


@dataclass(frozen=True)
class BenchmarkConfig:
    datasets: dict[str, str]  # name -> manifest
    out_dir: Path
    teacher: str  # HF folder of the teacher (tokenizer, features; the transformers float32 run)
    untrained: str  # student spec without training: "<base>" or "<base>@<decoder layers>"
    students: dict[str, str] = field(default_factory=dict)  # mode -> student folder (exact routing)
    ct2_dir: str = "data/ct2"  # quantize output: <model>-<compute type>/
    target_languages: tuple[str, ...] = ()
    faster_whisper: tuple[str, ...] = ()  # CT2 model folders (under ct2_dir) to also run end to end
    # Decode the teacher with transformers too. Off: its CTranslate2 float32 conversion (ct2:teacher)
    # stands for it; with the same token cap both give the same error rate in every language.
    hf_teacher: bool = True
    targets_only: tuple[str, ...] = ()  # models decoded on the target languages only (e.g. student-clsr)
    # The student every other model's target-language rows are compared with, pairwise (rows' "vs"; with the
    # teacher too): its mode name under students, and of its exports under ct2_dir (<mode>-<language>)
    compare_student: str = "distilwhisper"
    # Datasets decoded X->English (task translate) and scored with chrF and BLEU against each utterance's
    # ``translation`` (pipeline/evaluate/translation.py); the others are transcribed and scored by error rate.
    translate: tuple[str, ...] = ()
    # Decode with timestamps (prompt without <|notimestamps|>; the text leaves the timestamp tokens out), as a
    # user asking for segments does; false: the fixed no-timestamp decoding the error rates are compared under
    timestamps: bool = False
    # CTranslate2 models under ct2_dir the benchmark leaves out (fnmatch patterns on their names, e.g.
    # "distilwhisper-ts-*": students the longform stage measures)
    exclude: tuple[str, ...] = ()
    max_new_tokens: int = 128
    # Longer caps (new tokens) the target languages are scored at too, as a user's default decode runs
    # (decode.DEFAULT_CAPS): their rows are group "cap=<N>"; non-target languages stay at max_new_tokens.
    loop_caps: tuple[int, ...] = ()
    # Which engines decode those longer caps: ctranslate2 (the exports users deploy with faster-whisper)
    # and/or transformers (the exact-routing students: on CPU their loops cost minutes per model).
    loop_cap_engines: tuple[str, ...] = ("ctranslate2", "transformers")
    batch_size: int = 16
    bootstrap: int = 1000
    seed: int = 0
    # Where encoder outputs are kept between stages and runs (pipeline/core/encoder_memo.py): the transformers float32
    # ones, and CTranslate2's own per compute type (pipeline/evaluate/shared_encodings.py); None: not kept
    encoder_memo: Path | None = None
    # Finished runs kept between benchmarks, keyed by all that made them (pipeline/core/result_memo.py): an unchanged
    # model is not decoded again. None: kept only until this benchmark's outputs are written (a kill's resume)
    run_memo: Path | None = None
    # The CTranslate2 setting `dw-pipe ct2-tune` measured fastest with identical hypotheses on this machine
    # (pipeline/evaluate/ct2_tuning.py); applied when the record is this machine's. None, or no record: CTranslate2's own.
    ct2_tuning: Path | None = None

    def __post_init__(self) -> None:
        from pipeline.core.config import ConfigError
        from pipeline.models.decode import DECODER_POSITIONS, PROMPT_TOKENS

        missing = sorted(set(self.translate) - set(self.datasets))
        if missing:
            raise ConfigError(f"benchmark.translate {missing}: not among benchmark.datasets {sorted(self.datasets)}")
        unknown = sorted(set(self.loop_cap_engines) - {"ctranslate2", "transformers"})
        if unknown:
            raise ConfigError(f"benchmark.loop_cap_engines {unknown}: use ctranslate2 and/or transformers")
        limit = DECODER_POSITIONS - PROMPT_TOKENS
        wrong = [c for c in self.loop_caps if not self.max_new_tokens < c <= limit]
        if wrong:
            raise ConfigError(
                f"benchmark.loop_caps {wrong}: each cap must exceed max_new_tokens ({self.max_new_tokens}) and be at "
                f"most {limit} (Whisper's {DECODER_POSITIONS} decoder positions minus the {PROMPT_TOKENS}-token prompt)"
            )


def load_datasets(cfg: BenchmarkConfig) -> dict[str, list[Utterance]]:
    from pipeline.core.errors import DwPipeError

    data = {
        name: load_labelled(Path(path), f"benchmark dataset {name} (scored)") for name, path in cfg.datasets.items()
    }
    for name in cfg.translate:
        lacking = [u.id for u in data[name] if not u.translation.strip()]
        if lacking:
            raise DwPipeError(
                f"benchmark.translate: dataset {name} ({cfg.datasets[name]}) has {len(lacking)} utterance(s) without an "
                f"English translation (first: {lacking[0]}); a translate dataset needs one on every utterance"
            )
    return data


def eval_namespace(cfg: BenchmarkConfig) -> SimpleNamespace:
    return SimpleNamespace(eval_batch_size=cfg.batch_size, max_new_tokens=cfg.max_new_tokens)


def scoped(cfg: BenchmarkConfig, model: str, data: dict[str, list[Utterance]]) -> dict[str, list[Utterance]]:
    """The utterances ``model`` is decoded on: all, or the target languages' for models in ``targets_only``."""
    if model not in cfg.targets_only:
        return data
    kept = {name: [u for u in utts if u.language in cfg.target_languages] for name, utts in data.items()}
    return {name: utts for name, utts in kept.items() if utts}


def task_of(cfg: BenchmarkConfig, dataset: str) -> str:
    return "translate" if dataset in cfg.translate else "transcribe"


def _loop_caps(cfg: BenchmarkConfig, engine: str) -> tuple[int, ...]:
    return cfg.loop_caps if engine in cfg.loop_cap_engines else ()


def caps_of(cfg: BenchmarkConfig, engine: str, dataset: str) -> Caps:
    """The caps ``dataset`` is decoded at: translations stop at max_new_tokens (loops are a transcription bar)."""
    if dataset in cfg.translate:
        return Caps(cfg.max_new_tokens, (), ())
    return Caps(cfg.max_new_tokens, _loop_caps(cfg, engine), cfg.target_languages)


def stand_in_languages(cfg: BenchmarkConfig, folder: Path, languages: set[str]) -> frozenset[str]:
    """The languages of ``languages`` on which the student in ``folder`` is, weight for weight, the untrained
    student, so that the untrained student's hypotheses stand for its own.

    That holds for a CLSR student (only experts and gates train; :func:`pipeline.student.model.load_student` builds it
    from its base and adds them) built from the untrained student's base and kept layers, on a language with no
    expert: every CLSR layer then runs its frozen shared FFN (:class:`pipeline.models.clsr.CLSRLayer`), which is the
    base's FFN. Languages that transformers decodes again at longer caps are left out (those are decoded)."""
    from pipeline.student.model import CLSR_MODES

    record = json.loads((folder / "student.json").read_text(encoding="utf-8"))
    base, _, layers = cfg.untrained.partition("@")
    keep = [int(x) for x in layers.split(",")] if layers else None
    if (
        record["mode"] not in CLSR_MODES
        or Path(record["base"]).resolve() != Path(base).resolve()
        or record["keep_encoder_layers"] is not None
        or record["keep_decoder_layers"] != keep
    ):
        return frozenset()
    experts = set(record["languages"]) | {p.name.split(".")[1] for p in folder.glob("expert.*.safetensors")}
    recapped = set(cfg.target_languages) if cfg.loop_caps and "transformers" in cfg.loop_cap_engines else set()
    return frozenset(languages - experts - recapped)
