"""DVC stage import_models: materialize the configured model specs as HF checkpoints.

python stages/import_models.py        # reads params.yaml: import_models
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.core.stage import run_stage  # noqa: E402


def main() -> None:
    # Imported here, under run_stage: a Ctrl-C while torch loads also ends in one line.
    from pipeline.core.config import load_section
    from pipeline.models.specs import ImportModelsConfig, import_models

    config = load_section(ImportModelsConfig, "import_models")
    import_models(config, overwrite=True)


if __name__ == "__main__":
    run_stage("import_models", main)
