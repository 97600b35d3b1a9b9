"""DVC stage quantize: CTranslate2 conversion of the teacher and the exports at each compute type.

python stages/quantize.py        # reads params.yaml: quantize
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.core.stage import run_stage  # noqa: E402


def main() -> None:
    # Imported here, under run_stage: a Ctrl-C while torch loads also ends in one line.
    from pipeline.core.config import load_section
    from pipeline.evaluate.quantize import QuantizeConfig, quantize_all

    quantize_all(load_section(QuantizeConfig, "quantize"))


if __name__ == "__main__":
    run_stage("quantize", main)
