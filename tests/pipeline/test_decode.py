"""EncoderStore on the tiny Whisper: which models share stored encoder outputs, and how routed encoders fill theirs."""

from __future__ import annotations

import torch
from transformers import WhisperFeatureExtractor

from pipeline.clsr import CLSRConfig, add_clsr
from pipeline.decode import EncoderStore, encoder_identity
from pipeline.manifest import load_manifest
from pipeline.student import StudentSpec, build_student, load_student, set_language
from pipeline.teacher import features_for
from tests.conftest import write_encoder_expert_student


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
