"""The ``dw-pipe`` command line: thin wrappers over the library.

Logging and progress bars are configured here, once, in the app callback;
library modules only take named loggers. Commands import the library when
they run: torch takes seconds to load, and a Ctrl-C meanwhile must reach the
one-line handler, not the interpreter's traceback. Each command that mirrors a DVC
stage reads its ``params.yaml`` section unless told otherwise. A failure
the user can fix ends with one line on stderr and exit status 2, a Ctrl-C
with one line and status 130.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from typer.core import TyperGroup

from pipeline.core.config import DEFAULT_PARAMS, load_section
from pipeline.core.errors import EXIT_INTERRUPTED, INTERRUPTED, USER_ERRORS
from pipeline.core.progress import set_progress
from pipeline.core.stage import configure_logging

F = TypeVar("F", bound=Callable)
log = logging.getLogger("dw_pipe")
# Click's plain help, not Rich's: Rich cuts long option names to fit its table
# ("--allow-outside-pat…"), worst in a pipe or a narrow terminal.
PLAIN_HELP = None


class FullSummaries(TyperGroup):
    """A command group that lists each command with the first sentence of its help whole, wrapped to the width.

    Click cuts a summary to fit one line beside the longest command name, so in a pipe (80 columns) the list
    read "Convert a CTranslate2 Whisper checkpoint into a..."."""

    def format_commands(self, ctx: typer.Context, formatter: Any) -> None:  # Click's HelpFormatter, as Typer vendors it
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=sys.maxsize)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


app = typer.Typer(
    name="dw-pipe",
    cls=FullSummaries,
    help="Offline teacher-logit distillation for multilingual Whisper (DistilWhisper).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=PLAIN_HELP,
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
    """Turn the errors a user can fix into one line on stderr and exit status 2, a Ctrl-C into one line and 130.

    Without the second, click prints "Aborted!" and exits 1, as for a failure."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except USER_ERRORS as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo(INTERRUPTED, err=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None

    return wrapper  # type: ignore[return-value]


@app.command("import-ct2")
@user_errors
def import_ct2_cmd(
    src: Annotated[str, typer.Argument(help="A CTranslate2 Whisper folder, or embedded:whisper-base.")],
    out: Annotated[Path, typer.Argument(help="Folder for the Hugging Face checkpoint (created).")],
    overwrite: Annotated[bool, typer.Option(help="Replace an output folder that holds something else.")] = False,
) -> None:
    """Convert a CTranslate2 Whisper checkpoint into a complete Hugging Face checkpoint."""
    from pipeline.models.ct2_import import import_ct2
    from pipeline.models.specs import ct2_source, parse_model_spec

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
    from pipeline.models.specs import ImportModelsConfig, import_models

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
    from pipeline.data.prepare import PrepareDataConfig, prepare_data

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
    top_k: Annotated[int | None, typer.Option(help="Token ids kept per label position (at most).")] = None,
    min_prob: Annotated[
        float | None, typer.Option(help="Keep only entries of at least this probability (0: always top_k).")
    ] = None,
    id_encoding: Annotated[str | None, typer.Option(help="raw, rank or delta.")] = None,
    value_encoding: Annotated[str | None, typer.Option(help="float16, q8 or sqrt64.")] = None,
    force: Annotated[bool, typer.Option(help="Rebuild a cache that was made from other inputs or settings.")] = False,
) -> None:
    """Stage cache_teacher: teacher-forced top-k distributions in zstd Parquet shards (resumable; torchrun-aware)."""
    from pipeline.cache.build import CacheTeacherConfig, build_cache

    config = load_section(
        CacheTeacherConfig,
        "cache_teacher",
        params,
        teacher=_str(teacher),
        manifest=_str(manifest),
        out_dir=_str(out),
        top_k=top_k,
        min_prob=min_prob,
        id_encoding=id_encoding,
        value_encoding=value_encoding,
    )
    content = build_cache(config, force=force)
    if content:
        typer.echo(
            f"{config.out_dir}: {content['rows']} utterances, {content['tokens']} label tokens, {len(content['shards'])} shard(s)"
        )


cache_app = typer.Typer(
    help="Inspect and check teacher caches.", no_args_is_help=True, rich_markup_mode=PLAIN_HELP, cls=FullSummaries
)
app.add_typer(cache_app, name="cache")


@cache_app.command("info")
@user_errors
def cache_info_cmd(
    folder: Annotated[Path, typer.Argument(help="A teacher cache folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Summarise a teacher cache: teacher, settings, rows, tokens, bytes per label token."""
    from pipeline.cache.reader import cache_info

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
    from pipeline.cache.reader import verify_cache

    problems = verify_cache(folder)
    for problem in problems:
        typer.echo(f"BAD {problem}", err=True)
    if problems:
        raise typer.Exit(1)
    typer.echo(f"{folder}: all shards verified")


@cache_app.command("decode")
@user_errors
def cache_decode_cmd(
    folder: Annotated[Path, typer.Argument(help="A teacher cache folder.")],
    out: Annotated[Path, typer.Argument(help="Folder to write decoded.parquet into (replaced if it exists).")],
) -> None:
    """Write the cache with plain columns (token ids, float32 log-probs per position) that any Parquet reader loads."""
    from pipeline.cache.reader import write_decoded

    summary = write_decoded(folder, out)
    typer.echo(f"{summary['file']}: {summary['rows']} rows, {summary['bytes'] / 1e6:.2f} MB")


memo_app = typer.Typer(
    help="Inspect and prune the encoder memo (encoder outputs kept between stages and runs).",
    no_args_is_help=True,
    rich_markup_mode=PLAIN_HELP,
    cls=FullSummaries,
)
app.add_typer(memo_app, name="memo")
MemoFolder = Annotated[Path | None, typer.Argument(help="The memo folder (default: encoder_memo in params.yaml).")]
MemoParams = Annotated[Path, typer.Option(help="params.yaml to read encoder_memo from when no folder is given.")]


@memo_app.command("info")
@user_errors
def memo_info_cmd(
    folder: MemoFolder = None,
    params: MemoParams = DEFAULT_PARAMS,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Say what the encoder memo holds: outputs and bytes per key and per machine identity, and which is this one."""
    from pipeline.core.encoder_memo import memo_info

    info = memo_info(_memo_folder(folder, params))
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    typer.echo(f"{info['root']}: {len(info['keys'])} key(s), {info['files']} outputs, {_mb(info['bytes'])}")
    for group in info["identities"]:
        mark = "current" if group["current"] else "other"
        typer.echo(
            f"{mark:<8}{group['keys']:>3} key(s) {group['files']:>6} outputs {_mb(group['bytes']):>10}  {group['identity']}"
        )
        for key in (k for k in info["keys"] if k["identity"] == group["identity"]):
            about = f"{key['setting'] or '?'}, encoder {(key['encoder_sha256'] or '?')[:12]}"
            current = " (current)" if key["current"] else ""
            typer.echo(f"  {key['key']}  {about}: {key['files']} outputs, {_mb(key['bytes'])}{current}")
    typer.echo(f"this machine: {'; '.join(info['this_machine'])}")
    if info["leftovers"]:
        typer.echo(f"{info['leftovers']} leftover(s) of killed writers or prunes: dw-pipe memo prune removes them")


@memo_app.command("prune")
@user_errors
def memo_prune_cmd(
    folder: MemoFolder = None,
    params: MemoParams = DEFAULT_PARAMS,
    keep_current: Annotated[
        bool, typer.Option("--keep-current/--all", help="Keep the keys this machine would hit, or delete every key.")
    ] = True,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would go; delete nothing.")] = False,
) -> None:
    """Delete the encoder memo's keys this machine would not hit: other machines', other library versions', older."""
    from pipeline.core.encoder_memo import prune_memo

    done = prune_memo(_memo_folder(folder, params), keep_current=keep_current, dry_run=dry_run)
    for name in done["removed"]:
        typer.echo(f"{'would remove' if dry_run else 'removed'} {name}")
    typer.echo(
        f"{done['root']}: {'would free' if dry_run else 'freed'} {_mb(done['bytes'])} ({len(done['removed'])} key(s), "
        f"{done['files']} outputs, {done['leftovers']} leftover(s)); kept {len(done['kept'])} key(s)"
    )


def _memo_folder(folder: Path | None, params: Path) -> Path:
    """``folder``, or the one encoder_memo folder params.yaml's sections name (one YAML anchor in the default)."""
    if folder is not None:
        return folder
    from pipeline.core.config import ConfigError, read_params

    def named(node) -> list[str]:
        if not isinstance(node, dict):
            return []
        return [str(v) for k, v in node.items() if k == "encoder_memo" and v] + [
            name for v in node.values() for name in named(v)
        ]

    found = sorted(set(named(read_params(params))))
    if len(found) != 1:
        raise ConfigError(
            f"{params} names {found or 'no'} encoder_memo folder(s); give the folder: dw-pipe memo info DIR"
        )
    return Path(found[0])


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


@app.command("train-student")
@user_errors
def train_student_cmd(
    params: Annotated[Path, typer.Option(help="params.yaml to read the train_student section from.")] = DEFAULT_PARAMS,
    mode: Annotated[
        str | None, typer.Option(help="Train only this mode: distilwhisper, clsr, finetune or lora.")
    ] = None,
    student: Annotated[Path | None, typer.Option(help="Student base HF checkpoint (overrides common.base).")] = None,
    cache: Annotated[Path | None, typer.Option(help="Teacher cache folder.")] = None,
    train: Annotated[Path | None, typer.Option(help="Training manifest.")] = None,
    dev: Annotated[Path | None, typer.Option(help="Dev manifest (greedy WER per epoch, best checkpoint).")] = None,
    languages: Annotated[str | None, typer.Option(help="Comma-separated target languages, e.g. cs,bg,pl.")] = None,
    out: Annotated[Path | None, typer.Option(help="Output root; each mode goes to OUT/<mode>.")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many optimizer steps.")] = None,
) -> None:
    """Stage train_student: train CLSR students (and baselines) from the teacher cache; resumable."""
    from dataclasses import replace

    from pipeline.student.train import TrainStageConfig, train_modes

    stage = load_section(TrainStageConfig, "train_student", params, out_dir=_str(out))
    overrides = {
        "base": _str(student),
        "cache": _str(cache),
        "train": _str(train),
        "dev": _str(dev),
        "max_steps": max_steps,
        "languages": languages.split(",") if languages else None,
    }
    stage = replace(
        stage,
        modes=(mode,) if mode else stage.modes,
        common={**stage.common, **{k: v for k, v in overrides.items() if v is not None}},
    )
    for name, result in train_modes(stage).items():
        if not result:  # ranks other than 0 under torchrun
            continue
        typer.echo(
            f"{name}: dev error rate {result['dev_wer_initial']:.4f} -> {result['dev_wer_best']:.4f} (best step {result['best_step']})"
        )


@app.command("export-student")
@user_errors
def export_student_cmd(
    student: Annotated[Path, typer.Argument(help="A student folder (train_student output).")],
    language: Annotated[str, typer.Option(help="Language whose experts to route to.")],
    out: Annotated[Path, typer.Option(help="Folder for the plain Whisper checkpoint.")],
    threshold: Annotated[
        float, typer.Option(help="Use a layer's expert when its dev gate rate is at least this.")
    ] = 0.5,
) -> None:
    """Export a plain Whisper checkpoint for one language (static per-layer routing from dev gate rates)."""
    from pipeline.student.export import export_student

    info = export_student(student, language, out, threshold)
    experts = sum(1 for r in info["routing"].values() if r["branch"] == "expert")
    typer.echo(
        f"{out}: {info['mode']} student for {language}, {experts} of {len(info['routing'])} CLSR layers use the expert"
    )


@app.command("export-students")
@user_errors
def export_students_cmd(
    params: Annotated[Path, typer.Option(help="params.yaml to read the export_student section from.")] = DEFAULT_PARAMS,
) -> None:
    """Stage export_student: export every configured mode and language (params.yaml: export_student)."""
    from pipeline.student.export import ExportConfig, export_all

    for info in export_all(load_section(ExportConfig, "export_student", params)):
        typer.echo(f"{info['mode']}-{info['language']}: {info['routing']}")


@app.command("quantize")
@user_errors
def quantize_cmd(
    model_dir: Annotated[
        Path | None, typer.Argument(help="HF Whisper checkpoint; omit to run the quantize stage from params.")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Output CTranslate2 folder (with MODEL_DIR).")] = None,
    compute_type: Annotated[
        str, typer.Option(help="float32, int8, int8_float32, int16; on GPU float16, int8_float16, bfloat16.")
    ] = "int8",
    device: Annotated[str, typer.Option(help="Device used to read back the effective compute type.")] = "cpu",
    params: Annotated[Path, typer.Option(help="params.yaml (stage mode).")] = DEFAULT_PARAMS,
) -> None:
    """Convert an HF Whisper checkpoint with CTranslate2 at a compute type (or every model and type of params.yaml)."""
    from pipeline.evaluate.quantize import QuantizeConfig, quantize, quantize_all

    if model_dir is None:
        results = quantize_all(load_section(QuantizeConfig, "quantize", params))
    else:
        if out is None:
            raise typer.BadParameter("--out is required with MODEL_DIR")
        results = [quantize(model_dir, out, compute_type, device)]
    for r in results:
        typer.echo(
            f"{r['source']} {r['requested_compute_type']} -> {r['effective_compute_type']} ({r['model_size_mb']} MB)"
        )


@app.command("benchmark")
@user_errors
def benchmark_cmd(
    params: Annotated[Path, typer.Option(help="params.yaml to read the benchmark section from.")] = DEFAULT_PARAMS,
) -> None:
    """Stage benchmark: per-language / per-gender error rates, RTFx, memory, size (params.yaml: benchmark)."""
    from pipeline.evaluate.benchmark import BenchmarkConfig, run_benchmark

    config = load_section(BenchmarkConfig, "benchmark", params)
    result = run_benchmark(config)
    typer.echo(f"{config.out_dir}/metrics.json: {result['rows']} rows from {result['runs']} model runs")


@app.command("longform")
@user_errors
def longform_cmd(
    params: Annotated[Path, typer.Option(help="params.yaml to read the longform section from.")] = DEFAULT_PARAMS,
) -> None:
    """Stage longform: faster-whisper long-form transcription of every CTranslate2 model (params.yaml: longform)."""
    from pipeline.evaluate.longform import LongformConfig, run_longform

    config = load_section(LongformConfig, "longform", params)
    result = run_longform(config)
    typer.echo(f"{config.out_dir}/metrics.json: {result['rows']} rows")


@app.command("ct2-tune")
@user_errors
def ct2_tune_cmd(
    params: Annotated[Path, typer.Option(help="params.yaml to read the benchmark section from.")] = DEFAULT_PARAMS,
    model: Annotated[str, typer.Option(help="Export name under ct2_dir: <model>-float32, <model>-int8.")] = "teacher",
    n: Annotated[int, typer.Option(help="Test utterances to time (target languages first).")] = 6,
    repeats: Annotated[int, typer.Option(help="Timed runs per measurement (the median counts).")] = 3,
    out: Annotated[Path | None, typer.Option(help="Record to write (default: benchmark.ct2_tuning).")] = None,
    settings: Annotated[
        list[str] | None, typer.Option("--setting", help="Settings to try (repeat; default: all of them).")
    ] = None,
) -> None:
    """Time CTranslate2 under each CPU setting (CT2_FORCE_CPU_ISA, CT2_USE_MKL, threads, batch) and record the
    fastest that keeps the hypotheses identical; the benchmark then decodes with it on this machine."""
    from pipeline.evaluate.benchmark import BenchmarkConfig
    from pipeline.evaluate.ct2_tuning import SETTINGS, table_lines, tune

    unknown = sorted(set(settings or ()) - set(SETTINGS))
    if unknown:
        raise typer.BadParameter(f"unknown setting(s) {unknown}; known: {sorted(SETTINGS)}")
    config = load_section(BenchmarkConfig, "benchmark", params)
    record = tune(config, model=model, n=n, repeats=repeats, out=out, settings=settings)
    typer.echo("\n".join(table_lines(record["rows"])))
    typer.echo(f"chosen: {record['choice']['reason']}")
    typer.echo(f"wrote {record['path']}")


@app.command("report")
@user_errors
def report_cmd(
    params: Annotated[Path, typer.Option(help="params.yaml to read the report section from.")] = DEFAULT_PARAMS,
    bench: Annotated[Path | None, typer.Option(help="Benchmark folder (metrics.json).")] = None,
    out: Annotated[Path | None, typer.Option(help="Report folder.")] = None,
) -> None:
    """Stage report: report.md with tables, bias analysis and plots."""
    from pipeline.report.build import ReportConfig, make_report

    config = load_section(ReportConfig, "report", params, bench=_str(bench), out_dir=_str(out))
    make_report(config)
    typer.echo(f"{config.out_dir}/report.md written")


docs_app = typer.Typer(
    help="Render the tables of README.md and docs/ from their committed result files.",
    invoke_without_command=True,
    rich_markup_mode=PLAIN_HELP,
    cls=FullSummaries,
)
app.add_typer(docs_app, name="docs")


@docs_app.callback()
@user_errors
def docs_cmd(
    ctx: typer.Context,
    check: Annotated[bool, typer.Option("--check", help="Change nothing; exit 1 if a table is out of date.")] = False,
    root: Annotated[Path, typer.Option(help="Repository root (README.md, docs/).")] = Path("."),
) -> None:
    """Render the tables of README.md and docs/ from their committed result files."""
    if ctx.invoked_subcommand is not None:
        return
    from pipeline.report.doc_tables import all_tables
    from pipeline.report.docs import render_docs

    changed = render_docs(root, all_tables(), check=check)
    for path in changed:
        typer.echo(f"{'out of date' if check else 'rendered'}: {path.relative_to(root)}")
    if check and changed:
        raise typer.Exit(1)


@docs_app.command("record-run")
@user_errors
def record_run_cmd(
    out: Annotated[Path, typer.Option(help="The result file, e.g. docs/results/default-run.json.")],
    data: Annotated[Path, typer.Option(help="The finished run's data folder.")] = Path("data"),
    logs: Annotated[Path | None, typer.Option(help="Its logs folder (default: beside DATA).")] = None,
    params: Annotated[Path | None, typer.Option(help="Its params.yaml (default: beside DATA).")] = None,
) -> None:
    """Record a finished run for the docs: headline numbers, stage times, data identity."""
    from pipeline.report.record_run import record_run

    run = data.resolve().parent
    record = record_run(data, logs or run / "logs", params or run / "params.yaml", out)
    typer.echo(f"wrote {out} ({len(record['rows'])} rows, {record['times']['total_seconds']:.0f} s of stages)")


def _str(path: Path | None) -> str | None:
    return str(path) if path is not None else None


def main() -> None:
    app()


if __name__ == "__main__":
    main()
