"""The one base class for failures a user can fix.

Its message names the item and the fix; the CLI and the DVC stages print it
as one line and exit with status 2 instead of a traceback. A Ctrl-C ends in
one line too, with status 130.
"""

from __future__ import annotations


class DwPipeError(Exception):
    """A failure caused by input or environment, with a message saying what to change."""


# Built-in errors that also reach the user as one line (missing files, occupied outputs).
USER_ERRORS: tuple[type[BaseException], ...] = (DwPipeError, FileExistsError, FileNotFoundError)

# What a Ctrl-C prints (exit status 130, as a shell reports SIGINT): every long step keeps its finished work
# (cache shards, training checkpoints, benchmarked models) and a rerun goes on from there.
INTERRUPTED = "interrupted; run it again to resume (finished work is kept)"
EXIT_INTERRUPTED = 130
