"""What one more student variant costs: `dvc exp run` of a changed student, without and with the result memo.

    python bench/variant_cost.py [--set +train_student.per_mode.distilwhisper.seed=1] [--after-only]
                                 [--out bench/results/variant_cost.json]

Needs a finished `make repro` whose dvc.lock is committed (a temporary experiment starts from the last commit and
takes the stages' outputs from the DVC cache). Runs the same variant twice, each as `dvc exp run --temp` (a copy of
the project under .dvc/tmp/exps/, as `dvc queue start` runs it, so this also shows that such a copy finds the
project's encoder memo and result memo):

1. before: with `benchmark.run_memo=null`, the benchmark decodes every model again, as it did before the memo
   (longform keeps its memo: it reruns only where its inputs, the exports, changed, as before the memo);
2. after: the default settings; the benchmark decodes only the models whose inputs changed.

Both retrain the variant's student from the same inputs (so training costs the same twice). Prints the wall time of
each run and of each stage that ran (from the stages' own "finished in" lines), and writes them to --out with the
machine. Each experiment is removed afterwards (`dvc exp remove`): this program leaves no trace in git.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.core.config import read_params  # noqa: E402
from pipeline.core.fsutil import atomic_write_text  # noqa: E402
from pipeline.core.machine import machine  # noqa: E402
from pipeline.report.docs import corpus_id, params_id, provenance  # noqa: E402

FINISHED = re.compile(r"stage (\w+) finished in ([0-9.]+) s")
RAN = re.compile(r"Running stage '(\w+)'")
SKIPPED = re.compile(r"Stage '(\w+)' didn't change, skipping")
NAME = re.compile(r"Ran experiment\(s\): (\S+)")


def exp_run(sets: list[str], label: str) -> dict:
    """One `dvc exp run --temp` with ``sets``: its wall seconds, the stages that ran and their seconds."""
    cmd = ["dvc", "exp", "run", "--temp", *(a for s in sets for a in ("-S", s))]
    print(f"{label}: {' '.join(cmd)}", flush=True)
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    out = done.stdout + done.stderr
    if done.returncode != 0:
        sys.stderr.write(out[-6000:])
        raise SystemExit(f"variant_cost: `{' '.join(cmd)}` failed with status {done.returncode}")
    stages = {m[1]: float(m[2]) for m in FINISHED.finditer(out)}
    kept = re.findall(r"(\d+) reused, (\d+) computed", out)
    name = next((m[1] for m in NAME.finditer(out)), None)
    return {
        "label": label,
        "sets": sets,
        "wall_seconds": round(wall, 1),
        "stages_ran": RAN.findall(out),
        "stages_skipped": SKIPPED.findall(out),
        "stage_seconds": stages,
        "result_memo": [{"reused": int(a), "computed": int(b)} for a, b in kept],
        "experiment": name,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--set", dest="variant", action="append", default=None,
                        help="a params override that makes the variant (repeatable; default: the kd student's seed)")  # fmt: skip
    parser.add_argument("--after-only", action="store_true", help="run only the variant with the result memo")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "variant_cost.json")
    args = parser.parse_args()
    variant = args.variant or ["+train_student.per_mode.distilwhisper.seed=1"]
    if not (read_params(ROOT / "params.yaml").get("benchmark") or {}).get("run_memo"):
        raise SystemExit(
            "variant_cost: params.yaml sets no benchmark.run_memo; the run a variant starts from must keep its runs "
            "there (set it, then make repro and commit dvc.lock)"
        )
    status = subprocess.run(["dvc", "status"], cwd=ROOT, capture_output=True, text=True).stdout
    if "up to date" not in status:
        raise SystemExit(
            f"variant_cost: `dvc status` is not clean; run `make repro` and commit dvc.lock first:\n{status}"
        )
    if subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "dvc.lock", "params.yaml"], cwd=ROOT).returncode:
        raise SystemExit("variant_cost: dvc.lock or params.yaml differs from the last commit, which a temporary "
                         "experiment starts from; commit them first")  # fmt: skip
    runs = [] if args.after_only else [exp_run([*variant, "benchmark.run_memo=null"], "before (no result memo)")]
    runs.append(exp_run(variant, "after (result memo)"))
    for run in runs:
        if run["experiment"]:
            gone = subprocess.run(["dvc", "exp", "remove", run["experiment"]], cwd=ROOT, capture_output=True, text=True)
            if gone.returncode:
                print(f"variant_cost: could not remove experiment {run['experiment']}: {gone.stderr.strip()}")
    params = read_params(ROOT / "params.yaml")
    here = machine()
    result = {
        "provenance": provenance(
            ROOT,
            "python bench/variant_cost.py "
            + " ".join(f"--set {v}" for v in variant)
            + (" --after-only" if args.after_only else ""),
            {
                "corpus": corpus_id(params["prepare_data"]),
                "corpus_name": "Festival ca/cs/fi",
                "params": params_id(params),
                "machine": f"{here['cpu']} ({here['cpu_id']}), {here['cores']} cores",
            },
        ),  # fmt: skip
        "machine": here,
        "variant": variant,
        "runs": runs,
        "ratio_after_to_before": round(runs[1]["wall_seconds"] / runs[0]["wall_seconds"], 3)
        if len(runs) == 2
        else None,
    }
    print(f"\n{'run':<26} {'wall s':>8}  stages (s)")
    for run in runs:
        stages = ", ".join(f"{k} {v:.0f}" for k, v in run["stage_seconds"].items())
        print(f"{run['label']:<26} {run['wall_seconds']:>8.1f}  {stages}")
    if result["ratio_after_to_before"] is not None:
        print(f"after / before: {result['ratio_after_to_before']:.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
