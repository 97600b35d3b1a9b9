"""The ``dw-pipe`` command line: thin wrappers over the library.

Logging and progress bars are configured here, once, in the app callback;
library modules only take named loggers. Each command that mirrors a DVC
stage reads its ``params.yaml`` section unless told otherwise. A failure
the user can fix ends with one line on stderr and exit status 2.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from pipeline.config import DEFAULT_PARAMS, load_section
from pipeline.errors import USER_ERRORS
from pipeline.models import ImportModelsConfig, ct2_source, import_models, parse_model_spec
from pipeline.progress import set_progress
from pipeline.stage import configure_logging

F = TypeVar("F", bound=Callable)
log = logging.getLogger("dw_pipe")

app = typer.Typer(
    name="dw-pipe",
    help="Offline teacher-logit distillation for multilingual Whisper (DistilWhisper).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def main_callback(
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = "INFO",
    progress: Annotated[
        bool | None, typer.Option(help="Progress bars (default: on when stderr is a terminal).")
    ] = None,
) -> None:
    configure_logging(log_level)
    set_progress(sys.stderr.isatty() if progress is None else progress)


def user_errors(func: F) -> F:
    """Turn the errors a user can fix into one line on stderr and exit status 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except USER_ERRORS as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


@app.command("import-ct2")
@user_errors
def import_ct2_cmd(
    src: Annotated[str, typer.Argument(help="A CTranslate2 Whisper folder, or embedded:whisper-base.")],
    out: Annotated[Path, typer.Argument(help="Folder for the Hugging Face checkpoint (created).")],
    overwrite: Annotated[bool, typer.Option(help="Replace an output folder that holds something else.")] = False,
) -> None:
    """Convert a CTranslate2 Whisper checkpoint into a complete Hugging Face checkpoint."""
    from pipeline.ct2_import import import_ct2

    result = import_ct2(ct2_source(parse_model_spec(src)), out, overwrite=overwrite)
    typer.echo(
        f"{out}: {'already up to date' if result.skipped else 'written'} (source sha256 {result.source_sha256[:12]})"
    )


@app.command("import-models")
@user_errors
def import_models_cmd(
    params: Annotated[Path, typer.Option(help="params.yaml to read the import_models section from.")] = DEFAULT_PARAMS,
    out_dir: Annotated[Path | None, typer.Option(help="Override import_models.out_dir.")] = None,
) -> None:
    """Stage import_models: materialize every model spec of params.yaml as an HF checkpoint."""
    config = load_section(ImportModelsConfig, "import_models", params, out_dir=str(out_dir) if out_dir else None)
    record = import_models(config, overwrite=True)
    typer.echo(json.dumps(record, indent=2))


@app.command("prepare-data")
@user_errors
def prepare_data_cmd(
    params: Annotated[Path, typer.Option(help="params.yaml to read the prepare_data section from.")] = DEFAULT_PARAMS,
    out: Annotated[Path | None, typer.Option(help="Override prepare_data.out_dir.")] = None,
    source: Annotated[str | None, typer.Option(help="synthetic, hf or local.")] = None,
    input: Annotated[str | None, typer.Option(help="hf: dataset name or save_to_disk folder; local: manifest.")] = None,
    allow_outside_paths: Annotated[
        bool | None, typer.Option(help="local: accept absolute audio paths or paths outside the manifest's folder.")
    ] = None,
) -> None:
    """Stage prepare_data: build validated train/dev/test manifests, rejects.jsonl and summary.json."""
    from pipeline.prepare import PrepareDataConfig, prepare_data

    config = load_section(
        PrepareDataConfig,
        "prepare_data",
        params,
        out_dir=str(out) if out else None,
        source=source,
        input=input,
        allow_outside_paths=allow_outside_paths,
    )
    summary = prepare_data(config)
    typer.echo(f"{config.out_dir}: kept {summary['kept']}, rejected {summary['rejected']} of {summary['read']}")


@app.command("cache-teacher")
@user_errors
def cache_teacher_cmd(
    params: Annotated[Path, typer.Option(help="params.yaml to read the cache_teacher section from.")] = DEFAULT_PARAMS,
    teacher: Annotated[Path | None, typer.Option(help="Teacher HF checkpoint folder (import_models output).")] = None,
    manifest: Annotated[Path | None, typer.Option(help="Manifest to cache (train.jsonl).")] = None,
    out: Annotated[Path | None, typer.Option(help="Cache folder.")] = None,
    top_k: Annotated[int | None, typer.Option(help="Token ids kept per label position.")] = None,
    value_encoding: Annotated[str | None, typer.Option(help="float16 or q8.")] = None,
    force: Annotated[bool, typer.Option(help="Rebuild a cache that was made from other inputs or settings.")] = False,
) -> None:
    """Stage cache_teacher: teacher-forced top-k distributions in zstd Parquet shards (resumable; torchrun-aware)."""
    from pipeline.cache import CacheTeacherConfig, build_cache

    config = load_section(
        CacheTeacherConfig,
        "cache_teacher",
        params,
        teacher=_str(teacher),
        manifest=_str(manifest),
        out_dir=_str(out),
        top_k=top_k,
        value_encoding=value_encoding,
    )
    content = build_cache(config, force=force)
    if content:
        typer.echo(
            f"{config.out_dir}: {content['rows']} utterances, {content['tokens']} label tokens, {len(content['shards'])} shard(s)"
        )


cache_app = typer.Typer(help="Inspect and check teacher caches.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")


@cache_app.command("info")
@user_errors
def cache_info_cmd(
    folder: Annotated[Path, typer.Argument(help="A teacher cache folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Summarise a teacher cache: teacher, settings, rows, tokens, bytes per label token."""
    from pipeline.cache_reader import cache_info

    info = cache_info(folder)
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    for key, value in info.items():
        typer.echo(f"{key:<22} {value}")


@cache_app.command("verify")
@user_errors
def cache_verify_cmd(folder: Annotated[Path, typer.Argument(help="A teacher cache folder.")]) -> None:
    """Check every shard's sha256, schema, rows and tokens against cache.json; exit 1 naming any bad shard."""
    from pipeline.cache_reader import verify_cache

    problems = verify_cache(folder)
    for problem in problems:
        typer.echo(f"BAD {problem}", err=True)
    if problems:
        raise typer.Exit(1)
    typer.echo(f"{folder}: all shards verified")


def _str(path: Path | None) -> str | None:
    return str(path) if path is not None else None


def main() -> None:
    app()


if __name__ == "__main__":
    main()
