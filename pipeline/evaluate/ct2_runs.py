"""The benchmark's CTranslate2 runs: every model under ct2_dir from shared log-mel features, and faster-whisper
end to end.

Every CTranslate2 model decodes the same log-mel features (transformers'
``WhisperFeatureExtractor``, computed once, outside the timers) through
``ctranslate2.models.Whisper.generate`` and is timed end to end, its encoder
included; models with the same encoder share its outputs and are charged its
seconds (:class:`pipeline.evaluate.shared_encodings.SharedEncodings`).
faster-whisper's own end-to-end path (its extractor pads differently) runs
beside them on the models in ``faster_whisper``, as the deployment figure;
its lazy segment generator is consumed inside the timer.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import time
from pathlib import Path

import numpy as np

from pipeline.core.fsutil import project_path
from pipeline.data.manifest import Utterance
from pipeline.evaluate.caps import with_caps
from pipeline.evaluate.matrix import BenchmarkConfig, caps_of, scoped, task_of
from pipeline.evaluate.measure import log_run, timed
from pipeline.evaluate.runs import KeptRuns, Key, Run
from pipeline.evaluate.shared_encodings import SharedEncodings, ct2_encoder_memo, transformers_encoder


class LogMel:
    """Log-mel features per utterance, computed once for every model."""

    def __init__(self, extractor) -> None:
        self.extractor = extractor
        self.features: dict[str, np.ndarray] = {}

    def __call__(self, chunk: list[Utterance], root: Path) -> np.ndarray:
        from pipeline.models.forward import features_for

        todo = [u for u in chunk if u.id not in self.features]
        if todo:
            self.features.update(zip((u.id for u in todo), features_for(self.extractor, todo, root).numpy()))
        return np.stack([self.features[u.id] for u in chunk])


def _ct2_models(cfg: BenchmarkConfig) -> list[tuple[tuple[str, str], Path, dict]]:
    """(encoder key, folder, quantize record) of every model under ct2_dir, those with the same encoder together."""
    from pipeline.models.ct2_format import encoder_fingerprint

    folders = []
    for folder in sorted(p for p in Path(cfg.ct2_dir).glob("*") if (p / "quantize.json").is_file()):
        info = json.loads((folder / "quantize.json").read_text())
        folders.append(((encoder_fingerprint(folder), info["effective_compute_type"]), folder, info))
    return sorted(folders, key=lambda f: (f[0], f[1].name))


def ct2_runs(
    cfg: BenchmarkConfig,
    data: dict[str, list[Utterance]],
    extractor,
    tokenizer,
    kept_runs: KeptRuns,
    setting: dict | None = None,
) -> dict[Key, dict[str, Run]]:
    """Every CTranslate2 model under ct2_dir, on its language(s), with the shared features.

    Models whose encoders are identical (same fingerprint and compute type:
    a decoder-only student and its teacher) run one after the other and
    share the encoder outputs; each is charged the encoder's measured time.
    With ``encoder_memo``, CTranslate2's own encoder outputs are kept there too
    (:func:`pipeline.evaluate.shared_encodings.ct2_encoder_memo`), so a later
    run's models with the same encoder do not encode the utterances again.
    ``setting``: the CTranslate2 setting applied (``ct2_tuning.applied``).
    """
    import ctranslate2

    setting = setting or {"env": {}, "threads": 0}
    threads = int(setting["threads"])

    runs: dict[Key, dict[str, Run]] = {}
    features = LogMel(extractor)
    for dataset, utts in data.items():  # outside the timers: CT2 rows time decoding from log-mel features
        for i in range(0, len(utts), cfg.batch_size):
            features(utts[i : i + cfg.batch_size], Path(cfg.datasets[dataset]).parent)
    shared = SharedEncodings()
    for key, folder, info in _ct2_models(cfg):
        float32 = key[1] == "float32" and (Path(info["source"]) / "config.json").is_file()
        memo = project_path(cfg.encoder_memo) if cfg.encoder_memo else None
        shared.use(
            key,
            transformers_encoder(extractor, Path(info["source"]), cfg.encoder_memo) if float32 else None,
            ct2_encoder_memo(memo, key, extractor, setting) if memo else None,
        )
        export = Path(info["source"]) / "export.json"
        language = json.loads(export.read_text())["language"] if export.is_file() else None
        name = folder.name[: -len(info["requested_compute_type"]) - 1]
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in cfg.exclude):
            continue
        run_key = (f"ct2:{name}", info["requested_compute_type"])
        export_record = export.read_text() if export.is_file() else ""
        made_from, kept = kept_runs.lookup(run_key, [folder], scoped(cfg, run_key[0], data), export=export_record)
        if kept:
            runs[run_key] = kept
            continue
        model = ctranslate2.models.Whisper(
            str(folder), device="cpu", compute_type=info["effective_compute_type"], intra_threads=threads
        )
        for dataset, all_utts in scoped(cfg, f"ct2:{name}", data).items():
            utts = [u for u in all_utts if language is None or u.language == language]
            if utts:
                run = _ct2_run(cfg, model, name, info, dataset, utts, tokenizer, features, shared)
                runs.setdefault(run_key, {})[dataset] = run
        kept_runs.save(run_key, made_from, runs.get(run_key, {}))
        del model
    return runs


def _ct2_run(
    cfg: BenchmarkConfig,
    model,
    name: str,
    info: dict,
    dataset: str,
    utts: list[Utterance],
    tokenizer,
    features: LogMel,
    shared: SharedEncodings,
) -> Run:
    """CTranslate2 ``model`` (export ``name``, quantize record ``info``) on ``utts`` of ``dataset``: a warm-up
    utterance, the timed capped decode, then the longer caps from the same encoder outputs."""
    from pipeline.models import decode
    from pipeline.models.forward import prompt_ids

    root = Path(cfg.datasets[dataset]).parent
    caps = caps_of(cfg, "ctranslate2", dataset)
    prompts = {u.id: prompt_ids(tokenizer, u.language, task_of(cfg, dataset), cfg.timestamps) for u in utts}
    warm_up = features(utts[:1], root)
    decode.greedy_ctranslate2(model, warm_up, [prompts[utts[0].id]], cfg.max_new_tokens)
    charged = {"seconds": 0.0, "reused": []}
    batches = [utts[i : i + cfg.batch_size] for i in range(0, len(utts), cfg.batch_size)]

    def work():
        ids = []
        for chunk in batches:
            encoded, seconds, reused = shared.batch(model, chunk, root, lambda c: features(c, root))
            charged["seconds"] += seconds
            charged["reused"] += reused
            ids += decode.greedy_ctranslate2(model, encoded, [prompts[u.id] for u in chunk], cfg.max_new_tokens)
        return ids

    def redecode(chunk):  # the same batch from the same encoder outputs
        encoded = np.stack([shared.outputs[u.id] for u in chunk])
        return decode.greedy_ctranslate2(model, encoded, [prompts[u.id] for u in chunk], max(caps.loop_caps))

    ids, seconds, peak = timed(work)
    ref_type = "float32"
    run = Run(
        f"ct2:{name}",
        info["requested_compute_type"],
        info["effective_compute_type"],
        utts,
        [tokenizer.decode(x, skip_special_tokens=True) for x in ids],
        seconds + charged["seconds"],
        peak,
        info["model_size_mb"],
        reference=None if info["requested_compute_type"] == ref_type else f"ct2:{name}|{ref_type}",
        reused_ids=frozenset(charged["reused"]),
        encoder_source=shared.source,
    )
    start = time.perf_counter()
    run = with_caps(run, ids, caps, tokenizer, redecode, batches)
    log_run(run, dataset, seconds, time.perf_counter() - start)
    return run


def faster_whisper_runs(
    cfg: BenchmarkConfig, data: dict[str, list[Utterance]], kept_runs: KeptRuns, threads: int = 0
) -> dict[Key, dict[str, Run]]:
    """faster-whisper end to end (its own features): what a deployment gets."""
    from faster_whisper import WhisperModel

    logging.getLogger("faster_whisper").setLevel(logging.WARNING)  # one INFO line per utterance otherwise
    runs: dict[Key, dict[str, Run]] = {}
    for name in cfg.faster_whisper:
        folder = Path(cfg.ct2_dir) / name
        info = json.loads((folder / "quantize.json").read_text())
        run_key = (f"faster-whisper:{name}", info["requested_compute_type"])
        made_from, kept = kept_runs.lookup(run_key, [folder], scoped(cfg, run_key[0], data))
        if kept:
            runs[run_key] = kept
            continue
        model = WhisperModel(
            str(folder), device="cpu", compute_type=info["effective_compute_type"], cpu_threads=threads
        )
        for dataset, utts in scoped(cfg, f"faster-whisper:{name}", data).items():
            runs.setdefault(run_key, {})[dataset] = _faster_whisper_run(cfg, model, name, info, dataset, utts)
        kept_runs.save(run_key, made_from, runs.get(run_key, {}))
        del model
    return runs


def _faster_whisper_run(cfg: BenchmarkConfig, model, name: str, info: dict, dataset: str, utts: list[Utterance]) -> Run:
    """faster-whisper ``model`` (export ``name``) on ``utts`` of ``dataset``, from the audio, after a warm-up."""
    from pipeline.data.audio import read_wav
    from pipeline.models.decode import faster_whisper_transcribe

    root = Path(cfg.datasets[dataset]).parent
    audio = {u.id: read_wav(root / u.audio) for u in utts}
    task = task_of(cfg, dataset)

    def work(utts=utts):
        return [
            faster_whisper_transcribe(model, audio[u.id], u.language, cfg.max_new_tokens, task, cfg.timestamps)
            for u in utts
        ]

    work(utts[:1])
    hyps, seconds, peak = timed(work)
    return Run(
        f"faster-whisper:{name}",
        info["requested_compute_type"],
        info["effective_compute_type"],
        utts,
        hyps,
        seconds,
        peak,
        info["model_size_mb"],
        max_new_tokens=cfg.max_new_tokens,  # which utterances hit it is not known: faster-whisper gives text
    )
