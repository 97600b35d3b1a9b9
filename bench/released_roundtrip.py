"""The released-student import on real weights: a trained student written in the official layout, imported back.

    python bench/released_roundtrip.py [--student data/students/distilwhisper] [--per-language 4]
                                       [--out bench/results/released_roundtrip.json]

The paper's students cannot be downloaded here (no Hub), so this checks the
import path (pipeline/student/official.py) at whisper-base size on what this
machine has, after `dvc repro train_student`:

1. the trained student is written in the official code's layout
   (naver/multilingual-distilwhisper, model/DistilWhisper.py): config.json
   with ``model_type: distilwhisper`` and its CLSR fields, pytorch_model.bin
   with every FFN under ``ffn_clsr.proj.shared``, and ``expert.<name>.bin``
   per language (``catalan``...), names written here from the official code;
2. it is imported with ``import_official``, as ``dw-pipe import-student`` does;
3. teacher-forced logits of the original and the imported student are
   compared on the first --per-language dev utterances of each language
   (their references as the decoder input);
4. both students' gate rates are measured with ``student-gates``'s function
   on the whole dev set, and set beside the rates training recorded in
   dev.json (the same decode, run by training at its chosen step);
5. each language's export (static routing from those rates) of both is
   compared tensor by tensor.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.core.config import load_section  # noqa: E402
from pipeline.core.fsutil import atomic_write_text, sha256_files  # noqa: E402
from pipeline.core.machine import machine  # noqa: E402
from pipeline.data.manifest import load_manifest  # noqa: E402
from pipeline.models.clsr import clsr_layers, set_language  # noqa: E402
from pipeline.models.decode import features_for  # noqa: E402
from pipeline.report.docs import provenance  # noqa: E402
from pipeline.student.export import export_student  # noqa: E402
from pipeline.student.gates import DecodeSettings, measure_gates  # noqa: E402
from pipeline.student.model import load_student  # noqa: E402
from pipeline.student.official import import_official, language_name  # noqa: E402
from pipeline.student.train import TrainStageConfig  # noqa: E402

OFFICIAL_EXPERT = {"fc1": "proj.{name}.fc1", "fc2": "proj.{name}.fc2", "w1": "gate_in.{name}", "w2": "gate_out.{name}"}


def write_official(model, record: dict, out: Path) -> None:
    """``model`` (a loaded CLSR student) in the official layout: every layer's FFN under ``ffn_clsr.proj.shared``,
    each language's experts and gates in ``expert.<name>.bin`` under the official names."""
    out.mkdir(parents=True)
    base, experts = {}, {}
    clsr_by_name = {layer.name: layer for layer in clsr_layers(model)}
    for side in ("encoder", "decoder"):
        stack = model.model.encoder.layers if side == "encoder" else model.model.decoder.layers
        for i, layer in enumerate(stack):
            prefix = f"model.{side}.layers.{i}"
            routed = clsr_by_name.get(f"{side}.{i}")
            shared = routed.shared if routed is not None else layer
            for fc in ("fc1", "fc2"):
                for param in ("weight", "bias"):
                    base[f"{prefix}.ffn_clsr.proj.shared.{fc}.{param}"] = getattr(getattr(shared, fc), param)
            for code in record["languages"] if routed is not None else ():
                name = language_name(code)
                parts = {
                    "fc1": routed.experts[code].fc1,
                    "fc2": routed.experts[code].fc2,
                    "w1": routed.gates[code].w1,
                    "w2": routed.gates[code].w2,
                }
                for short, module in parts.items():
                    for param, value in module.named_parameters():
                        key = f"{prefix}.ffn_clsr.{OFFICIAL_EXPERT[short].format(name=name)}.{param}"
                        experts.setdefault(name, {})[key] = value
    for key, value in model.state_dict().items():
        if ".fc1." not in key and ".fc2." not in key and key != "proj_out.weight":
            base[key] = value
    torch.save({k: v.detach().clone().contiguous() for k, v in base.items()}, out / "pytorch_model.bin")
    for name, tensors in experts.items():
        torch.save({k: v.detach().clone().contiguous() for k, v in tensors.items()}, out / f"expert.{name}.bin")
    config = model.config.to_dict()
    config |= {
        "model_type": "distilwhisper",
        "architectures": ["DistilWhisperForConditionalGeneration"],
        "clsr_langs": [],
        "clsr_gate_dim": record["clsr"]["gate_hidden"],
        "skip_gate_prob": record["clsr"]["skip_gate_prob"],
        "clsr_max_steps": 10000,
        "clsr_residual": False,
        "use_gate_budget": True,
        "gate_budget": record["clsr"]["budget"],
    }
    (out / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")


def logit_gaps(original: Path, imported: Path, dev: Path, per_language: int) -> dict[str, dict]:
    from transformers import WhisperFeatureExtractor, WhisperTokenizer

    a, record = load_student(original)
    b, _ = load_student(imported)
    base = Path(record["base"])
    tokenizer, extractor = WhisperTokenizer.from_pretrained(base), WhisperFeatureExtractor.from_pretrained(base)
    utts = load_manifest(dev)
    out = {}
    for code in record["languages"]:
        chosen = [u for u in utts if u.language == code][:per_language]
        worst, positions = 0.0, 0
        for u in chosen:
            feats = features_for(extractor, [u], dev.parent)
            tokenizer.set_prefix_tokens(language=code, task="transcribe", predict_timestamps=False)
            ids = torch.tensor([tokenizer(u.text).input_ids])
            for model in (a, b):
                set_language(model, code)
            with torch.no_grad():
                la = a(input_features=feats, decoder_input_ids=ids).logits
                lb = b(input_features=feats, decoder_input_ids=ids).logits
            worst, positions = max(worst, float((la - lb).abs().max())), positions + ids.shape[1]
        out[code] = {"utterances": len(chosen), "positions": positions, "max_abs_logit_gap": worst}
    return out


def same_tensors(a: Path, b: Path) -> bool:
    from safetensors.torch import load_file

    ta, tb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", type=Path, default=ROOT / "data/students/distilwhisper")
    parser.add_argument("--per-language", type=int, default=4)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/released_roundtrip.json")
    args = parser.parse_args()
    train = load_section(TrainStageConfig, "train_student", ROOT / "params.yaml").configs()[0]
    dev = ROOT / train.dev
    settings = DecodeSettings(train.eval_batch_size, train.max_new_tokens)
    model, record = load_student(args.student)
    trained_rates = json.loads((args.student / "dev.json").read_text())["gate_rates"]
    rows, started = {}, time.perf_counter()
    with tempfile.TemporaryDirectory(dir=ROOT / "data") as tmp:
        tmp = Path(tmp)
        write_official(model, record, tmp / "official")
        del model
        import_official(f"distilwhisper:{tmp / 'official'}", tmp / "imported", processor=record["base"])
        gaps = logit_gaps(args.student, tmp / "imported", dev, args.per_language)
        copy = tmp / "original"  # student-gates writes dev.json: measure the original in a copy
        copy.mkdir()
        for f in args.student.iterdir():
            if f.is_file():
                (copy / f.name).write_bytes(f.read_bytes())
        measured = {
            "original": measure_gates(copy, dev, settings)["gate_rates"],
            "imported": measure_gates(tmp / "imported", dev, settings)["gate_rates"],
        }
        for code in record["languages"]:
            imported_layers = measured["imported"][code]
            rate_gap = max(abs(imported_layers[k] - v) for k, v in measured["original"][code].items())
            trained_gap = max(abs(imported_layers[k] - v) for k, v in trained_rates[code].items())
            export_student(copy, code, tmp / f"x-original-{code}")
            export_student(tmp / "imported", code, tmp / f"x-imported-{code}")
            rows[code] = {
                **gaps[code],
                "max_gate_rate_gap_vs_original": rate_gap,
                "max_gate_rate_gap_vs_training_dev_json": trained_gap,
                "exports_identical": same_tensors(tmp / f"x-original-{code}", tmp / f"x-imported-{code}"),
            }
    seconds = time.perf_counter() - started
    result = {
        "provenance": provenance(
            ROOT,
            "python bench/released_roundtrip.py " + shlex.join(sys.argv[1:]),
            {
                "student_sha256": sha256_files(sorted(args.student.glob("*.safetensors"))),
                "dev_manifest_sha256": sha256_files([dev]),
            },
        ),
        "machine": machine(),
        "student": str(args.student.relative_to(ROOT) if args.student.is_relative_to(ROOT) else args.student),
        "decoding": {"eval_batch_size": settings.eval_batch_size, "max_new_tokens": settings.max_new_tokens},
        "seconds": round(seconds, 1),
        "languages": rows,
    }
    print(
        f"{'lang':5} {'utts':>4} {'positions':>9} {'max |logit gap|':>16} {'gate gap':>9} {'vs dev.json':>11} exports"
    )
    for code, r in rows.items():
        print(
            f"{code:5} {r['utterances']:4d} {r['positions']:9d} {r['max_abs_logit_gap']:16.3g} "
            f"{r['max_gate_rate_gap_vs_original']:9.3g} {r['max_gate_rate_gap_vs_training_dev_json']:11.3g} "
            f"{'identical' if r['exports_identical'] else 'DIFFER'}"
        )
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(f"{args.out} ({seconds:.0f} s)")


if __name__ == "__main__":
    main()
