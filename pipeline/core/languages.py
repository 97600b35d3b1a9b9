"""Per-language facts for the bias analysis: Whisper's training hours.

The table (``resources/whisper_hours.csv``) gives the hours of transcribed
speech per language in Whisper's training data (Radford et al. 2022,
arXiv 2212.04356, Appendix E, Figure 11); its header comments name the
exact source and its caveats. Reports order languages by these hours.
"""

from __future__ import annotations

import csv
from functools import cache
from pathlib import Path

TABLE = Path(__file__).with_name("resources") / "whisper_hours.csv"


@cache
def whisper_training_hours() -> dict[str, float]:
    """Language code -> hours of transcribed speech in Whisper's training data."""
    with open(TABLE, encoding="utf-8") as handle:
        rows = csv.DictReader(line for line in handle if not line.startswith("#"))
        return {row["language"]: float(row["asr_hours"]) for row in rows if row["asr_hours"]}


def by_resource_level(languages: list[str]) -> list[str]:
    """``languages`` from most to least Whisper training hours (unknown hours last)."""
    hours = whisper_training_hours()
    return sorted(languages, key=lambda lang: (-hours.get(lang, -1.0), lang))
