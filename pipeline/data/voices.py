"""The voices of the embedded corpus's splits: checks of the settings, and the voice design the report states."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from pipeline.core.errors import DwPipeError

if TYPE_CHECKING:
    from pipeline.data.synthetic import SyntheticItem

log = logging.getLogger(__name__)


def voice_design(items: list[SyntheticItem]) -> dict[str, dict]:
    """Per language: the voices of each split, test voices unseen in training, and the genders tested.

    The report states these; a test split without a gender the language's
    voices have, or (with three or more voices) without an unseen voice, is
    logged as a warning.
    """
    by_lang: dict[str, dict[str, set[SyntheticItem]]] = {}
    for it in items:
        by_lang.setdefault(it.language, {}).setdefault(it.split, set()).add(it)
    design = {}
    for lang, splits in by_lang.items():
        voices = {s: sorted({it.speaker for it in its}) for s, its in splits.items()}
        trained = set(voices.get("train", []))
        everyone = {it.speaker: it for its in splits.values() for it in its}
        all_genders = sorted({it.gender for it in everyone.values()})
        entry: dict = {"voices": voices, "genders": all_genders, "tests": {}}
        for split in ("test", "test_ood"):
            if split not in splits:
                continue
            genders = sorted({it.gender for it in splits[split]})
            unseen = sorted(set(voices[split]) - trained)
            entry["tests"][split] = {"genders": genders, "unseen_voices": unseen}
            if genders != all_genders:
                log.warning("language %s: %s has genders %s of the voices' %s", lang, split, genders, all_genders)
            if trained and len(everyone) >= 3 and not unseen:
                log.warning("language %s: %s has no voice unseen in training", lang, split)
        design[lang] = entry
    return design


def check_split_voices(voices: dict[str, tuple[str, ...]]) -> None:
    """Each split needs voices, and no voice may serve two splits."""
    owner: dict[str, str] = {}
    for split, names in voices.items():
        if not names:
            raise DwPipeError(f"prepare_data.synthetic.voices.{split} is empty")
        for name in names:
            if name in owner:
                raise DwPipeError(
                    f"voice variant {name} is in both {owner[name]} and {split}; splits must not share voices"
                )
            owner[name] = split
