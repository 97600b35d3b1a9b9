"""DVC stage longform: faster-whisper long-form transcription of every CTranslate2 model on minutes of audio.

python stages/longform.py        # reads params.yaml: longform
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.core.stage import run_stage  # noqa: E402


def main() -> None:
    # Imported here, under run_stage: a Ctrl-C while torch loads also ends in one line.
    from pipeline.core.config import load_section
    from pipeline.evaluate.longform import LongformConfig, run_longform

    run_longform(load_section(LongformConfig, "longform"))


if __name__ == "__main__":
    run_stage("longform", main)
