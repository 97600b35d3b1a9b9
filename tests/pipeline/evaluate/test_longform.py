"""Long-form recordings (exact boundaries) and their scoring: whole-recording error, start errors, loops, empties."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest

from pipeline.core.errors import DwPipeError
from pipeline.data.audio import SAMPLE_RATE, read_wav
from pipeline.data.manifest import load_manifest
from pipeline.data.recordings import LongformRecordings, build_recordings
from pipeline.evaluate.longform import LongformConfig, compression_ratio, run_longform, score_recording
from tests.conftest import write_bench_inputs, write_tiny_manifest


def test_recordings_join_held_out_utterances_with_known_boundaries(tmp_path, caplog):
    manifest = write_tiny_manifest(tmp_path, "test.jsonl")
    utts = [u for u in load_manifest(manifest)]
    utts = [type(u)(**{**u.__dict__, "split": "test"}) for u in utts]
    cfg = LongformRecordings(languages=("pl", "cs"), min_seconds=2.0, max_seconds=4.5, gap=(0.5, 0.5), recordings=2)
    records = build_recordings(utts, tmp_path, cfg, seed=0)
    pl = [u for u in utts if u.language == "pl"]  # 0.8 s, 1.2 s, 2.0 s
    # pl: 0.8 + 0.5 + 1.2 s, then 2.0 s alone (with it the first would pass 4.5 s); cs: 1.4 + 0.5 + 1.8 s
    assert [r["id"] for r in records] == ["pl-longform-000", "pl-longform-001", "cs-longform-000"]
    first = records[0]
    assert [s["id"] for s in first["segments"]] == [pl[0].id, pl[1].id] and first["duration"] == 2.5
    audio = read_wav(tmp_path / first["audio"])
    assert len(audio) / SAMPLE_RATE == pytest.approx(first["duration"], abs=1e-3)
    for seg in first["segments"]:
        original = read_wav(tmp_path / next(u.audio for u in utts if u.id == seg["id"]))
        at = round(seg["start"] * SAMPLE_RATE)
        assert np.array_equal(audio[at : at + len(original)], original)
        assert seg["end"] - seg["start"] == pytest.approx(len(original) / SAMPLE_RATE, abs=1e-3)
    gaps = [b["start"] - a["end"] for a, b in zip(first["segments"], first["segments"][1:])]
    assert gaps and all(g == pytest.approx(0.5, abs=1e-3) for g in gaps)
    assert first["text"] == " ".join(s["text"] for s in first["segments"])
    too_short = LongformRecordings(languages=("de",), min_seconds=9, max_seconds=20)
    with caplog.at_level("WARNING"):
        assert build_recordings(utts, tmp_path, too_short, seed=0) == []
    assert "the test utterances of de fill no recording of 9-20 s" in caplog.text


RECORD = {
    "language": "en",
    "duration": 70.0,
    "text": "the cat sat on the mat the dog ran far away birds fly south",
    "segments": [
        {"start": 1.0, "end": 4.0, "text": "the cat sat on the mat"},
        {"start": 31.0, "end": 35.0, "text": "the dog ran far away"},
        {"start": 61.0, "end": 65.0, "text": "birds fly south"},
    ],
}


def test_a_recording_is_scored_over_its_whole_text_with_start_errors_loops_and_empties():
    loop = " the the the the the the the the the the the the the the the the the the the the the the"
    segments = [(1.5, 4.0, "The cat sat on the mat."), (31.0, 40.0, "The dog ran far away." + loop)]
    scored = score_recording(RECORD, segments, loop_ratio=2.4)
    assert scored["counts"].ref_units == 14 and scored["counts"].hits == 11  # "birds fly south" missed
    assert scored["counts"].rate == pytest.approx(22 / 14)
    assert scored["start_errors"] == [0.5, 0.0, 30.0]  # the third segment's nearest hypothesis start is 31.0
    assert scored["stretches"] == 3 and scored["loops"] == 1 and scored["empties"] == 1
    assert compression_ratio("The dog ran far away." + loop) > 2.4 > compression_ratio("The cat sat on the mat.")
    nothing = score_recording(RECORD, [], loop_ratio=2.4)
    assert nothing["empties"] == 3 and all(math.isnan(e) for e in nothing["start_errors"])


def test_every_ct2_model_transcribes_the_recordings_under_both_settings(tmp_path, tiny_hf_dir, monkeypatch):
    inputs = write_bench_inputs(tmp_path, tiny_hf_dir, seed=4)
    utts = [type(u)(**{**u.__dict__, "split": "test"}) for u in load_manifest(inputs["test"])]
    records = build_recordings(utts, tmp_path, LongformRecordings(("pl", "cs"), min_seconds=2, max_seconds=40), seed=0)
    manifest = tmp_path / "longform.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in records))
    cfg = LongformConfig(manifest, inputs["ct2"], tmp_path / "longform", compute_types=("float32", "int8"))
    run_longform(cfg)
    rows = json.loads((cfg.out_dir / "metrics.json").read_text())["rows"]
    keys = {(r["model"], r["compute_type"], r["setting"], r["language"]) for r in rows}
    assert keys == {
        ("ct2:teacher", t, s, lang) for t in ("float32", "int8") for s in ("default", "greedy") for lang in ("pl", "cs")
    }
    for r in rows:
        assert r["dataset"] == "longform" and r["ref_units"] > 0 and r["stretches"] >= 1 and r["rtfx"] > 0
    hyps = [json.loads(x) for x in (cfg.out_dir / "hypotheses.jsonl").read_text().splitlines()]
    assert len(hyps) == 2 * 2 * 2 and all("segments" in h for h in hyps)
    # the default setting's temperature fallback samples: seeded, a re-run gives the same hypotheses
    again = replace(cfg, out_dir=tmp_path / "again")
    run_longform(again)
    assert (again.out_dir / "hypotheses.jsonl").read_text() == (cfg.out_dir / "hypotheses.jsonl").read_text()
    # with a run memo, an unchanged model is not transcribed again; another seed is another input
    from pipeline.evaluate import longform

    calls = []
    real = longform.transcribe
    monkeypatch.setattr(longform, "transcribe", lambda *a: calls.append(a[2]) or real(*a))
    kept = replace(cfg, out_dir=tmp_path / "kept", run_memo=tmp_path / "memo")
    run_longform(kept)
    assert len(calls) == 8
    assert run_longform(replace(kept, out_dir=tmp_path / "kept2"))["kept"] == 2 and len(calls) == 8
    assert (tmp_path / "kept2" / "hypotheses.jsonl").read_text() == (cfg.out_dir / "hypotheses.jsonl").read_text()
    rows2 = json.loads((tmp_path / "kept2" / "metrics.json").read_text())["rows"]
    assert all(r["decoded_at"] for r in rows2)
    # the loop threshold only scores: the kept transcriptions are scored again, not transcribed again
    rescored = run_longform(replace(kept, out_dir=tmp_path / "kept3", loop_ratio=0.5))
    assert rescored["kept"] == 2 and len(calls) == 8
    rows3 = json.loads((tmp_path / "kept3" / "metrics.json").read_text())["rows"]
    assert sum(r["loop_stretches"] for r in rows3) > sum(r["loop_stretches"] for r in rows2)
    run_longform(replace(kept, seed=1))
    assert len(calls) == 16
    with pytest.raises(DwPipeError, match=r"longform.settings \['beam9'\]"):
        run_longform(
            LongformConfig(manifest=manifest, ct2_dir=inputs["ct2"], out_dir=tmp_path / "x", settings=("beam9",))
        )
