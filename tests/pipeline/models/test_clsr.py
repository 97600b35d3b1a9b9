"""CLSR on the tiny Whisper: the properties DESIGN.md's method section requires."""

from __future__ import annotations

import torch

from pipeline.models.clsr import CLSRConfig, add_clsr, clsr_layers, gate_budget_loss
from tests.conftest import build_tiny_whisper


def _inputs():
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 80, 3000, generator=g), torch.tensor(
        [[50258, 50269, 50359, 50363, 400, 500], [50258, 50269, 50359, 50363, 600, 50257]]
    )


def _clsr_model(**kw):
    model = build_tiny_whisper()
    cfg = CLSRConfig(("pl", "cs"), encoder_layers=(1,), decoder_layers=(0, 1), **kw)
    state = add_clsr(model, cfg)
    return model.eval(), state


def test_closed_gates_give_the_original_logits():
    reference = build_tiny_whisper().eval()
    model, state = _clsr_model()
    for layer in clsr_layers(model):
        for gate in layer.gates.values():
            torch.nn.init.constant_(gate.w2.weight, -1.0)
            torch.nn.init.constant_(gate.w1.bias, 1.0)  # G = -sum(relu(...)) < 0: every gate closed
        for expert in layer.experts.values():
            torch.nn.init.normal_(expert.fc2.weight)  # an expert that differs, to be sure it is not used
    state.language = "pl"
    feats, ids = _inputs()
    with torch.no_grad():
        assert torch.allclose(
            model(input_features=feats, decoder_input_ids=ids).logits,
            reference(input_features=feats, decoder_input_ids=ids).logits,
            atol=1e-5,
        )


def test_only_experts_and_gates_train_and_fresh_expert_equals_shared():
    model, _ = _clsr_model()
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".experts." in n or ".gates." in n for n in trainable)
    z = torch.randn(3, 7, 64)
    for layer in clsr_layers(model):
        assert torch.equal(layer.experts["pl"].eval()(z), layer.shared(z))


def test_gate_initialisations():
    """official: W1, w2 ~ N(0, 0.02), b1 = 0 (what post_init left in the official runs); zero: w2 = 0, G = 0."""
    torch.manual_seed(0)
    official, _ = _clsr_model(gate_hidden=512)
    for layer in clsr_layers(official):
        gate = layer.gates["pl"]
        assert abs(float(gate.w1.weight.std()) - 0.02) < 0.002 and abs(float(gate.w2.weight.std()) - 0.02) < 0.004
        assert float(gate.w1.bias.abs().max()) == 0.0
    zero, _ = _clsr_model(gate_init="zero", gate_hidden=512)
    z = torch.randn(3, 7, 64)
    for layer in clsr_layers(zero):
        gate = layer.gates["cs"].eval()
        assert abs(float(gate.w1.weight.std()) - 0.01) < 0.001
        assert float(gate(z).abs().max()) == 0.0  # w2 = 0: every gate starts at the threshold


def test_noise_and_skip_gate_schedules():
    model, state = _clsr_model(skip_gate_prob=0.0, gate_init="zero")
    state.max_steps = 100
    assert [state.noise_amplitude(5.0) for state.step in (0, 50, 100, 200)] == [0.0, 2.5, 5.0, 5.0]
    layer = clsr_layers(model)[1]
    layer.train()
    state.language, state.step = "pl", 0
    torch.manual_seed(0)
    layer(torch.randn(2, 4, 64))
    assert abs(float(state.gate_sums[-1]) / float(state.gate_counts[-1]) - 0.5) < 1e-6  # sigmoid(0) without noise
    torch.manual_seed(1)
    draws = 2000
    model2, state2 = _clsr_model(skip_gate_prob=0.2, expert_dropout=0.0)
    state2.language = "pl"
    layer2 = clsr_layers(model2)[1].train()
    torch.nn.init.normal_(layer2.experts["pl"].fc2.weight)  # an expert that differs from the shared FFN
    skipped = 0
    for _ in range(draws):
        z = torch.randn(1, 2, 64)
        skipped += torch.equal(layer2(z), layer2.shared(z))
    assert abs(skipped / draws - 0.2) < 0.03


def test_skipped_layer_keeps_its_sampled_gate_in_the_budget():
    """A skipped layer computes the shared FFN alone, but its sampled gate enters the budget (official code):
    a zero there would pull the other gates above b."""
    model, state = _clsr_model(skip_gate_prob=1.0, expert_dropout=0.0)
    state.language, state.step = "pl", 0  # no noise at step 0: the sampled gate is sigmoid(G)
    layer = clsr_layers(model)[1].train()
    layer.gates["pl"].dropout.p = 0.0
    torch.nn.init.normal_(layer.experts["pl"].fc2.weight)
    z = torch.randn(2, 4, 64)
    assert torch.equal(layer(z), layer.shared(z))
    expected = torch.sigmoid(layer.gates["pl"](z)).mean()
    assert torch.allclose(state.gate_sums[-1] / state.gate_counts[-1], expected)


def test_budget_loss_masks_padding():
    model, state = _clsr_model(skip_gate_prob=0.0, gate_init="zero")
    layer = clsr_layers(model)[1].train()
    state.language = "pl"
    state.decoder_mask = torch.tensor([[True, True, False, False]])
    layer(torch.randn(1, 4, 64))
    assert float(state.gate_counts[-1]) == 2.0
    assert abs(float(gate_budget_loss(state, 0.5))) < 1e-6


def test_hard_gates_compute_only_the_chosen_branch():
    model, state = _clsr_model()
    layer = clsr_layers(model)[1]
    gate = layer.gates["pl"]
    with torch.no_grad():
        gate.w1.weight.zero_()
        gate.w1.weight[0, 0] = -1.0  # G = -relu(-z_0): open (G >= 0) exactly where z_0 >= 0
        gate.w2.weight.zero_()
        gate.w2.weight[0, 0] = -1.0
        gate.w1.bias.zero_()
    seen = {"expert": 0, "shared": 0}
    layer.experts["pl"].fc1.register_forward_hook(
        lambda m, i, o: seen.__setitem__("expert", seen["expert"] + i[0].shape[0])
    )
    layer.shared.fc1.register_forward_hook(lambda m, i, o: seen.__setitem__("shared", seen["shared"] + i[0].shape[0]))
    state.language = "pl"
    z = torch.randn(3, 5, 64)
    out = layer.eval()(z)
    opened = int((z[..., 0] >= 0).sum())
    assert 0 < opened < 15
    assert seen == {"expert": opened, "shared": 15 - opened}
    assert torch.allclose(out, layer.shared(z), atol=1e-6)  # the fresh expert equals the shared FFN
