"""Run the whole DVC pipeline on the tiny profile in a scratch copy of this repository.

    python scripts/tiny_repro.py [--keep DIR]

Copies the tracked and untracked (not ignored) files to a scratch folder,
makes a tiny random Whisper there (pipeline.models.tiny), uses profiles/tiny.yaml
as params.yaml, runs `dvc repro`, then `dvc repro` again and checks that
nothing reruns. Prints each stage's time. Exit status 0 when all of it held.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def copy_repo(dest: Path) -> None:
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    for name in filter(None, files.decode().split("\0")):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    shutil.copytree(
        ROOT / ".dvc", dest / ".dvc", dirs_exist_ok=True, ignore=shutil.ignore_patterns("cache", "tmp", "config.local")
    )


def run(cmd: list[str], cwd: Path) -> str:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        sys.stderr.write(result.stdout[-4000:] + result.stderr[-6000:])
        raise SystemExit(f"tiny_repro: `{' '.join(cmd)}` failed with status {result.returncode}")
    return result.stdout + result.stderr


def prepare(work: Path) -> None:
    copy_repo(work)
    # DVC keeps a repository's state and its index of each remote's contents in a site cache named by the
    # repository's path (/var/tmp/dvc by default), which `dvc init` clears but a copied .dvc does not. A scratch
    # repository at a path that an earlier run used (pytest's numbered temp folders come round again on a machine
    # made from an image) then trusts that run's index: `dvc push` skipped files it believed the remote held, and a
    # clone's `dvc pull` failed on them. Each scratch repository keeps its own, inside it.
    site = (work / ".dvc" / "tmp" / "site").resolve()
    (work / ".dvc" / "config.local").write_text(f'[core]\n    site_cache_dir = "{site}"\n')
    (work / "dvc.lock").unlink(missing_ok=True)
    shutil.copyfile(work / "profiles" / "tiny.yaml", work / "params.yaml")
    run(["git", "init", "-q"], work)
    run(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from pipeline.models.tiny import save_tiny_whisper; "
            "save_tiny_whisper(Path(sys.argv[1]))",
            "tiny-models/teacher",
        ],
        work,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keep", type=Path, help="run in this folder and keep it (default: a temporary folder)")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="dw-pipe-tiny-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        prepare(work)
        run(["dvc", "repro"], work)
        again = run(["dvc", "repro"], work)
        if "Data and pipelines are up to date" not in again:
            raise SystemExit(f"tiny_repro: a second dvc repro ran stages again:\n{again[-3000:]}")
        times = [json.loads(line) for line in (work / "logs" / "stage_times.jsonl").read_text().splitlines()]
        for t in times:
            print(f"{t['stage']:<16} {t['seconds']:>8.1f} s")
        print(f"total {sum(t['seconds'] for t in times):.1f} s; report: {work / 'data/report/report.md'}")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
