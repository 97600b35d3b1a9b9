"""dw-pipe tools beside the stages: checkpoint import, cache and memo inspection, CTranslate2 tuning, rendered docs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import app, command_group, user_errors
from pipeline.core.config import DEFAULT_PARAMS, load_section


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


cache_app = command_group("cache", "Inspect, check and share teacher caches.", no_args_is_help=True)


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
        shown = ", ".join(f"{k} {v}" for k, v in value.items()) if isinstance(value, dict) else value
        typer.echo(f"{key:<22} {shown}")


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


@cache_app.command("push")
@user_errors
def cache_push_cmd(
    folder: Annotated[Path, typer.Argument(help="A teacher cache folder (it must verify).")],
    repo_id: Annotated[str, typer.Argument(help="Hugging Face dataset repository, OWNER/NAME (created if need be).")],
    revision: Annotated[
        str | None, typer.Option(help="Branch to commit to (created if need be; default: main).")
    ] = None,
    private: Annotated[bool, typer.Option(help="Create the repository private.")] = False,
) -> None:
    """Upload a verified cache (cache.json, card, shards) as a Hugging Face dataset; login: hf auth login or HF_TOKEN."""
    from pipeline.cache.hub import push_cache

    typer.echo(f"{folder}: pushed as {push_cache(folder, repo_id, revision=revision, private=private)}")


@cache_app.command("pull")
@user_errors
def cache_pull_cmd(
    uri: Annotated[str, typer.Argument(help="hf://datasets/OWNER/NAME[@REVISION] (a branch, tag or commit).")],
    dest: Annotated[Path | None, typer.Option(help="Root to download under (default: data/hub-caches).")] = None,
) -> None:
    """Download a cache from the Hugging Face Hub once per commit, into DEST/OWNER--NAME@COMMIT, and verify it."""
    from pipeline.cache.hub import fetch_cache

    fetched = fetch_cache(uri, dest)
    typer.echo(f"{fetched.uri} (commit {fetched.commit}): verified in {fetched.folder}")


memo_app = command_group(
    "memo", "Inspect and prune the encoder memo (encoder outputs kept between stages and runs).", no_args_is_help=True
)
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
    from pipeline.core.memo_cleanup import memo_info

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
    from pipeline.core.memo_cleanup import prune_memo

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


docs_app = command_group(
    "docs", "Render the tables of README.md and docs/ from their committed result files.", invoke_without_command=True
)


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
    note: Annotated[str, typer.Option(help="The run's conditions, shown with its time (e.g. other load).")] = "",
    overrides: Annotated[
        Path | None,
        typer.Option(help="The run is this documented experiment (scripts/run_experiment.sh FILE): checked."),
    ] = None,
) -> None:
    """Record a finished run for the docs: headline numbers, stage times, data identity."""
    from pipeline.report.record_run import record_run

    run = data.resolve().parent
    record = record_run(data, logs or run / "logs", params or run / "params.yaml", out, note, overrides)
    typer.echo(f"wrote {out} ({len(record['rows'])} rows, {record['times']['total_seconds']:.0f} s of stages)")
