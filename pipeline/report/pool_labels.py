"""The report's section on teacher labels: how good the labels were that each student trained on.

A student trained with ``teacher_labels`` records every unlabelled row's label and the rows its filters left out
(``teacher_labels.json``, pipeline/student/pseudo.py). Where the pool's texts were withheld (an embedded pool:
prepare_data's ``unlabelled_texts.jsonl``), the labels are scored against them, per language, over every row and
over the rows the student kept. Real untranscribed speech has no such texts; the section then says so.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.core.scoring import score_labels
from pipeline.data.manifest import WITHHELD_TEXTS


def label_rows(languages: dict[str, dict]) -> list[list[str]]:
    """Per language: the teacher's labels' error rate over every row and over the rows the filters keep."""
    return [
        [
            lang,
            str(r["utterances"]),
            _pct(r["error_rate_all"]),
            f"{r['kept']} of {r['utterances']}",
            "-" if r["error_rate_kept"] is None else _pct(r["error_rate_kept"]),
            ", ".join(f"{k} {v}" for k, v in r["filtered"].items()) or "none",
        ]
        for lang, r in languages.items()
    ]


LABEL_HEAD = [
    "language",
    "utts",
    "error rate % of the teacher's labels",
    "kept by the filters",
    "error rate % kept",
    "filtered",
]


def _pct(rate: float) -> str:
    return f"{100 * rate:.1f}"


def pool_label_section(students: dict[str, str], prepared: Path | None) -> list[str]:
    """Markdown lines (none when no student trained on teacher labels)."""
    records = {}
    for name, folder in sorted(students.items()):
        path = Path(folder) / "teacher_labels.json"
        if path.is_file():
            records[name] = json.loads(path.read_text(encoding="utf-8"))
    if not records:
        return []
    lines = ["## Teacher labels the students trained on", ""]
    withheld_file = Path(prepared) / WITHHELD_TEXTS if prepared else None
    withheld = {}
    if withheld_file and withheld_file.is_file():
        rows = (json.loads(line) for line in withheld_file.read_text(encoding="utf-8").splitlines())
        withheld = {r["id"]: r["text"] for r in rows}
    table = []
    for name, record in records.items():
        kept = f"{record['kept']} of {record['read']} rows kept"
        if "labels" not in record or any(r["id"] not in withheld for r in record["labels"]):
            lines.append(f"- {name}: {kept}; no withheld texts to score its labels against.")
            continue
        reasons = {r["id"]: r["reason"] for r in record["rows"]}
        scored = score_labels(
            ((r["id"], r["language"], r["text"], reasons.get(r["id"])) for r in record["labels"]), withheld
        )
        table += [[name, *row] for row in label_rows(scored)]
    if table:
        lines += [
            "The teacher's labels of the unlabelled pool, scored against its withheld texts (which no stage trains "
            "or selects on): error rate in % over every label, and over the labels the student's filters kept.",
            "",
        ]
        head = ["student", *LABEL_HEAD]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(row) + " |" for row in table]
    return lines + [""]
