"""Tables of results in README.md and docs/, rendered from committed result files (``dw-pipe docs``).

A Markdown file marks each rendered table with two comment lines::

    <!-- table: NAME -->
    | ... rendered, never edited by hand ... |
    <!-- /table -->

``NAME`` is a key of a table registry (:mod:`pipeline.report.doc_tables`):
the result file the table is made from, a function that renders its lines
from that file's JSON, and the data the table *claims* to describe
(``claims``: corpus, cache format, ...). Every result file carries a
``provenance`` object: the ``command`` that made it, the ``code`` revision,
and ``data``, the identity of what it measured. A table whose result file is
missing, has no provenance, or was made from other data than it claims is an
error, never a silently kept table. A claim of :data:`CURRENT` means "what
today's params.yaml, code and dvc.lock stand for" (:func:`current_identity`):
the default run's tables claim its corpus, cache format, whole params.yaml and
the benchmark outputs the committed dvc.lock records, so a changed setting, or
a re-run after a code change, makes rendering fail until the run is recorded
again.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import yaml

from pipeline.cache.format import FORMAT_VERSION
from pipeline.core.config import read_params
from pipeline.core.errors import DwPipeError

START = re.compile(r"^<!-- table: (?P<name>[\w.-]+) -->$")
END = "<!-- /table -->"
CURRENT = "<current>"  # a claim that resolves to today's identity (current_identity)


class DocsError(DwPipeError):
    """A rendered table cannot be made or is out of date."""


@dataclass(frozen=True)
class DocTable:
    result: str  # result file, relative to the repository root
    render: Callable[[dict], list[str]]  # the table's lines from the result file's JSON
    # provenance.data entries it stands for: a value, CURRENT, or a function of the repository root
    claims: Mapping[str, object] = field(default_factory=dict)


def corpus_id(prepare_data: Mapping) -> str:
    """What determines the prepared corpus: a digest of params.yaml's prepare_data section."""
    canonical = json.dumps(prepare_data, sort_keys=True, ensure_ascii=False, default=str)
    return "params:" + hashlib.sha256(canonical.encode()).hexdigest()[:12]


def params_id(params: Mapping) -> str:
    """Every setting of a run: a digest of the whole params.yaml (a changed lr makes the run's tables stale)."""
    return corpus_id(params)


# The run outputs the default run's tables are made of, by the short name a result file records them under.
RUN_OUTPUTS = {"bench": "data/bench/metrics.json", "longform": "data/longform/metrics.json"}


def locked_outputs(lock: Path) -> dict[str, str | None]:
    """The md5 (first 12 hex digits) that ``lock`` (a dvc.lock) records for each of :data:`RUN_OUTPUTS`: the
    committed dvc.lock ties them to the code and inputs that made them, so a re-run with other code or data moves
    them and the tables made from the old outputs go stale."""
    stages = (yaml.safe_load(lock.read_text(encoding="utf-8")) or {}).get("stages", {}) if lock.is_file() else {}
    md5 = {o["path"]: o.get("md5") for s in stages.values() for o in s.get("outs", [])}
    return {name: (md5.get(path) or "")[:12] or None for name, path in RUN_OUTPUTS.items()}


def current_identity(root: Path) -> dict[str, object]:
    """What today's params.yaml, code and dvc.lock stand for: the values a :data:`CURRENT` claim resolves to.

    ``corpus``: the prepare_data section; ``cache_format``: the code's cache format; ``params``: the whole
    params.yaml; ``outputs``: the run outputs the committed dvc.lock records."""
    params = read_params(root / "params.yaml")
    return {
        "corpus": corpus_id(params["prepare_data"]),
        "cache_format": FORMAT_VERSION,
        "params": params_id(params),
        "outputs": locked_outputs(root / "dvc.lock"),
    }


def read_overrides(path: Path) -> list[str]:
    """The Hydra overrides an experiment's file lists (``dvc exp run -S``, one a line; ``#`` lines are comments)."""
    if not path.is_file():
        raise DocsError(f"overrides file {path} is missing")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def overridden_params(params_path: Path, overrides_path: Path) -> dict:
    """``params_path`` with the overrides file's changes, as ``dvc exp run -S`` applies them (DVC's own function,
    on a copy)."""
    import shutil
    import tempfile

    from dvc.utils.hydra import apply_overrides

    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "params.yaml"
        shutil.copyfile(params_path, copy)
        try:
            apply_overrides(copy, read_overrides(overrides_path))
        except Exception as exc:  # noqa: BLE001 - DVC's InvalidArgumentError and Hydra's own, one line either way
            raise DocsError(f"{overrides_path} does not apply to {params_path}: {exc}") from None
        return read_params(copy)


def experiment_params(overrides: str) -> Callable[[Path], str]:
    """A claim (:class:`DocTable`): the whole of today's params.yaml with the changes ``overrides`` (a file, relative
    to the repository root) lists, the settings of a documented experiment (``scripts/run_experiment.sh``). A
    changed params.yaml or overrides file makes its tables stale."""

    def resolve(root: Path) -> str:
        return params_id(overridden_params(root / "params.yaml", root / overrides))

    return resolve


def code_revision(root: Path) -> str:
    """``git describe``-like: the commit, with ``+dirty`` when tracked files differ from it."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False).stdout.strip()

    rev = git("rev-parse", "--short=12", "HEAD") or "unknown"
    return rev + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def provenance(root: Path, command: str, data: Mapping[str, object]) -> dict:
    """The ``provenance`` object a result file carries (write it beside the numbers)."""
    return {
        "command": command,
        "code": code_revision(root),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "data": dict(data),
    }


def bench_record(
    root: Path, command: str, data: Mapping[str, object], load_before, load_after, torch_threads: int
) -> dict:
    """The head of a bench program's result file: its provenance (``data`` and this machine's one line), the
    machine, torch's thread count and the load averages around the measured part."""
    from pipeline.core.machine import machine

    here = machine()
    data = {**data, "machine": f"{here['cpu']} ({here['cpu_id']}), {here['cores']} cores"}
    return {
        "provenance": provenance(root, command, data),
        "machine": here,
        "torch_threads": torch_threads,
        "load_average": {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in load_after]},
    }


def load_result(root: Path, name: str, table: DocTable, current: Mapping[str, object]) -> dict:
    """The table's result file, checked against what the table claims."""
    path = root / table.result
    if not path.is_file():
        raise DocsError(f"table {name}: result file {table.result} is missing; rerun the command that makes it")
    result = json.loads(path.read_text(encoding="utf-8"))
    made = result.get("provenance")
    if not isinstance(made, dict) or not made.get("command") or not isinstance(made.get("data"), dict):
        raise DocsError(f"table {name}: {table.result} has no provenance (command, code, data); remeasure it")
    for key, claimed in table.claims.items():
        want = current.get(key) if claimed == CURRENT else claimed(root) if callable(claimed) else claimed
        if made["data"].get(key) != want:
            raise DocsError(
                f"table {name}: {table.result} was made from {key} {made['data'].get(key)!r}, the table claims "
                f"{want!r}{' (today’s)' if claimed == CURRENT else ''}; rerun `{made['command']}` or fix the claim"
            )
    return result


def render_text(text: str, tables: Mapping[str, DocTable], root: Path, where: str, current: Mapping) -> str:
    """``text`` with every marked table rendered anew."""
    lines, out, i = text.split("\n"), [], 0
    while i < len(lines):
        out.append(lines[i])
        mark = START.match(lines[i])
        i += 1
        if not mark:
            continue
        name = mark["name"]
        if name not in tables:
            raise DocsError(f"{where}: unknown table {name!r}; known: {', '.join(sorted(tables))}")
        end = next((j for j in range(i, len(lines)) if lines[j] == END), None)
        if end is None:
            raise DocsError(f"{where}: table {name} has no closing {END}")
        table = tables[name]
        out += table.render(load_result(root, name, table, current)) + [END]
        i = end + 1
    return "\n".join(out)


def doc_files(root: Path) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def render_docs(root: Path, tables: Mapping[str, DocTable], check: bool = False) -> list[Path]:
    """Render every marked table of README.md and docs/; returns the files that changed (``check``: that would).

    Files are written whole to a temporary name and renamed into place."""
    current = current_identity(root)
    changed = []
    for path in doc_files(root):
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8")
        new = render_text(text, tables, root, str(path.relative_to(root)), current)
        if new != text:
            changed.append(path)
            if not check:
                tmp = path.with_name(path.name + ".tmp")
                tmp.write_text(new, encoding="utf-8")
                tmp.replace(path)
    return changed


def markdown_table(header: list[str], rows: list[list[object]], align: str = "") -> list[str]:
    """A Markdown table; ``align`` gives one of l/r per column (default: first left, rest right)."""
    align = align or "l" + "r" * (len(header) - 1)
    rule = ["---:" if a == "r" else "---" for a in align]
    return ["| " + " | ".join(str(c) for c in r) + " |" for r in [header, rule, *rows]]
