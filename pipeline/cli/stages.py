"""dw-pipe commands that mirror the DVC stages, one each: the same name, the same params.yaml section."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import app, path_str, user_errors
from pipeline.core.config import DEFAULT_PARAMS, load_section, read_params


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
        teacher=path_str(teacher),
        manifest=path_str(manifest),
        out_dir=path_str(out),
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

    stage = load_section(TrainStageConfig, "train_student", params, out_dir=path_str(out))
    overrides = {
        "base": path_str(student),
        "cache": path_str(cache),
        "train": path_str(train),
        "dev": path_str(dev),
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


@app.command("report")
@user_errors
def report_cmd(
    params: Annotated[Path, typer.Option(help="params.yaml to read the report section from.")] = DEFAULT_PARAMS,
    bench: Annotated[Path | None, typer.Option(help="Benchmark folder (metrics.json).")] = None,
    out: Annotated[Path | None, typer.Option(help="Report folder.")] = None,
) -> None:
    """Stage report: report.md with tables, bias analysis and plots."""
    from pipeline.report.build import ReportConfig, make_report, with_pipeline_inputs

    config = load_section(ReportConfig, "report", params, bench=path_str(bench), out_dir=path_str(out))
    config = with_pipeline_inputs(config, read_params(params))
    make_report(config)
    typer.echo(f"{config.out_dir}/report.md written")
