"""dw-pipe commands for students made elsewhere: import the paper's released students, measure their gates."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import app, user_errors


@app.command("import-student")
@user_errors
def import_student_cmd(
    spec: Annotated[
        str,
        typer.Argument(help="distilwhisper:OWNER/NAME (Hub) or distilwhisper:FOLDER, in the official code's layout."),
    ],
    out: Annotated[Path, typer.Option(help="Student folder to write (its base model goes into OUT/base).")],
    language: Annotated[
        list[str] | None, typer.Option(help="Language code to import (repeatable; default: every expert found).")
    ] = None,
    processor: Annotated[
        str | None,
        typer.Option(help="Tokenizer/feature extractor source when SPEC has none (hub id or HF folder)."),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an output folder that holds something else.")] = False,
) -> None:
    """Import a released DistilWhisper student (naver/multilingual-distilwhisper-*) as a dw-pipe student."""
    from pipeline.student.official import import_official

    record = import_official(
        spec, out, languages=tuple(language) if language else None, processor=processor, overwrite=overwrite
    )
    clsr = record["clsr"]
    typer.echo(
        f"{out}: {', '.join(record['languages'])} experts on {len(clsr['encoder_layers'])} encoder and "
        f"{len(clsr['decoder_layers'])} decoder layers; measure their gates with `dw-pipe student-gates {out} --dev ...`"
    )


@app.command("student-gates")
@user_errors
def student_gates_cmd(
    student: Annotated[Path, typer.Argument(help="A CLSR student folder.")],
    dev: Annotated[Path, typer.Option(help="Dev manifest (JSON lines) to decode.")],
    batch_size: Annotated[int, typer.Option(help="Utterances per decoding batch.")] = 8,
    max_new_tokens: Annotated[int, typer.Option(help="Token cap per utterance.")] = 128,
) -> None:
    """Measure a CLSR student's hard-gate rates on a dev set (dev.json, which export-student routes by)."""
    from pipeline.student.gates import DecodeSettings, measure_gates

    summary = measure_gates(student, dev, DecodeSettings(batch_size, max_new_tokens))
    for lang, rates in sorted(summary["gate_rates"].items()):
        mean = sum(rates.values()) / len(rates) if rates else 0.0
        wer = summary["per_language"].get(lang, {}).get("wer")
        typer.echo(f"{lang}: mean gate rate {mean:.3f} over {len(rates)} layers, dev error rate {wer:.4f}")
