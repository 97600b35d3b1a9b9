"""DVC stage prepare_data: validated train/dev/test manifests with 16 kHz audio.

python stages/prepare_data.py        # reads params.yaml: prepare_data
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import load_section  # noqa: E402
from pipeline.prepare import PrepareDataConfig, prepare_data  # noqa: E402
from pipeline.stage import run_stage  # noqa: E402


def main() -> None:
    prepare_data(load_section(PrepareDataConfig, "prepare_data"))


if __name__ == "__main__":
    run_stage("prepare_data", main)
