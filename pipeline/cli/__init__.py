"""The ``dw-pipe`` command line: thin wrappers over the library (``python -m pipeline.cli`` runs it too).

:mod:`pipeline.cli.app` holds the app and what every command shares;
:mod:`pipeline.cli.stages` the commands that mirror the DVC stages; :mod:`pipeline.cli.released` and
:mod:`pipeline.cli.assist` those for released students and speculative decoding;
:mod:`pipeline.cli.tools` the rest. Importing the package registers them all.
"""

from pipeline.cli import assist, released, stages, tools  # noqa: F401  (registers the commands on the app)
from pipeline.cli.app import app, main

__all__ = ["app", "main"]
