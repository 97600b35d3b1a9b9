"""The report's teacher-label section: each student's labels scored against an embedded pool's withheld texts."""

from __future__ import annotations

import json

from pipeline.report.pool_labels import pool_label_section


def _student(folder, labels: dict[str, str], filtered: dict[str, str], with_labels: bool = True):
    folder.mkdir(parents=True)
    record = {
        "read": len(labels),
        "kept": len(labels) - len(filtered),
        "filtered": len(filtered),
        "rows": [{"id": i, "language": "ca", "reason": r} for i, r in filtered.items()],
    }
    if with_labels:
        record["labels"] = [{"id": i, "language": "ca", "text": t} for i, t in labels.items()]
    (folder / "teacher_labels.json").write_text(json.dumps(record))
    return str(folder)


def test_each_students_labels_are_scored_over_every_row_and_the_kept_ones(tmp_path):
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    texts = {"u1": "un dos tres quatre", "u2": "cinc sis"}
    (prepared / "unlabelled_texts.jsonl").write_text(
        "".join(json.dumps({"id": i, "language": "ca", "text": t}) + "\n" for i, t in texts.items())
    )
    labels = {"u1": "un dos tres quatre", "u2": "set vuit"}  # u1 right; u2 two words wrong of two
    students = {
        "kd-pool": _student(tmp_path / "kd-pool", labels, {"u2": "average log-probability: -1.20 < -1.0"}),
        "old": _student(tmp_path / "old", labels, {}, with_labels=False),  # trained before labels were recorded
        "kd": str(tmp_path / "kd"),  # no teacher labels: not in the section
    }
    lines = pool_label_section(students, prepared)
    assert lines[0] == "## Teacher labels the students trained on"
    assert "- old: 2 of 2 rows kept; no withheld texts to score its labels against." in lines
    assert "| kd-pool | ca | 2 | 33.3 | 1 of 2 | 0.0 | average log-probability 1 |" in lines  # 2 errors of 6 words
    assert not any(line.startswith("| kd |") for line in lines)
    assert pool_label_section({"kd": str(tmp_path / "kd")}, prepared) == []
    no_texts = pool_label_section({"kd-pool": students["kd-pool"]}, tmp_path / "elsewhere")
    assert "- kd-pool: 1 of 2 rows kept; no withheld texts to score its labels against." in no_texts
    (prepared / "unlabelled_texts.jsonl").write_text(json.dumps({"id": "u1", "language": "ca", "text": texts["u1"]}))
    some = pool_label_section({"kd-pool": students["kd-pool"]}, prepared)  # u2's text missing: not scored at all
    assert "- kd-pool: 1 of 2 rows kept; no withheld texts to score its labels against." in some
