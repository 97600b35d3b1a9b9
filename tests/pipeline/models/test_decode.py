"""Greedy decoding and EncoderStore: dev gate rates count the positions teacher forcing has, no others; which
models share stored encoder outputs, and how routed encoders fill theirs."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperTokenizer,
)

from pipeline.core.encoder_memo import encoder_identity
from pipeline.data.manifest import load_manifest
from pipeline.models.clsr import CLSRConfig, add_clsr, set_language
from pipeline.models.decode import EncoderStore, count_real_positions, greedy_decode
from pipeline.models.forward import features_for, prompt_ids
from pipeline.student.model import StudentSpec, build_student, load_student
from tests.conftest import write_encoder_expert_student, write_tiny_manifest

EOS = 50257


class EndRowsAt(LogitsProcessor):
    """Force end-of-text in row i at generated step ``ends[i]`` (None: never); other steps never end a row."""

    def __init__(self, ends: list[int | None], prompt_len: int) -> None:
        self.ends, self.prompt_len = ends, prompt_len

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        step = input_ids.shape[1] - self.prompt_len
        scores = scores.clone()
        for row, end in enumerate(self.ends):
            if end == step:
                scores[row] = -torch.inf
                scores[row, EOS] = 0.0
            else:
                scores[row, EOS] = -torch.inf
        return scores


def _student(tiny_hf_dir):
    model = WhisperForConditionalGeneration.from_pretrained(tiny_hf_dir)  # with its generation config
    add_clsr(model, CLSRConfig(("pl",), decoder_layers=(0, 1)))
    return model.eval()


def test_finished_rows_do_not_count(tiny_hf_dir):
    """Rows ending after 1 and 3 tokens and one never ending: counted positions = prompt + tokens before EOS."""
    tokenizer = WhisperTokenizer.from_pretrained(tiny_hf_dir)
    model = _student(tiny_hf_dir)
    set_language(model, "pl")
    state = model._clsr_state
    prompt = prompt_ids(tokenizer, "pl")
    features = torch.randn(3, 80, 3000, generator=torch.Generator().manual_seed(0))
    ends, max_new = [1, 3, None], 6
    with torch.inference_mode(), count_real_positions(model, EOS):
        model.generate(
            input_features=features,
            decoder_input_ids=torch.tensor([prompt] * 3),
            language="pl",
            task="transcribe",
            max_new_tokens=max_new,
            logits_processor=LogitsProcessorList([EndRowsAt(ends, len(prompt))]),
        )
    # Row 0 feeds the prompt and 1 token; row 1: 3 tokens; row 2 never ends: the last of 6 tokens is never fed.
    expected = 3 * len(prompt) + 1 + 3 + (max_new - 1)
    assert {tokens for _, tokens in state.usage.values()} == {expected}
    assert state.decoder_mask is None  # the hook leaves nothing behind


def test_greedy_decode_runs_no_language_detection(tiny_hf_dir, tmp_path):
    """With language and task given, the decoder runs max_new_tokens times per batch and nothing more."""
    manifest = write_tiny_manifest(tmp_path)
    utts = [u for u in load_manifest(manifest) if u.language == "pl"]
    tokenizer = WhisperTokenizer.from_pretrained(tiny_hf_dir)
    extractor = WhisperFeatureExtractor.from_pretrained(tiny_hf_dir)
    model = _student(tiny_hf_dir)
    store = EncoderStore(model, extractor, manifest.parent, True, torch.device("cpu"), dtype=torch.float32)
    store.fill(utts)
    calls = []
    model.get_decoder().register_forward_pre_hook(lambda m, a, k: calls.append(k["input_ids"].shape), with_kwargs=True)
    cfg = SimpleNamespace(eval_batch_size=8, max_new_tokens=5)
    hyps, rates = greedy_decode(model, utts, store, tokenizer, cfg)
    assert len(hyps) == len(utts)
    assert len(calls) <= cfg.max_new_tokens and calls[0] == (len(utts), 4)
    assert set(rates["pl"]) == {"decoder.0", "decoder.1"}


def test_encoder_experts_get_their_own_outputs_per_language(tiny_hf_dir, tiny_manifest, tmp_path):
    plain = build_student(StudentSpec(tiny_hf_dir))
    decoder_only = build_student(StudentSpec(tiny_hf_dir))
    add_clsr(decoder_only, CLSRConfig(("pl", "cs"), decoder_layers=(0, 1)))
    routed, _ = load_student(write_encoder_expert_student(tiny_hf_dir, tmp_path / "student"))
    # Decoder-only students keep sharing the untrained encoder's outputs; encoder experts never do.
    assert encoder_identity(plain) == encoder_identity(decoder_only) != encoder_identity(routed)

    utts, root = load_manifest(tiny_manifest), tiny_manifest.parent
    extractor = WhisperFeatureExtractor.from_pretrained(tiny_hf_dir)
    stores = {
        name: EncoderStore(model, extractor, root, True, torch.device("cpu"), (encoder_identity(model),), torch.float32)
        for name, model in (("plain", plain), ("routed", routed))
    }
    for store in stores.values():
        store.fill(utts, batch_size=4)  # batches of 4 would mix languages in manifest order
    assert routed._clsr_state.language is None  # filling leaves the model's routing as it found it
    for u in utts:
        set_language(routed, u.language)
        with torch.no_grad():
            fresh = routed.get_encoder()(features_for(extractor, [u], root)).last_hidden_state[0]
        assert torch.allclose(stores["routed"].memo[u.id], fresh, atol=1e-5), u.id
        if u.language in ("pl", "cs"):  # de has no expert: the shared FFN, as in the plain encoder
            assert not torch.allclose(stores["routed"].memo[u.id], stores["plain"].memo[u.id], atol=1e-2), u.id


def test_timestamp_labels_are_whispers_segment_grammar(tiny_hf_dir):
    from transformers import WhisperTokenizer

    from pipeline.models.forward import prompt_ids, timestamp_id, timestamp_labels

    tokenizer = WhisperTokenizer.from_pretrained(tiny_hf_dir)
    segments = [{"start": 0.13, "end": 2.5, "text": "Dobré ráno."}, {"start": 3.0, "end": 4.26, "text": " Ahoj. "}]
    labels = timestamp_labels(tokenizer, segments)
    ts = [tokenizer.convert_tokens_to_ids(f"<|{t}|>") for t in ("0.12", "2.50", "3.00", "4.26")]  # 0.13 s: step 6
    text = [tokenizer(t, add_special_tokens=False).input_ids for t in (" Dobré ráno.", " Ahoj.")]
    assert labels == [ts[0], *text[0], ts[1], ts[2], *text[1], ts[3], tokenizer.eos_token_id]
    assert tokenizer.decode(labels, skip_special_tokens=True) == " Dobré ráno. Ahoj."
    assert timestamp_id(tokenizer, 30.0) - timestamp_id(tokenizer, 0.0) == 1500
    with pytest.raises(ValueError, match="outside one Whisper window"):
        timestamp_id(tokenizer, 30.5)
    plain, timed = prompt_ids(tokenizer, "cs"), prompt_ids(tokenizer, "cs", timestamps=True)
    assert plain[:3] == timed and tokenizer.convert_ids_to_tokens(plain[3]) == "<|notimestamps|>"
