"""DVC stage report: report.md, summary.json and plots from the benchmark metrics.

python stages/report.py        # reads params.yaml: report
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.core.stage import run_stage  # noqa: E402


def main() -> None:
    # Imported here, under run_stage: a Ctrl-C while torch loads also ends in one line.
    from dataclasses import replace

    from pipeline.core.config import load_section, read_params
    from pipeline.report.build import ReportConfig, make_report, with_pipeline_inputs

    cfg = load_section(ReportConfig, "report")
    if cfg.headline is None:  # dvc.yaml declares metrics/compare.json among the report stage's metrics
        cfg = replace(cfg, headline=Path("metrics/compare.json"))
    # The students must come from the pipeline's own cache, training manifest and base (report: cache / train /
    # base set them otherwise)
    cfg = with_pipeline_inputs(cfg, read_params())
    make_report(cfg)


if __name__ == "__main__":
    run_stage("report", main)
