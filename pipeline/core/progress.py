"""Progress bars: off unless the CLI turns them on (library code never decides)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
_enabled = False


def set_progress(enabled: bool) -> None:
    """Turn our bars and those of transformers / datasets / huggingface_hub on or off."""
    global _enabled
    _enabled = enabled
    try:
        import transformers

        (
            transformers.utils.logging.enable_progress_bar
            if enabled
            else transformers.utils.logging.disable_progress_bar
        )()
    except ImportError:  # pragma: no cover - transformers is a hard dependency
        pass
    try:
        import datasets

        (datasets.enable_progress_bars if enabled else datasets.disable_progress_bars)()
    except ImportError:  # pragma: no cover
        pass


def progress(iterable: Iterable[T], *, desc: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """``iterable`` wrapped in a bar when progress is on."""
    yield from tqdm(iterable, desc=desc, total=total, unit=unit, disable=not _enabled, dynamic_ncols=True)
