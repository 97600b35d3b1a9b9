"""``dw-pipe assist``: the teacher decodes a test set greedily, plain and with a student drafting for it
(speculative decoding), side by side; same ids or not, and the speed ratio."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import app, user_errors
from pipeline.core.config import DEFAULT_PARAMS
from pipeline.core.errors import DwPipeError


@app.command("assist")
@user_errors
def assist_cmd(
    teacher: Annotated[
        Path, typer.Argument(help="The teacher: a Hugging Face Whisper folder (data/models/whisper-base).")
    ],
    student: Annotated[
        Path,
        typer.Argument(
            help="The assistant: a per-language export with the teacher's tokenizer (data/exports/distilwhisper-ca)."
        ),
    ],
    language: Annotated[str, typer.Option(help="The language decoded: the manifest's rows in it, and the prompt.")],
    manifest: Annotated[Path, typer.Option(help="Test manifest (audio paths relative to it).")] = Path(
        "data/prepared/test.jsonl"
    ),
    limit: Annotated[
        int | None, typer.Option(min=1, help="Decode at most this many utterances (first in the manifest).")
    ] = None,
    max_new_tokens: Annotated[
        int | None,
        typer.Option(min=1, help="Token cap of both decodes (default: benchmark.max_new_tokens of --params)."),
    ] = None,
    params: Annotated[Path, typer.Option(help="params.yaml to read the default cap from.")] = DEFAULT_PARAMS,
    out: Annotated[Path | None, typer.Option(help="Write the result as JSON here (per utterance and totals).")] = None,
) -> None:
    """Decode a test set with the teacher alone and with a student as its assistant, and compare ids and time."""
    from pipeline.core.config import read_params
    from pipeline.core.fsutil import atomic_write_text
    from pipeline.core.machine import machine
    from pipeline.data.manifest import load_manifest
    from pipeline.evaluate.assist import assisted_decode, table_lines

    if not manifest.is_file():
        raise DwPipeError(f"{manifest}: manifest not found; run prepare-data or pass --manifest")
    cap = max_new_tokens or read_params(params).get("benchmark", {}).get("max_new_tokens")
    if cap is None:
        raise DwPipeError(f"{params} has no benchmark.max_new_tokens; pass --max-new-tokens")
    utts = [u for u in load_manifest(manifest) if u.language == language][:limit]
    result = assisted_decode(teacher, student, utts, manifest.parent, language, cap)
    typer.echo("\n".join(table_lines([result])))
    if out is not None:
        atomic_write_text(out, json.dumps({"machine": machine(), **result.to_json()}, indent=1) + "\n")
        typer.echo(f"wrote {out}")
