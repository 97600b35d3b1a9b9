"""What every ``stages/<name>.py`` shares: logging, timing, one-line errors and Ctrl-C.

Kept apart from the CLI so that a stage's DVC dependencies are only the
modules it really uses.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

from pipeline.core.errors import EXIT_INTERRUPTED, INTERRUPTED, USER_ERRORS
from pipeline.core.progress import set_progress

log = logging.getLogger("dw_pipe")
STAGE_TIMES = Path("logs") / "stage_times.jsonl"


def configure_logging(level: str = "INFO") -> None:
    """Handlers are set here once per process (CLI callback or stage entry point)."""
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )


def run_stage(name: str, body: Callable[[], None]) -> None:
    """Run a DVC stage body; print and record its wall time; user errors become one line, status 2;
    a Ctrl-C one line, status 130."""
    configure_logging()
    set_progress(sys.stderr.isatty())
    start = time.perf_counter()
    try:
        body()
    except USER_ERRORS as exc:
        print(f"error: stage {name}: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"stage {name} {INTERRUPTED}", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    seconds = time.perf_counter() - start
    log.info("stage %s finished in %.1f s", name, seconds)
    STAGE_TIMES.parent.mkdir(exist_ok=True)
    with STAGE_TIMES.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"stage": name, "seconds": round(seconds, 2), "finished_at": time.time()}) + "\n")
