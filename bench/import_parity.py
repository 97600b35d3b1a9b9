"""Is the imported embedded whisper-base exactly the model it came from?

    python bench/import_parity.py [--out bench/results/import_parity.json]

1. imports embedded:whisper-base (CTranslate2, float16) into an HF checkpoint;
2. re-converts that checkpoint with CTranslate2's own converter at float16
   and compares every variable of the original model.bin, bit for bit;
3. speaks two sentences in each of ten languages with espeak-ng, computes
   one set of log-mel features (transformers' WhisperFeatureExtractor), and
   decodes them greedily with transformers (float32) and with CTranslate2
   (float32, the original model.bin); counts the utterances whose token ids
   agree up to the shorter sequence.

Prints a table and writes JSON. Needs espeak-ng and the embedded weights.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.core.fsutil import atomic_write_text  # noqa: E402
from pipeline.models.parity import run_import_parity  # noqa: E402
from pipeline.report.docs import provenance  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/import_parity.json"))
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        report = run_import_parity(args.work or Path(scratch), progress=True)
    report["wall_seconds"] = round(time.perf_counter() - start, 1)
    data = {"model": "embedded:whisper-base", "speech": "espeak-ng", "utterances": report["utterances"]}
    report = {
        "provenance": provenance(ROOT, "python bench/import_parity.py " + shlex.join(sys.argv[1:]), data)
    } | report
    print(f"{'check':<44} {'result':>20}")
    print(f"{'variables compared (fp16 re-conversion)':<44} {report['variables_compared']:>20}")
    print(f"{'variables differing':<44} {len(report['variables_different']):>20}")
    print(
        f"{'missing / extra variables':<44} {len(report['variables_missing']):>9} / {len(report['variables_extra']):<8}"
    )
    print(f"{'greedy agreement (transformers vs CT2 fp32)':<44} {report['agree']:>14} of {report['utterances']:<3}")
    for row in report["per_utterance"]:
        mark = "ok" if row["agree"] else "DIFFERS"
        print(f"  {row['id']:<10} {row['language']:<3} hf={row['hf_len']:>4} ct2={row['ct2_len']:>4} {mark}")
    atomic_write_text(args.out, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {args.out} ({report['wall_seconds']} s)")


if __name__ == "__main__":
    main()
