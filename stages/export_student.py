"""DVC stage export_student: a plain Whisper checkpoint per trained mode and language.

python stages/export_student.py        # reads params.yaml: export_student
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.core.stage import run_stage  # noqa: E402


def main() -> None:
    # Imported here, under run_stage: a Ctrl-C while torch loads also ends in one line.
    from pipeline.core.config import load_section
    from pipeline.student.export import ExportConfig, export_all

    export_all(load_section(ExportConfig, "export_student"))


if __name__ == "__main__":
    run_stage("export_student", main)
