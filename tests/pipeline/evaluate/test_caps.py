"""bench_caps: target cells at longer caps, cut from one longer decode, equal what a decode at each cap gives."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.core.config import ConfigError
from pipeline.evaluate.benchmark import BenchmarkConfig, run_benchmark
from pipeline.evaluate.quantize import quantize
from pipeline.models.tiny import save_tiny_whisper
from pipeline.report.error_tables import loop_cap_table
from tests.conftest import write_tiny_manifest

# With this push on <|endoftext|>, the tiny Whisper ends its cs rows (2 in the manifest) after 1 token and its
# pl rows (3) after 10 tokens: at 8, 9 and 10 new tokens every pl row hits the cap, at 11 and 20 none does.
EOS_BIAS = 0.22
CAPS = (9, 10, 11, 20)


@pytest.fixture(scope="module")
def looping(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("looping")
    hf = save_tiny_whisper(root / "hf", eos_bias=EOS_BIAS)
    quantize(hf, root / "ct2" / "teacher-float32", "float32")
    return {"hf": hf, "test": write_tiny_manifest(root, "test.jsonl", seed=2), "ct2": root / "ct2"}


def _direct(looping, model: str, cap: int) -> dict[str, list[int]]:
    """Ids per utterance of the target languages decoded by the engine itself at ``cap`` (one batch per language)."""
    import ctranslate2
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizer

    from pipeline.data.manifest import load_manifest
    from pipeline.models.decode import greedy_ctranslate2, strip_prompt, text_tokens
    from pipeline.models.forward import features_for, prompt_ids

    tokenizer = WhisperTokenizer.from_pretrained(looping["hf"])
    extractor = WhisperFeatureExtractor.from_pretrained(looping["hf"])
    out = {}
    for lang in ("pl", "cs"):
        utts = [u for u in load_manifest(looping["test"]) if u.language == lang]
        feats, prompt = features_for(extractor, utts, looping["test"].parent), prompt_ids(tokenizer, lang)
        if model == "ct2:teacher":
            engine = ctranslate2.models.Whisper(str(looping["ct2"] / "teacher-float32"))
            ids = greedy_ctranslate2(engine, feats.numpy(), [prompt] * len(utts), cap)
        else:
            hf = WhisperForConditionalGeneration.from_pretrained(looping["hf"]).eval()
            with torch.no_grad():
                seqs = hf.generate(
                    input_features=feats,
                    decoder_input_ids=torch.tensor([prompt] * len(utts)),
                    max_new_tokens=cap,
                    do_sample=False,
                    num_beams=1,
                    return_timestamps=False,
                )
            ids = [text_tokens(strip_prompt(s.tolist(), prompt), tokenizer.eos_token_id) for s in seqs]
        out |= {u.id: x for u, x in zip(utts, ids)}
    return out


def _caps_config(looping, tmp_path: Path, **caps) -> BenchmarkConfig:
    """The looping models' benchmark at cap 8, targets pl and cs, with the given loop-cap settings."""
    return BenchmarkConfig(
        datasets={"test": str(looping["test"])},
        out_dir=tmp_path / "bench",
        teacher=str(looping["hf"]),
        untrained=str(looping["hf"]),
        ct2_dir=str(looping["ct2"]),
        target_languages=("pl", "cs"),
        max_new_tokens=8,
        bootstrap=10,
        **caps,
    )


def test_longer_caps_equal_a_decode_at_each_cap(looping, tmp_path):
    from transformers import WhisperTokenizer

    cfg = _caps_config(looping, tmp_path, loop_caps=CAPS)
    run_benchmark(cfg)
    rows = json.loads((cfg.out_dir / "metrics.json").read_text())["rows"]
    lines = [json.loads(x) for x in (cfg.out_dir / "hypotheses.jsonl").read_text().splitlines()]
    tokenizer = WhisperTokenizer.from_pretrained(looping["hf"])

    def row(model, lang, group):
        return next(r for r in rows if (r["model"], r["language"], r["group"]) == (model, lang, group))

    for model in ("teacher", "ct2:teacher"):
        # Worked out from the model (see EOS_BIAS): pl rows end after 10 tokens, cs rows after 1.
        groups = ("all", "cap=9", "cap=10", "cap=11", "cap=20")
        assert [row(model, "pl", g)["capped"] for g in groups] == [3, 3, 3, 0, 0]
        assert [row(model, "cs", g)["capped"] for g in groups] == [0, 0, 0, 0, 0]
        assert [row(model, "pl", g)["max_new_tokens"] for g in groups] == [8, 9, 10, 11, 20]
        # More tokens of a loop cost more errors; past the row's end nothing changes.
        assert row(model, "pl", "cap=10")["error_rate"] > row(model, "pl", "all")["error_rate"]
        assert row(model, "pl", "cap=20")["error_rate"] == row(model, "pl", "cap=11")["error_rate"]
        assert row(model, "cs", "cap=20")["error_rate"] == row(model, "cs", "all")["error_rate"]
        assert all(r["prefix_mismatches"] == 0 for r in rows if r["group"].startswith("cap="))
        for cap in CAPS:  # the hypotheses at each cap are what the engine gives when stopped there
            direct = {i: tokenizer.decode(x, skip_special_tokens=True) for i, x in _direct(looping, model, cap).items()}
            benched = {h["id"]: h["at_caps"][str(cap)]["hyp"] for h in lines if h["model"] == model and "at_caps" in h}
            assert benched == direct
    assert not any(r["group"].startswith("cap=") for r in rows if r["language"] == "de")  # non-target: 8 only
    assert all(
        r["group"] in ("all", "gender=male", "gender=female")
        for r in rows
        if r["model"] == "student-untrained" and r["language"] == "de"
    )

    table = "\n".join(loop_cap_table(rows))
    assert "| test | pl | ct2:teacher | float32 |" in table and "(3/3)" in table and "(0/3)" in table


def test_caps_outside_the_decoder_are_refused(tmp_path):
    for caps in ((8,), (445,)):
        with pytest.raises(ConfigError, match="loop_caps"):
            BenchmarkConfig(datasets={}, out_dir=tmp_path, teacher="t", untrained="u", max_new_tokens=8, loop_caps=caps)
    assert BenchmarkConfig(datasets={}, out_dir=tmp_path, teacher="t", untrained="u", loop_caps=(444,)).loop_caps


def test_the_default_caps_fit_both_engines(tiny_ct2):
    """444 new tokens after the 4-token prompt fill the decoder's 448 positions in both engines (transformers would
    refuse one more); CTranslate2 given its default max_length 448 stops at 224."""
    import ctranslate2

    from pipeline.models.decode import DEFAULT_CAPS, greedy_ctranslate2

    engine = ctranslate2.models.Whisper(str(tiny_ct2["float32"]))
    feats = np.random.default_rng(0).standard_normal((1, 80, 3000)).astype(np.float32)
    prompt = [50258, 50269, 50359, 50363]
    assert len(greedy_ctranslate2(engine, feats, [prompt], DEFAULT_CAPS["transformers"])[0]) == 444  # never ends
    view = ctranslate2.StorageView.from_array(feats)
    assert len(engine.generate(view, [prompt], beam_size=1)[0].sequences_ids[0]) == DEFAULT_CAPS["ctranslate2"]


def test_loop_caps_only_for_the_engines_named(looping, tmp_path):
    cfg = _caps_config(looping, tmp_path, loop_caps=(10,), loop_cap_engines=("ctranslate2",))
    run_benchmark(cfg)
    rows = json.loads((cfg.out_dir / "metrics.json").read_text())["rows"]
    capped = {r["model"] for r in rows if r["group"] == "cap=10"}
    assert capped == {"ct2:teacher"}, capped
    with pytest.raises(ConfigError, match="loop_cap_engines"):
        BenchmarkConfig(datasets={}, out_dir=tmp_path, teacher="t", untrained="u", loop_cap_engines=("onnx",))
