"""The ``dw-pipe`` app: its group class, global options and the one-line error handling every command shares.

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
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from typer.core import TyperGroup

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


def command_group(name: str, help: str, **options: Any) -> typer.Typer:
    """A ``dw-pipe NAME ...`` command group, registered on the app, listing its commands' summaries whole."""
    group = typer.Typer(help=help, rich_markup_mode=PLAIN_HELP, cls=FullSummaries, **options)
    app.add_typer(group, name=name)
    return group


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


def path_str(path: Path | None) -> str | None:
    return str(path) if path is not None else None


def main() -> None:
    app()
