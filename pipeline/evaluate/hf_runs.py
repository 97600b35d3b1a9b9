"""The benchmark's transformers runs: the teacher timed end to end, the untrained student and the PyTorch students.

Each decodes through ``generate`` from the same log-mel features, the
students with exact token routing. The teacher is timed end to end; the
students decode from encoder outputs computed outside the timer and so
report no RTFx. Those outputs are shared only among models whose encoder
weights are identical (the untrained student and decoder-only students;
:class:`pipeline.models.decode.EncoderStore`); a student with encoder experts
gets its own, routed to each utterance's language, as exact routing decodes
it. A CLSR student takes the untrained student's hypotheses on the languages
where it is that model weight for weight
(:func:`pipeline.evaluate.matrix.stand_in_languages`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from pipeline.data.manifest import Utterance
from pipeline.evaluate.caps import with_caps
from pipeline.evaluate.matrix import BenchmarkConfig, caps_of, eval_namespace, scoped, stand_in_languages, task_of
from pipeline.evaluate.measure import log_run, timed
from pipeline.evaluate.runs import KeptRuns, Key, Run, with_copies

UNTRAINED: Key = ("student-untrained", "float32")


def _hf_models(cfg: BenchmarkConfig) -> list[tuple[str, Callable, Path, str]]:
    """(name, how to build it, the folder it is made from, its spec beyond that folder) of every transformers model:
    the teacher (unless ``hf_teacher`` is off), the untrained student, the trained students."""
    from transformers import WhisperForConditionalGeneration

    from pipeline.student.model import StudentSpec, build_student, load_student

    teacher_dir = Path(cfg.teacher)
    base, _, layers = cfg.untrained.partition("@")
    keep = tuple(int(x) for x in layers.split(",")) if layers else None
    models: list[tuple[str, Callable, Path, str]] = [
        ("teacher", lambda: WhisperForConditionalGeneration.from_pretrained(teacher_dir).eval(), teacher_dir, "")
    ][: int(cfg.hf_teacher)]
    models.append(("student-untrained", lambda: build_student(StudentSpec(Path(base), None, keep)), Path(base), layers))
    models += [
        (f"student-{mode}", (lambda folder=folder: load_student(Path(folder))[0]), Path(folder), "")
        for mode, folder in cfg.students.items()
    ]
    return models


def hf_runs(
    cfg: BenchmarkConfig, data: dict[str, list[Utterance]], extractor, tokenizer, kept_runs: KeptRuns
) -> dict[Key, dict[str, Run]]:
    """transformers teacher (timed end to end), untrained student, and the PyTorch students (exact routing)."""
    from pipeline.core.encoder_memo import encoder_identity

    runs: dict[Key, dict[str, Run]] = {}
    for name, make, source, spec in _hf_models(cfg):
        # a student copies the untrained student's hypotheses where it is that model (stand_in_languages)
        trained = name.startswith("student-") and name != UNTRAINED[0]
        copies = {"untrained": kept_runs.fingerprint_of(UNTRAINED)} if trained else {}
        folders = [source, *_student_base(source)]  # a student is its folder over its base's frozen weights
        made_from, kept = kept_runs.lookup((name, "float32"), folders, scoped(cfg, name, data), spec=spec, **copies)
        if kept:
            runs[(name, "float32")] = kept
            continue
        model = make()
        key = (encoder_identity(model),)  # models with the same encoder weights share its stored outputs
        languages = {u.language for utts in data.values() for u in utts}
        student = name != "student-untrained" and (source / "student.json").is_file()
        stand_in = stand_in_languages(cfg, source, languages) if student else frozenset()
        for dataset, all_utts in scoped(cfg, name, data).items():
            untrained = runs.get(UNTRAINED, {}).get(dataset) if stand_in else None
            utts = [u for u in all_utts if u.language not in stand_in] if untrained else all_utts
            run = _hf_run(cfg, model, name, key, dataset, utts, extractor, tokenizer)
            runs.setdefault((name, "float32"), {})[dataset] = with_copies(run, all_utts, untrained, "|".join(UNTRAINED))
        kept_runs.save((name, "float32"), made_from, runs.get((name, "float32"), {}))
        del model
    return runs


def _student_base(folder: Path) -> list[Path]:
    """The base checkpoint a trained student's folder is built over (none for the teacher and the untrained one)."""
    record = folder / "student.json"
    return [Path(json.loads(record.read_text(encoding="utf-8"))["base"])] if record.is_file() else []


def _hf_run(
    cfg: BenchmarkConfig, model, name: str, key: tuple, dataset: str, utts: list[Utterance], extractor, tokenizer
) -> Run:
    """transformers ``model`` on ``utts`` of ``dataset``: the timed capped decode, then the longer caps from the same
    encoder outputs. ``key`` names its encoder's stored outputs."""
    import torch

    from pipeline.models import decode
    from pipeline.models.clsr import set_language
    from pipeline.models.decode import EncoderStore

    ns = eval_namespace(cfg)
    root = Path(cfg.datasets[dataset]).parent
    caps, task = caps_of(cfg, "transformers", dataset), task_of(cfg, dataset)
    # The teacher is timed end to end (encoder included); students whose encoder is the teacher's
    # reuse the encoder outputs it leaves in the shared store.
    # The timed teacher encodes for itself: no outputs from the memo.
    end_to_end = name == "teacher"
    memo = None if end_to_end else cfg.encoder_memo
    store = EncoderStore(model, extractor, root, True, torch.device("cpu"), key=key, dtype=torch.float32, disk=memo)
    if end_to_end:
        store.fill(utts[:1])
        decode.greedy_token_ids(model, utts[:1], store, tokenizer, ns, task, cfg.timestamps)  # warm-up
        store.memo.pop(utts[0].id)
    else:
        store.fill(utts)

    def work():
        store.fill(utts)
        return decode.greedy_token_ids(model, utts, store, tokenizer, ns, task, cfg.timestamps)[0]

    def redecode(chunk):
        set_language(model, chunk[0].language)
        return decode.generate_batch(model, chunk, store, tokenizer, max(caps.loop_caps), timestamps=cfg.timestamps)

    ids, seconds, peak = timed(work)
    size = sum(p.numel() * p.element_size() for p in model.parameters()) / 1e6
    run = Run(
        name,
        "float32",
        "float32",
        utts,
        [tokenizer.decode(x, skip_special_tokens=True) for x in ids],
        seconds if end_to_end else None,
        peak,
        round(size, 1),
        reference=None if name == "student-untrained" else "student-untrained|float32",
    )
    batches = decode.decode_batches(utts, cfg.batch_size)
    start = time.perf_counter()
    run = with_caps(run, ids, caps, tokenizer, redecode, batches)
    log_run(run, dataset, seconds, time.perf_counter() - start)
    return run
