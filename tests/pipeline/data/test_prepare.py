"""prepare_data: every source yields kept + rejected = read, with reasons; the synthetic corpus is sound."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile

from pipeline.core.errors import DwPipeError
from pipeline.core.fsutil import partial_dir
from pipeline.core.languages import by_resource_level, whisper_training_hours
from pipeline.data.audio import read_wav, write_wav
from pipeline.data.manifest import load_manifest
from pipeline.data.prepare import HFSourceConfig, PrepareDataConfig, prepare_data
from pipeline.data.synthetic import LanguageTexts, SyntheticConfig

SENTENCES = {
    "pl": [
        f"To jest zdanie numer {w} w naszym teście."
        for w in ("jeden", "dwa", "trzy", "cztery", "pięć", "sześć", "siedem", "osiem", "dziewięć", "dziesięć")
    ],
    "de": [
        f"Das ist der Satz {w} in unserem Test."
        for w in ("eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht")
    ],
}


def _fortunes(root: Path) -> Path:
    for lang, sentences in SENTENCES.items():
        (root / lang).mkdir(parents=True)
        half = len(sentences) // 2 + 1
        (root / lang / "main").write_text("\n%\n".join(sentences[:half]) + "\n\t\t-- Autor\n%\n", encoding="utf-8")
        (root / lang / "other").write_text(
            "\n%\n".join(sentences[half:]) + "\n%\nhttp://example.com 123 <b>\n", encoding="utf-8"
        )
    return root


def _config(tmp_path: Path, model: Path, **overrides) -> PrepareDataConfig:
    synthetic = SyntheticConfig(
        fortunes_root=_fortunes(tmp_path / "fortunes"),
        languages=("pl", "de"),
        targets=("pl",),
        target_sizes={"train": 3, "dev": 1, "test": 1, "test_ood": 2},
        other_sizes={"train": 0, "dev": 0, "test": 2, "test_ood": 1},
        texts={lang: LanguageTexts((f"{lang}/main",), (f"{lang}/other",)) for lang in SENTENCES},
        voices={"train": ("m1", "f1"), "dev": ("m2",), "test": ("f2",), "test_ood": ("m3", "f3")},
    )
    base = PrepareDataConfig(
        source="synthetic",
        out_dir=tmp_path / "prepared",
        model=model,
        seed=7,
        workers=2,
        synthetic=synthetic,
        hf=HFSourceConfig(splits={"train": "train"}),
    )
    return replace(base, **overrides)


def _manifests(out: Path) -> dict[str, list]:
    return {s: load_manifest(out / f"{s}.jsonl") for s in ("train", "dev", "test", "test_ood")}


def test_synthetic_corpus_is_disjoint_deterministic_and_16k(tmp_path, tiny_hf_dir):
    cfg = _config(tmp_path, tiny_hf_dir)
    summary = prepare_data(cfg)
    assert summary["read"] == summary["kept"] == 3 + 1 + 1 + 2 + 2 + 1 and summary["rejected"] == 0
    manifests = _manifests(cfg.out_dir)
    texts = {s: {u.text for u in us} for s, us in manifests.items()}
    voices = {s: {u.speaker for u in us} for s, us in manifests.items()}
    splits = list(texts)
    for i, a in enumerate(splits):
        for b in splits[i + 1 :]:
            assert not texts[a] & texts[b], (a, b)
            assert not voices[a] & voices[b], (a, b)
    ood_texts = {u.text for u in manifests["test_ood"]}
    assert ood_texts <= set(SENTENCES["pl"][6:]) | set(SENTENCES["de"][5:])
    first = manifests["train"][0]
    rate, data = wavfile.read(cfg.out_dir / first.audio)
    assert rate == 16_000 and data.ndim == 1 and abs(len(data) / rate - first.duration) < 1e-3
    assert {u.gender for us in manifests.values() for u in us} <= {"male", "female"}
    assert summary["text_filter"]["pl"]["digits, markup or symbols"] >= 1
    again = _config(tmp_path / "again", tiny_hf_dir)
    prepare_data(again)
    assert (again.out_dir / "train.jsonl").read_text() == (cfg.out_dir / "train.jsonl").read_text()
    other_seed = _config(tmp_path / "seed", tiny_hf_dir, seed=8)
    prepare_data(other_seed)
    assert (other_seed.out_dir / "train.jsonl").read_text() != (cfg.out_dir / "train.jsonl").read_text()


def test_one_language_can_have_its_own_split_sizes(tmp_path, tiny_hf_dir):
    """sizes_by_language overrides the target / other sizes of one language, split by split."""
    from pipeline.data.synthetic import plan_corpus

    cfg = _config(tmp_path, tiny_hf_dir).synthetic
    cfg = replace(cfg, sizes_by_language={"pl": {"test": 2}, "de": {"test_ood": 0}})
    assert cfg.sizes("pl") == {"train": 3, "dev": 1, "test": 2, "test_ood": 2}
    items, _ = plan_corpus(cfg, seed=7)
    count = {(i.language, i.split): 0 for i in items}
    for i in items:
        count[(i.language, i.split)] += 1
    assert count[("pl", "test")] == 2 and ("de", "test_ood") not in count and count[("de", "test")] == 2


def test_an_unlabelled_pool_withholds_its_texts_and_changes_no_other_split(tmp_path, tiny_hf_dir):
    """A size for split unlabelled: in-domain sentences no split drew, spoken by the train voices, rows without
    text, the texts written apart; every other split is what it was without the pool."""
    plain = _config(tmp_path / "plain", tiny_hf_dir)
    prepare_data(plain)
    cfg = _config(tmp_path, tiny_hf_dir)
    pooled = replace(cfg.synthetic, target_sizes={**cfg.synthetic.target_sizes, "unlabelled": 1})
    summary = prepare_data(replace(cfg, synthetic=pooled))
    for split in ("train", "dev", "test", "test_ood", "translate"):
        assert (cfg.out_dir / f"{split}.jsonl").read_text() == (plain.out_dir / f"{split}.jsonl").read_text(), split
    (row,) = load_manifest(cfg.out_dir / "unlabelled.jsonl")
    assert row.text == "" and row.language == "pl" and summary["by_split"]["unlabelled"]["utterances"] == 1
    assert row.speaker in {u.speaker for u in load_manifest(cfg.out_dir / "train.jsonl")}
    (withheld,) = [json.loads(line) for line in (cfg.out_dir / "unlabelled_texts.jsonl").read_text().splitlines()]
    assert withheld["id"] == row.id and withheld["text"] in SENTENCES["pl"][:6]
    assert withheld["text"] not in {u.text for us in _manifests(cfg.out_dir).values() for u in us}
    assert (plain.out_dir / "unlabelled_texts.jsonl").read_text() == ""
    too_many = replace(cfg.synthetic, target_sizes={**cfg.synthetic.target_sizes, "unlabelled": 2})
    with pytest.raises(DwPipeError, match="only 1 in-domain sentences no other split uses for 2 unlabelled"):
        prepare_data(replace(cfg, out_dir=tmp_path / "more", synthetic=too_many))


def test_shared_voice_between_splits_is_refused(tmp_path, tiny_hf_dir):
    cfg = _config(tmp_path, tiny_hf_dir)
    cfg = replace(cfg, synthetic=replace(cfg.synthetic, voices={**cfg.synthetic.voices, "dev": ("m1",)}))
    with pytest.raises(DwPipeError, match="m1 is in both train and dev"):
        prepare_data(cfg)


def test_too_few_sentences_is_a_clear_error(tmp_path, tiny_hf_dir):
    cfg = _config(tmp_path, tiny_hf_dir)
    cfg = replace(cfg, synthetic=replace(cfg.synthetic, target_sizes={"train": 50}))
    with pytest.raises(DwPipeError, match="only .* clean sentences left for 50 train"):
        prepare_data(cfg)


def _speech(seconds: float, rate: int = 16_000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32) / 2


def _local_manifest(root: Path) -> tuple[Path, int, dict[str, str]]:
    """A manifest with one good line and one line for each rejection reason."""
    data = root / "corpus"
    (data / "a").mkdir(parents=True)
    write_wav(data / "a" / "good.wav", _speech(1.0))
    write_wav(data / "a" / "good44.wav", _speech(1.0, 44_100), rate=44_100)
    write_wav(data / "a" / "silent.wav", np.zeros(16_000, dtype=np.float32))
    write_wav(data / "a" / "long.wav", _speech(31.0))
    (data / "a" / "corrupt.wav").write_bytes(b"RIFF\x00\x00not really a wav file")
    (data / "a" / "empty.wav").write_bytes(b"")
    outside = root / "outside.wav"
    write_wav(outside, _speech(1.0))

    def row(uid, audio="a/good.wav", text="dobry wieczór", language="pl", split="train"):
        return json.dumps(
            {"id": uid, "audio": audio, "text": text, "language": language, "split": split, "duration": 1.0}
        )

    expected = {
        "blank": "empty or whitespace-only text",
        "empty": "empty or whitespace-only text",
        "lang": "language unknown to Whisper",
        "split": "unknown split",
        "abs": "absolute audio path",
        "escape": "audio path escapes",
        "missing": "unreadable audio",
        "corrupt": "unreadable audio",
        "emptywav": "unreadable audio",
        "silent": "silent audio",
        "long": "duration over 30 s",
        "tokens": "text too long for the decoder",
    }
    lines = [
        row("ok"),
        row("ok44", audio="a/good44.wav", split="test"),
        row("blank", text="   "),
        row("empty", text=""),
        row("lang", language="xx"),
        row("split", split="holdout"),
        row("abs", audio=str(data / "a" / "good.wav")),
        row("escape", audio="../outside.wav"),
        row("missing", audio="a/nothing.wav"),
        row("corrupt", audio="a/corrupt.wav"),
        row("emptywav", audio="a/empty.wav"),
        row("silent", audio="a/silent.wav"),
        row("long", audio="a/long.wav"),
        row("tokens", text="słowo " * 500),
    ]
    raw = (
        ("\n".join(lines) + "\n").encode() + b'{"id": "bad-utf8", "text": "\xff\xfe"}\n' + b"{not json\n" + b"[1, 2]\n"
    )
    manifest = data / "manifest.jsonl"
    manifest.write_bytes(raw)
    return manifest, len(lines) + 3, expected


def test_unlabelled_rows_are_kept_in_their_split_and_refused_where_references_are_needed(tmp_path, tiny_hf_dir):
    """A row without text is kept in the unlabelled split (its audio and language checked like any row, a weak
    reference checked like any text) and rejected, with the fix, in train, dev and test; whatever scores or trains
    on a manifest refuses its unlabelled rows in one line."""
    from pipeline.data.manifest import load_labelled

    data = tmp_path / "corpus"
    data.mkdir()
    write_wav(data / "good.wav", _speech(1.0))
    write_wav(data / "silent.wav", np.zeros(16_000, dtype=np.float32))
    rows = {
        "pool": {"split": "unlabelled"},  # no text key at all
        "pool-null": {"split": "unlabelled", "text": None},
        "pool-blank": {"split": "unlabelled", "text": "  "},
        "pool-subtitle": {"split": "unlabelled", "text": "dobry wieczór"},
        "pool-lang": {"split": "unlabelled", "language": "xx"},
        "pool-silent": {"split": "unlabelled", "audio": "silent.wav"},
        "pool-symbols": {"split": "unlabelled", "text": "?!"},
        "dev": {"split": "dev"},
        "test": {"split": "test", "text": None},
        "train": {"split": "train"},
        "labelled": {"split": "train", "text": "dobry wieczór"},
    }
    manifest = data / "manifest.jsonl"
    manifest.write_text(
        "".join(json.dumps({"id": k, "audio": "good.wav", "language": "pl"} | v) + "\n" for k, v in rows.items())
    )
    cfg = _config(tmp_path, tiny_hf_dir, source="local", input=str(manifest))
    summary = prepare_data(cfg)
    assert (summary["read"], summary["kept"]) == (len(rows), 5)
    pool = load_manifest(cfg.out_dir / "unlabelled.jsonl")
    assert [(u.id, u.text) for u in pool] == [
        ("pool", ""),
        ("pool-null", ""),
        ("pool-blank", ""),
        ("pool-subtitle", "dobry wieczór"),
    ]
    reasons = {r["id"]: r["reason"] for r in map(json.loads, (cfg.out_dir / "rejects.jsonl").read_text().splitlines())}
    no_reference = "no reference text: split {} needs one (dev and test are scored, train is trained on); put "
    assert reasons == {
        "pool-lang": "language unknown to Whisper: 'xx'",
        "pool-silent": "silent audio",
        "pool-symbols": "no words to score: '?!' normalises to nothing (punctuation or symbols only)",
        "dev": no_reference.format("dev") + "untranscribed audio in the unlabelled split",
        "test": no_reference.format("test") + "untranscribed audio in the unlabelled split",
        "train": no_reference.format("train") + "untranscribed audio in the unlabelled split",
    }
    assert [u.id for u in load_labelled(cfg.out_dir / "train.jsonl", "training")] == ["labelled"]
    with pytest.raises(DwPipeError) as refused:
        load_labelled(cfg.out_dir / "unlabelled.jsonl", "scoring")
    assert str(refused.value) == (
        f"{cfg.out_dir / 'unlabelled.jsonl'}: 4 row(s) without a reference text (first: pool, split unlabelled); "
        "scoring needs references"
    )


def test_local_manifest_rejects_each_bad_item_with_its_reason(tmp_path, tiny_hf_dir):
    manifest, n_lines, expected = _local_manifest(tmp_path)
    cfg = _config(tmp_path, tiny_hf_dir, source="local", input=str(manifest))
    summary = prepare_data(cfg)
    rejects = [json.loads(line) for line in (cfg.out_dir / "rejects.jsonl").read_text().splitlines()]
    assert summary["read"] == n_lines == summary["kept"] + summary["rejected"]
    assert summary["kept"] == 2
    by_id = {r.get("id"): r["reason"] for r in rejects if r.get("id")}
    for uid, reason in expected.items():
        assert by_id[uid].startswith(reason), (uid, by_id[uid])
    line_reasons = sorted(r["reason"].split(":")[0] for r in rejects if "line" in r and r.get("id") is None)
    assert line_reasons == ["line is not a JSON object", "line is not valid JSON", "line is not valid UTF-8"]
    test = load_manifest(cfg.out_dir / "test.jsonl")
    assert len(read_wav(cfg.out_dir / test[0].audio)) == 16_000  # 44.1 kHz resampled


def test_outside_paths_allowed_on_request(tmp_path, tiny_hf_dir):
    manifest, _, _ = _local_manifest(tmp_path)
    cfg = _config(tmp_path, tiny_hf_dir, source="local", input=str(manifest), allow_outside_paths=True)
    kept = {u.id for s in _manifests(cfg.out_dir).values() for u in s} if prepare_data(cfg) else set()
    assert {"abs", "escape"} <= kept


def test_nothing_valid_stops_the_stage_and_writes_nothing(tmp_path, tiny_hf_dir):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"id": "x", "audio": "nope.wav", "text": "a", "language": "pl", "split": "train"}\n')
    cfg = _config(tmp_path, tiny_hf_dir, source="local", input=str(manifest))
    with pytest.raises(DwPipeError, match="no valid utterance among 1 from local: 1 unreadable audio ") as err:
        prepare_data(cfg)
    assert not cfg.out_dir.exists() and not partial_dir(cfg.out_dir).exists()  # nothing worth resuming is kept
    rejects = cfg.out_dir.parent / f"{cfg.out_dir.name}.rejects.jsonl"
    (row,) = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert row["id"] == "x" and row["reason"] in str(err.value) and str(rejects) in str(err.value)
    assert "\n" not in str(err.value)


def test_when_nothing_is_kept_the_error_counts_the_reasons(tmp_path, tiny_hf_dir):
    rows = [
        {"id": f"m{i}", "audio": f"missing{i}.wav", "text": "a", "language": "pl", "split": "train"} for i in range(4)
    ]
    rows += [{"id": f"k{i}", "audio": "a.wav", "text": "a", "language": "xx", "split": "train"} for i in range(2)]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows) + "not json\n")
    cfg = _config(tmp_path, tiny_hf_dir, source="local", input=str(manifest))
    with pytest.raises(DwPipeError) as err:
        prepare_data(cfg)
    message = str(err.value)
    assert message.startswith("no valid utterance among 7 from local: 6 unreadable audio, 1 line is not valid JSON (")
    assert "first: m0: unreadable audio: file not found: missing0.wav; m1: " in message
    rejects = cfg.out_dir.parent / f"{cfg.out_dir.name}.rejects.jsonl"
    assert len(rejects.read_text().splitlines()) == 7


def _inputs_real_corpora_hold(root: Path) -> tuple[Path, set[str], dict[str, str], dict[int, str]]:
    """A manifest of audio formats and texts met in real corpora: (manifest, kept ids, reason by id, by line)."""
    from tests.pipeline.data.test_audio import encoded, wav_bytes  # noqa: PLC0415

    tone = np.round(8000 * _speech(1.0) / np.abs(_speech(1.0)).max()).astype(np.int16)
    files = {
        "u8.wav": wav_bytes(np.tile(np.array([128, 255, 0, 64], dtype=np.uint8), 4000)),
        "u8silent.wav": wav_bytes(np.full(16_000, 128, dtype=np.uint8)),
        "s24.wav": wav_bytes(tone.astype(np.int32) << 8, bits=24),
        "float.wav": wav_bytes(_speech(1.0)),
        "stereo.wav": wav_bytes(np.stack([tone, tone // 2], 1)),
        "opposite.wav": wav_bytes(np.stack([tone, -tone], 1)),
        "speech.flac": encoded(tone, "flac", "flac", "s16"),
        "speech.mp3": encoded(_speech(1.0), "mp3", "libmp3lame", "fltp"),
        "nan.wav": wav_bytes(np.where(np.arange(16_000) == 500, np.nan, _speech(1.0)).astype(np.float32)),
        "inf.wav": wav_bytes(np.where(np.arange(16_000) == 500, np.inf, _speech(1.0)).astype(np.float32)),
        "nosamples.wav": wav_bytes(np.zeros(0, dtype=np.int16)),
    }
    data = root / "corpus"
    data.mkdir(parents=True)
    for name, payload in files.items():
        (data / name).write_bytes(payload)

    def row(uid: str, audio: str = "float.wav", text: str = "dobry wieczór") -> bytes:
        return json.dumps({"id": uid, "audio": audio, "text": text, "language": "pl", "split": "train"}).encode()

    kept = {"u8", "s24", "float", "stereo", "flac", "mp3"}
    by_id = {
        "u8silent": "silent audio",
        "opposite": "silent audio: its 2 channels cancel out when averaged to mono (opposite phase",
        "nan": "corrupt audio: NaN or infinite samples",
        "inf": "corrupt audio: NaN or infinite samples",
        "nosamples": "empty audio",
        "dots": "no words to score: '...' normalises to nothing",
        "marks": "no words to score: '?!' normalises to nothing",
    }
    audio_of = {"flac": "speech.flac", "mp3": "speech.mp3"}
    lines = [row(uid, audio_of.get(uid, f"{uid}.wav")) for uid in sorted(kept) + list(by_id)[:5]]
    lines += [row("dots", text="..."), row("marks", text="?!")]
    by_line = {
        len(lines) + 1: "line is not valid UTF-8",  # the id's bytes: Latin-1 "é" in a UTF-8 file
        len(lines) + 2: "line is not valid UTF-8: field 'id' holds an escaped lone surrogate",
    }
    # json.dumps writes a lone surrogate as the ASCII escape \\udc80, which json.loads turns back into one
    lines += [row("cafe").replace(b"cafe", b"caf\xe9"), row("\udc80x")]
    manifest = data / "manifest.jsonl"
    manifest.write_bytes(b"\n".join(lines) + b"\n")
    return manifest, kept, by_id, by_line


def test_inputs_real_corpora_hold_are_kept_or_rejected_with_their_reason(tmp_path, tiny_hf_dir):
    manifest, kept, by_id, by_line = _inputs_real_corpora_hold(tmp_path)
    cfg = _config(tmp_path, tiny_hf_dir, source="local", input=str(manifest), workers=1)
    summary = prepare_data(cfg)
    assert summary["read"] == len(kept) + len(by_id) + len(by_line) == summary["kept"] + summary["rejected"]
    train = {u.id: u for u in load_manifest(cfg.out_dir / "train.jsonl")}
    assert set(train) == kept
    rejects = [json.loads(line) for line in (cfg.out_dir / "rejects.jsonl").read_text().splitlines()]
    reasons = {r["id"]: r["reason"] for r in rejects if "id" in r}
    assert set(reasons) == set(by_id)
    for uid, reason in by_id.items():
        assert reasons[uid].startswith(reason), (uid, reasons[uid])
    assert {r["line"]: r["reason"] for r in rejects if "id" not in r} == by_line
    # 8-bit [128, 255, 0, 64] read (x - 128) / 128, then written as int16 (x * 32767, rounded)
    rate, written = wavfile.read(cfg.out_dir / train["u8"].audio)
    assert rate == 16_000 and written[:4].tolist() == [0, round(127 / 128 * 32767), -32767, round(-0.5 * 32767)]


def test_a_transcript_fits_the_decoder_up_to_444_tokens(tmp_path, tiny_hf_dir):
    """Whisper's decoder has 448 positions. Teacher forcing feeds prompt + labels[:-1]: the 4 prompt
    tokens and the n text tokens (the end token is predicted at the last of them, never fed), so
    n text tokens take 4 + n positions: 443 -> 447 and 444 -> 448 fit, 445 -> 449 does not."""
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperTokenizer

    from pipeline.models.forward import decoder_inputs, encode

    tokenizer = WhisperTokenizer.from_pretrained(tiny_hf_dir)
    texts = {n: "a" + " a" * (n - 1) for n in (443, 444, 445)}
    assert {n: len(tokenizer(t, add_special_tokens=False).input_ids) for n, t in texts.items()} == {n: n for n in texts}
    (tmp_path / "a.wav").write_bytes(_wav_bytes(_speech(1.0), 16_000))
    rows = [{"id": f"t{n}", "audio": "a.wav", "text": t, "language": "pl", "split": "train"} for n, t in texts.items()]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    cfg = _config(tmp_path, tiny_hf_dir, source="local", input=str(manifest), workers=1)
    prepare_data(cfg)
    kept = load_manifest(cfg.out_dir / "train.jsonl")
    assert [u.id for u in kept] == ["t443", "t444"]
    reject = json.loads((cfg.out_dir / "rejects.jsonl").read_text())
    assert reject["id"] == "t445"
    assert reject["reason"] == (
        "text too long for the decoder: 445 tokens + 4 prompt tokens = 449 positions > 448; "
        "split the utterance or drop it"
    )
    # The real model class agrees: the longest kept transcript fills all 448 positions; one more does not fit.
    model = WhisperForConditionalGeneration.from_pretrained(tiny_hf_dir).eval()
    features = torch.zeros(1, model.config.num_mel_bins, 3000)
    ids, _ = decoder_inputs(encode(kept[1:], tokenizer), tokenizer.pad_token_id)
    assert ids.shape == (1, 448)
    with torch.inference_mode():
        assert model(input_features=features, decoder_input_ids=ids).logits.shape[1] == 448
        with pytest.raises(IndexError):
            model(input_features=features, decoder_input_ids=torch.cat([ids, ids[:, -1:]], 1))


def _wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    buffer = io.BytesIO()
    wavfile.write(buffer, rate, (samples * 32767).astype(np.int16))
    return buffer.getvalue()


def test_hf_datasets_common_voice_and_fleurs_layouts(tmp_path, tiny_hf_dir):
    import datasets

    audio = datasets.Audio(decode=False)
    cv = datasets.Dataset.from_dict(
        {
            "client_id": ["spk1", "spk2", "spk3"],
            "path": ["cv_1.mp3", "cv_2.mp3", "cv_3.mp3"],
            "audio": [{"bytes": _wav_bytes(_speech(1.0, 48_000), 48_000), "path": None}] * 2
            + [{"bytes": b"junk", "path": None}],
            "sentence": ["Dzień dobry.", "Dobranoc.", "Zepsute."],
            "locale": ["pl", "pl", "pl"],
            "gender": ["female_feminine", "male_masculine", ""],
        }
    ).cast_column("audio", audio)
    datasets.DatasetDict({"train": cv, "validation": cv.select([0])}).save_to_disk(str(tmp_path / "cv"))
    gender = datasets.ClassLabel(names=["male", "female", "other"])
    fleurs = (
        datasets.Dataset.from_dict(
            {
                "id": [10, 11],
                "audio": [{"bytes": _wav_bytes(_speech(2.0), 16_000), "path": None}] * 2,
                "transcription": ["guten tag", "gute nacht"],
                "language": ["German", "German"],
                "gender": [1, 0],
            }
        )
        .cast_column("audio", audio)
        .cast_column("gender", gender)
    )
    datasets.DatasetDict({"test": fleurs}).save_to_disk(str(tmp_path / "fleurs"))

    cfg = _config(
        tmp_path,
        tiny_hf_dir,
        source="hf",
        input=str(tmp_path / "cv"),
        hf=HFSourceConfig(splits={"train": "train", "dev": "validation"}),
    )
    summary = prepare_data(cfg)
    assert (summary["read"], summary["kept"], summary["rejected"]) == (4, 3, 1)
    train = load_manifest(cfg.out_dir / "train.jsonl")
    assert [(u.language, u.gender, u.speaker) for u in train] == [("pl", "female", "spk1"), ("pl", "male", "spk2")]
    assert len(read_wav(cfg.out_dir / train[0].audio)) == 16_000

    cfg = _config(
        tmp_path / "f",
        tiny_hf_dir,
        source="hf",
        input=str(tmp_path / "fleurs"),
        hf=HFSourceConfig(splits={"test": "test"}),
    )
    prepare_data(cfg)
    test = load_manifest(cfg.out_dir / "test.jsonl")
    assert [(u.id, u.language, u.gender) for u in test] == [("test-10", "de", "female"), ("test-11", "de", "male")]


def test_whisper_hours_order_languages_by_resource_level():
    hours = whisper_training_hours()
    assert hours["en"] > hours["de"] > hours["pl"] > hours["cs"] > hours["bg"]
    assert by_resource_level(["bg", "zz", "en", "cs"]) == ["en", "cs", "bg", "zz"]
