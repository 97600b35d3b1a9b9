"""DVC stage prepare_data: validated train/dev/test manifests with 16 kHz audio.

python stages/prepare_data.py        # reads params.yaml: prepare_data
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.core.stage import run_stage  # noqa: E402


def main() -> None:
    # Imported here, under run_stage: a Ctrl-C while torch loads also ends in one line.
    from pipeline.core.config import load_section
    from pipeline.data.prepare import PrepareDataConfig, prepare_data

    prepare_data(load_section(PrepareDataConfig, "prepare_data"))


if __name__ == "__main__":
    run_stage("prepare_data", main)
