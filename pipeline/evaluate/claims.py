"""What a benchmark's numbers claim to come from, and the check that they do.

The benchmark writes, beside its rows, what each trained model was made
from (``metrics.json: made_from``): the content fingerprints its training
recorded (``student.json: inputs``: base weights, train and dev manifests,
and the teacher cache for a distilling mode) and the fingerprints of the
test manifests and audio it decoded. A CTranslate2 export carries its
student's (``export.json: trained_from``).

The report checks those claims against the files it is pointed at (the
cache, the training manifest, the base model, the test manifests) and
refuses, in one line, a comparison whose students came from another cache,
corpus or base than the one it names: an experiment run with a changed
cache or corpus whose benchmark was not rerun, or a student folder brought
in from elsewhere. ``metrics/compare.json`` then names what it was made
from (short fingerprints), so ``dvc exp show`` shows it per experiment.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.errors import DwPipeError
from pipeline.core.fsutil import sha256_files

# student.json "inputs" key -> (what it names in messages, its short name in compare.json)
CLAIMED = {
    "cache_sha256": ("teacher cache", "cache"),
    "train_manifest_sha256": ("training manifest", "train"),
    "base_weights_sha256": ("base model weights", "base"),
}


def model_claims(students: dict[str, str], ct2_dir: str | Path) -> dict[str, dict[str, str]]:
    """``{model name as rows name it: the inputs its training recorded}`` for the PyTorch students
    (``student-<mode>``) and the CTranslate2 conversions of exports (``ct2:<name>``, one entry per folder's
    model name); models without a training record (the teacher, the untrained student) are left out."""
    claims: dict[str, dict[str, str]] = {}
    for mode, folder in sorted(students.items()):
        record = Path(folder) / "student.json"
        if record.is_file():
            claims[f"student-{mode}"] = json.loads(record.read_text(encoding="utf-8")).get("inputs", {})
    for quantized in sorted(Path(ct2_dir).glob("*/quantize.json")) if Path(ct2_dir).is_dir() else []:
        info = json.loads(quantized.read_text(encoding="utf-8"))
        export = Path(info["source"]) / "export.json"
        if export.is_file():
            name = quantized.parent.name[: -len(info["requested_compute_type"]) - 1]
            claims[f"ct2:{name}"] = json.loads(export.read_text(encoding="utf-8")).get("trained_from", {})
    return claims


@dataclass(frozen=True)
class Inputs:
    """The files a report names as its inputs; None: not checked."""

    cache: Path | None = None
    train: Path | None = None
    base: Path | None = None

    def fingerprints(self) -> dict[str, str]:
        """Today's fingerprints of these files, under the keys ``student.json: inputs`` uses."""
        from pipeline.cache.reader import cache_fingerprint

        out = {}
        if self.cache is not None:
            if not (Path(self.cache) / "cache.json").is_file():
                raise DwPipeError(f"report: {self.cache} holds no finished teacher cache (cache.json)")
            out["cache_sha256"] = cache_fingerprint(Path(self.cache))
        if self.train is not None:
            out["train_manifest_sha256"] = sha256_files([Path(self.train)])
        if self.base is not None:
            weights = sorted(Path(self.base).glob("*.safetensors"))
            if not weights:
                raise DwPipeError(f"report: base {self.base} holds no .safetensors weights")
            out["base_weights_sha256"] = sha256_files(weights)
        return out


def check_claims(metrics: dict, inputs: Inputs) -> dict[str, str]:
    """Refuse (one line) a benchmark whose trained models or test sets came from other inputs than ``inputs``
    and the test manifests named in its config; returns short fingerprints of what it was made from."""
    made_from = metrics.get("made_from")
    if made_from is None:
        raise DwPipeError(
            "report: the benchmark's metrics.json says nothing of what its models were trained from (made by an "
            "older benchmark); run the benchmark again (dvc repro benchmark)"
        )
    now = inputs.fingerprints()
    wrong = []
    for model, claim in sorted(made_from.get("models", {}).items()):
        for key, value in sorted(claim.items()):
            if key in now and value != now[key]:
                wrong.append(f"{model} was trained from another {CLAIMED[key][0]} ({value[:12]}, now {now[key][:12]})")
    datasets = (metrics.get("config") or {}).get("datasets", {})
    for name, claim in sorted(made_from.get("datasets", {}).items()):
        path = Path(datasets.get(name, ""))
        if not path.is_file():
            wrong.append(f"test set {name}: its manifest {path} is gone")
        elif sha256_files([path]) != claim["manifest_sha256"]:
            wrong.append(f"test set {name} was decoded from another manifest than {path} holds now")
    if wrong:
        more = f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""
        raise DwPipeError(f"report: {wrong[0]}{more}; rerun what made them (dvc repro)")
    summary = {CLAIMED[k][1]: v[:12] for k, v in now.items()}
    summary |= {f"test_{name}": claim["manifest_sha256"][:12] for name, claim in sorted(made_from["datasets"].items())}
    return summary
