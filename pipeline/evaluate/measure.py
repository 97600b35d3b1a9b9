"""What a decode costs: its wall-clock seconds and the process's peak resident memory.

Speed is reported as RTFx = audio seconds / decode seconds (each engine
warms up on one utterance first, outside the timer). Memory is the peak
resident set size sampled while a model decodes: process wide, so it
includes the shared log-mel features and encoder outputs.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from collections.abc import Callable

from pipeline.evaluate.runs import Run

log = logging.getLogger(__name__)


class PeakRSS:
    """Samples this process's resident set size in the background; ``peak_mb`` after ``stop``."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def current() -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.current())
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.current())

    @property
    def peak_mb(self) -> float:
        return round(self.peak / 1e6, 1)


def timed(fn: Callable[[], list[str]]) -> tuple[list[str], float, float]:
    """Run ``fn`` under the RSS sampler; (result, seconds, peak MB)."""
    gc.collect()
    with PeakRSS() as rss:
        start = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - start
    return result, seconds, rss.peak_mb


def log_run(run: Run, dataset: str, seconds: float, longer_seconds: float) -> None:
    """One line per decoded (model, dataset): where the benchmark's time goes."""
    log.info(
        "%s|%s on %s: %d utterances in %.1f s (%d hit the cap; longer caps re-decoded in %.1f s)",
        run.model,
        run.compute_type,
        dataset,
        len(run.utts),
        seconds,
        sum(run.capped),
        longer_seconds,
    )
