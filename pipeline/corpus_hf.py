"""Hugging Face ``datasets`` sources: Common Voice and FLEURS column layouts.

A dataset is named by hub id (``mozilla-foundation/common_voice_13_0``,
``google/fleurs``) or given as a local ``save_to_disk`` folder. Audio is
read undecoded (bytes or path) and decoded with PyAV, so no extra decoder
package is needed; it is resampled to 16 kHz by the caller's worker.

Layouts recognised (first column found wins):

| field    | Common Voice          | FLEURS                              |
|----------|-----------------------|-------------------------------------|
| text     | ``sentence``          | ``transcription`` / ``raw_transcription`` |
| language | ``locale``            | ``language`` (English name) / config name |
| speaker  | ``client_id``         | ``speaker_id``                      |
| gender   | ``gender`` (string)   | ``gender`` (ClassLabel)             |
| id       | ``path`` file name    | ``id``                              |
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

from pipeline.errors import DwPipeError

log = logging.getLogger(__name__)

TEXT_COLUMNS = ("sentence", "transcription", "raw_transcription", "text")
SPEAKER_COLUMNS = ("client_id", "speaker_id", "speaker")
ID_COLUMNS = ("id", "path")


def _load(name_or_dir: str, config_name: str | None, split: str):
    import datasets

    folder = Path(name_or_dir)
    if folder.is_dir():
        loaded = datasets.load_from_disk(str(folder))
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise DwPipeError(f"{folder}: no split {split!r} (has {', '.join(loaded)})")
            return loaded[split]
        return loaded
    return datasets.load_dataset(name_or_dir, config_name, split=split)


def _language_code(row: dict, features, forced: str | None, config_name: str | None, names: dict[str, str]) -> object:
    if forced:
        return forced
    if row.get("locale"):
        return str(row["locale"]).split("-")[0].lower()
    language = row.get("language")
    if isinstance(language, str) and language:
        return names.get(language.strip().lower(), language.strip().lower())
    if config_name:
        return config_name.split("_")[0].lower()
    return None


def _gender(row: dict, features) -> object:
    value = row.get("gender")
    feature = features.get("gender") if features is not None else None
    if isinstance(value, int) and feature is not None and hasattr(feature, "int2str"):
        return feature.int2str(value)
    return value


def hf_candidates(name_or_dir: str, cfg, languages: frozenset[str]) -> Iterator:
    """Candidates from each configured split of a Hugging Face dataset."""
    import datasets
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    from pipeline.prepare import Candidate

    names = {name: code for code, name in LANGUAGES.items()}
    for our_split, their_split in cfg.splits.items():
        ds = _load(name_or_dir, cfg.name, their_split)
        if "audio" not in ds.column_names:
            raise DwPipeError(f"{name_or_dir} [{their_split}]: no 'audio' column (columns: {ds.column_names})")
        text_col = next((c for c in TEXT_COLUMNS if c in ds.column_names), None)
        if text_col is None:
            raise DwPipeError(f"{name_or_dir} [{their_split}]: no transcript column among {TEXT_COLUMNS}")
        ds = ds.cast_column("audio", datasets.Audio(decode=False))
        if cfg.max_per_split:
            ds = ds.select(range(min(cfg.max_per_split, len(ds))))
        speaker_col = next((c for c in SPEAKER_COLUMNS if c in ds.column_names), None)
        id_col = next((c for c in ID_COLUMNS if c in ds.column_names), None)
        source = f"hf:{Path(name_or_dir).name if Path(name_or_dir).is_dir() else name_or_dir}:{their_split}"
        for index, row in enumerate(ds):
            raw_id = Path(str(row[id_col])).stem if id_col and row.get(id_col) not in (None, "") else str(index)
            audio = row["audio"] or {}
            ref = audio.get("bytes") or (Path(audio["path"]) if audio.get("path") else None)
            prefix = f"{cfg.name}-" if cfg.name else ""
            record = {
                "id": f"{prefix}{our_split}-{raw_id}",
                "text": row.get(text_col),
                "language": _language_code(row, ds.features, cfg.language, cfg.name, names),
                "split": our_split,
                "speaker": str(row.get(speaker_col) or "") if speaker_col else "",
                "gender": _gender(row, ds.features),
                "source": source,
            }
            if ref is None:
                record["_problem"] = "unreadable audio: row has neither bytes nor a path"
            yield Candidate(source, record, ref, line=index)
