"""DVC stage cache_teacher: run the teacher once over the training manifest, keep its top-k.

python stages/cache_teacher.py                                  # reads params.yaml: cache_teacher
                                                                # (from_hub: fetch the cache, the teacher does not run)
torchrun --nproc_per_node 2 stages/cache_teacher.py             # ranks split the shards
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.core.stage import run_stage  # noqa: E402


def main() -> None:
    # Imported here, under run_stage: a Ctrl-C while torch loads also ends in one line.
    from pipeline.cache.build import CacheTeacherConfig, build_cache
    from pipeline.core.config import load_section

    # Under DVC a change of inputs or settings means "rebuild": force=True. Unchanged inputs resume.
    build_cache(load_section(CacheTeacherConfig, "cache_teacher"), force=True)


if __name__ == "__main__":
    run_stage("cache_teacher", main)
