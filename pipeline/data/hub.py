"""Hugging Face ``datasets`` sources: Common Voice and FLEURS column layouts.

A dataset is named by hub id (``google/fleurs``) or given as a local folder.
A hub id is read from the hub's Parquet export of the dataset (branch
``refs/convert/parquet``), not through its loading script: ``datasets`` 4
dropped loading scripts, and Common Voice and FLEURS are script datasets.
A local folder is either a ``save_to_disk`` folder or a copy of that export
(``hf download REPO --repo-type dataset --revision refs/convert/parquet
--local-dir DIR``). The export holds one folder per config, with a
split's files in one of two layouts, read in file-name order:

* ``<config>/<split>/0000.parquet``, ``0001.parquet``, ... (current);
* ``<config>/<dataset>-<split>.parquet`` or
  ``<config>/<dataset>-<split>-00000-of-00002.parquet``, ... (older; the
  layout of ``google/fleurs``' export).

A split too big to convert whole is exported as ``<config>/partial-<split>/``,
its first rows only; it is refused, as row selection and the test sets need
the whole split. Audio is read undecoded (bytes or path; the export stores
the ``{bytes, path}`` struct) and decoded with PyAV, so no extra decoder
package is needed; it is resampled to 16 kHz by the caller's worker.

Layouts recognised (first column found wins):

| field    | Common Voice          | FLEURS                              |
|----------|-----------------------|-------------------------------------|
| text     | ``sentence``          | ``transcription`` / ``raw_transcription`` |
| language | ``locale``            | ``language`` (English name) / config name |
| speaker  | ``client_id``         | ``speaker_id``                      |
| gender   | ``gender`` (string)   | ``gender`` (ClassLabel)             |
| id       | ``path`` file name    | ``path`` file name, else ``id``     |

The id is the recording's own name: FLEURS' ``id`` numbers the sentence,
which several speakers read, so ``path`` comes first.

A split's rows can be selected (``HFSourceConfig.select``): by a list of
row positions or by the first ``n`` after a stable sort on columns (the
DistilWhisper Common Voice subsets, ``profiles/cv13_subsets/``). Selected
rows keep the dataset's order; the others are counted in the summary's
``selection``, not rejected.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from pipeline.core.errors import DwPipeError
from pipeline.data.manifest import UNLABELLED, Candidate, Candidates

log = logging.getLogger(__name__)

TEXT_COLUMNS = ("sentence", "transcription", "raw_transcription", "text")
SPEAKER_COLUMNS = ("client_id", "speaker_id", "speaker")
ID_COLUMNS = ("path", "id")


EXPORT_BRANCH = "refs/convert/parquet"  # the branch of the hub's Parquet export of a dataset


def export_split_files(names: list[str], config: str, split: str, where: str) -> list[str]:
    """Of the files of an export (paths relative to its root), one split's Parquet files in row order."""
    c, s = re.escape(config), re.escape(split)
    if any(re.fullmatch(rf"{c}/partial-{s}/[^/]+\.parquet", name) for name in names):
        raise DwPipeError(
            f"{where}: the Parquet export holds only the first rows of this split ({config}/partial-{split}/): "
            "give a local copy of the whole split (a save_to_disk folder) as input"
        )
    layouts = rf"{c}/{s}/[^/]+\.parquet|{c}/[^/]+-{s}(-\d+-of-\d+)?\.parquet"
    files = sorted(name for name in names if re.fullmatch(layouts, name))
    if not files:
        found = sorted({name[len(config) + 1 :].split("/")[0] for name in names if name.startswith(f"{config}/")})
        raise DwPipeError(
            f"{where}: no Parquet files of split {split!r} under {config}/ in the export "
            f"(found: {', '.join(found) or 'nothing'}); check the config name and the split mapping"
        )
    return files


def _is_saved_dataset(folder: Path) -> bool:
    return (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()


def _hub_export_files(repo: str, config: str, split: str, where: str) -> list[str]:
    from huggingface_hub import HfApi

    try:
        names = HfApi().list_repo_files(repo, repo_type="dataset", revision=EXPORT_BRANCH)
    except Exception as exc:  # not found, gated (OSError subclasses), no network (the HTTP library's own errors)
        detail = str(exc).splitlines()[0] if str(exc) else "no detail"
        raise DwPipeError(
            f"{where}: cannot list the hub's Parquet export of {repo} (branch {EXPORT_BRANCH}; "
            f"{type(exc).__name__}: {detail}); log in and accept the dataset's terms, or give a local copy "
            "(save_to_disk folder or export folder) as input"
        ) from exc
    quoted = EXPORT_BRANCH.replace("/", "%2F")  # hf:// paths take a refs/ revision quoted
    return [f"hf://datasets/{repo}@{quoted}/{name}" for name in export_split_files(names, config, split, where)]


def _load(name_or_dir: str, config_name: str | None, split: str, where: str) -> Callable[[], object]:
    """A loader of the split: each call opens it again (a fresh memory map), from the files found here once."""
    import datasets

    folder = Path(name_or_dir)
    if folder.is_dir() and _is_saved_dataset(folder):

        def saved():
            loaded = datasets.load_from_disk(str(folder))
            if isinstance(loaded, datasets.DatasetDict):
                if split not in loaded:
                    raise DwPipeError(f"{folder}: no split {split!r} (has {', '.join(loaded)})")
                return loaded[split]
            return loaded

        return saved
    config = config_name or "default"
    if folder.is_dir():
        names = [p.relative_to(folder).as_posix() for p in folder.rglob("*.parquet")]
        files = [str(folder / name) for name in export_split_files(names, config, split, where)]
    elif re.fullmatch(r"[\w-][\w.-]*/[\w.-]+", name_or_dir):
        files = _hub_export_files(name_or_dir, config, split, where)
    else:
        raise DwPipeError(f"{where}: not a folder and not a hub dataset id (owner/name): check the input path")
    return lambda: datasets.load_dataset("parquet", data_files={"rows": files}, split="rows")


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


def load_rows(path: Path, config_name: str | None, split: str) -> list[int]:
    """Row positions listed for ``config_name``/``split`` in a ``{config: {split: [row, ...]}}`` file."""
    if not path.is_file():
        raise DwPipeError(f"select rows file {path} not found (paths are relative to the working directory)")
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DwPipeError(f"{path}: not a JSON file: {exc}") from exc
    if not isinstance(table, dict) or config_name not in table:
        known = ", ".join(sorted(table)) if isinstance(table, dict) else "none"
        raise DwPipeError(f"{path}: no list for dataset config {config_name!r} (has {known})")
    rows = table[config_name].get(split) if isinstance(table[config_name], dict) else None
    if rows is None:
        raise DwPipeError(f"{path}: no {split!r} list for {config_name!r} (has {', '.join(table[config_name])})")
    if not isinstance(rows, list) or not all(type(r) is int and r >= 0 for r in rows):
        raise DwPipeError(f"{path} [{config_name}/{split}]: expected a list of row positions (integers >= 0)")
    if len(set(rows)) != len(rows):
        raise DwPipeError(f"{path} [{config_name}/{split}]: a row is listed twice")
    return rows


def top_rows(columns: dict[str, np.ndarray], top_by: tuple[str, ...], n: int) -> list[int]:
    """Positions of the ``n`` first rows sorted by ``top_by`` (``-col``: descending), ties by position."""
    keys = []
    for spec in reversed(top_by):  # np.lexsort sorts by its last key first
        values = columns[spec.lstrip("-")].astype(np.float64)
        keys.append(-values if spec.startswith("-") else values)
    order = np.lexsort(keys)  # a stable sort: rows with equal keys keep their order
    return sorted(order[:n].tolist())


def _sort_columns(ds, top_by: tuple[str, ...], where: str) -> dict[str, np.ndarray]:
    names = [spec.lstrip("-") for spec in top_by]
    missing = [c for c in names if c not in ds.column_names]
    if missing:
        raise DwPipeError(f"{where}: select top_by names {missing}, not columns of the split ({ds.column_names})")
    columns = ds.select_columns(names).with_format("numpy")[:]
    for name in names:
        if not np.issubdtype(columns[name].dtype, np.number):
            raise DwPipeError(f"{where}: select top_by column {name!r} is not numeric ({columns[name].dtype})")
    return columns


def select_rows(ds, sel, config_name: str | None, split: str, where: str) -> tuple[list[int], dict]:
    """The selected row positions (dataset order) of one split, and how they were chosen."""
    sel.check(where)
    if sel.rows is None:
        chosen = top_rows(_sort_columns(ds, sel.top_by, where), sel.top_by, sel.n)
        return chosen, {"by": f"first {sel.n} by {', '.join(sel.top_by)}; ties in row order"}
    listed = load_rows(sel.rows, config_name, split)
    past = [r for r in listed if r >= len(ds)]
    if past:
        raise DwPipeError(
            f"{where}: {len(past)} rows listed in {sel.rows} [{config_name}/{split}] are not in the split "
            f"({len(ds)} rows; e.g. row {past[0]}): this copy of the dataset is not the one the list was made "
            "from; select by top_by and n instead"
        )
    info = {"by": f"rows listed in {sel.rows} [{config_name}/{split}]"}
    info["rows_sha256"] = hashlib.sha256(sel.rows.read_bytes()).hexdigest()
    if sel.top_by:
        expected = top_rows(_sort_columns(ds, sel.top_by, where), sel.top_by, len(listed))
        differ = sorted(set(listed) ^ set(expected))
        if differ:
            raise DwPipeError(
                f"{where}: the rows listed in {sel.rows} [{config_name}/{split}] are not the first {len(listed)} "
                f"by {', '.join(sel.top_by)} in this copy ({len(differ)} rows differ, e.g. row {differ[0]}): its "
                "row order differs from the one the list was made from; select by top_by and n instead"
            )
        info["by"] += f", checked: the first {len(listed)} by {', '.join(sel.top_by)}"
    return sorted(listed), info


def hf_candidates(name_or_dir: str, cfg, languages: frozenset[str]) -> tuple[Candidates, dict]:
    """Candidates from each configured split of a Hugging Face dataset, and each split's selection.

    The splits are opened and their rows selected here; the rows themselves are read on each pass over the
    returned :class:`Candidates` (its ``records()`` pass leaves the audio column unread)."""
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    names = {name: code for code, name in LANGUAGES.items()}
    unknown = sorted(set(cfg.select) - set(cfg.splits))
    if unknown:
        raise DwPipeError(f"{name_or_dir}: select names splits {unknown} that splits does not map ({cfg.splits})")
    opened, selection = [], {}
    for our_split, their_split in cfg.splits.items():
        where = f"{name_or_dir} [{cfg.name + '/' if cfg.name else ''}{their_split}]"
        load = _load(name_or_dir, cfg.name, their_split, where)
        ds = load()
        if "audio" not in ds.column_names:
            raise DwPipeError(f"{where}: no 'audio' column (columns: {ds.column_names})")
        text_col = next((c for c in TEXT_COLUMNS if c in ds.column_names), None)
        if text_col is None and our_split != UNLABELLED:  # untranscribed speech feeds the unlabelled split alone
            raise DwPipeError(
                f"{where}: no transcript column among {TEXT_COLUMNS}; map a dataset without transcripts to our "
                f"{UNLABELLED} split"
            )
        if our_split in cfg.select:
            chosen, info = select_rows(ds, cfg.select[our_split], cfg.name, their_split, where)
        else:
            chosen, info = list(range(len(ds))), {"by": "all rows"}
        if cfg.max_per_split and len(chosen) > cfg.max_per_split:
            chosen, info["by"] = chosen[: cfg.max_per_split], info["by"] + f", first {cfg.max_per_split} kept"
        selection[where] = {"split": our_split, "rows": len(ds), "selected": len(chosen)} | info
        selection[where]["not_selected"] = len(ds) - len(chosen)
        ds = _chosen(ds, chosen)
        reopen = functools.partial(_reopen, load, chosen)
        opened.append((our_split, their_split, ds, chosen, text_col, reopen))

    def read(records_only: bool) -> Iterator[Candidate]:
        for our_split, their_split, ds, chosen, text_col, reopen in opened:
            rows = ds.remove_columns(["audio"]) if records_only else _audio_rows(reopen, len(chosen))
            yield from _split_rows(
                name_or_dir, cfg, names, our_split, their_split, ds, rows, chosen, text_col, records_only
            )

    return Candidates(read), selection


def _chosen(ds, chosen: list[int]):
    """``ds`` with its audio left undecoded (bytes or a path), narrowed to the ``chosen`` rows."""
    import datasets

    ds = ds.cast_column("audio", datasets.Audio(decode=False))
    return ds.select(chosen) if len(chosen) < len(ds) else ds


def _reopen(load: Callable[[], object], chosen: list[int]):
    return _chosen(load(), chosen)


# Rows of a split whose audio is read through one memory map of its Arrow files. The pages a map touched count in
# the process's RSS until it is unmapped, so one map for the whole pass grew the RSS by the corpus's audio (2.7 GB
# at 100k short utterances, bench/scale.py); a fresh map a block, dropped after it, holds one block's pages.
AUDIO_BLOCK = 2048


def _audio_rows(reopen: Callable[[], object], n: int) -> Iterator[dict]:
    for start in range(0, n, AUDIO_BLOCK):
        block = reopen().select(range(start, min(n, start + AUDIO_BLOCK)))
        yield from block
        del block


def _split_rows(
    name_or_dir: str, cfg, names: dict[str, str], our_split, their_split, ds, rows, chosen, text_col, records_only
) -> Iterator[Candidate]:
    """The candidates of one split: ``rows``, ``ds``'s chosen rows (without their audio when ``records_only``)."""
    speaker_col = next((c for c in SPEAKER_COLUMNS if c in ds.column_names), None)
    id_col = next((c for c in ID_COLUMNS if c in ds.column_names), None)
    source = f"hf:{Path(name_or_dir).name if Path(name_or_dir).is_dir() else name_or_dir}:{their_split}"
    features = ds.features
    for position, row in zip(chosen, rows, strict=True):
        raw_id = Path(str(row[id_col])).stem if id_col and row.get(id_col) not in (None, "") else str(position)
        prefix = f"{cfg.name}-" if cfg.name else ""
        record = {
            "id": f"{prefix}{our_split}-{raw_id}",
            "text": row.get(text_col) if text_col else None,
            "language": _language_code(row, features, cfg.language, cfg.name, names),
            "split": our_split,
            "speaker": str(row.get(speaker_col) or "") if speaker_col else "",
            "gender": _gender(row, features),
            "source": source,
        }
        ref = None
        if not records_only:
            audio = row["audio"] or {}
            ref = audio.get("bytes") or (Path(audio["path"]) if audio.get("path") else None)
            if ref is None:
                record["_problem"] = "unreadable audio: row has neither bytes nor a path"
        yield Candidate(source, record, ref, line=position)
