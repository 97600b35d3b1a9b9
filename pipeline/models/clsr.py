"""CLSR: conditional language-specific routing of Whisper's FFNs (DistilWhisper).

For a CLSR layer, with ``z = LN(x)`` the layer's pre-FFN norm:

    CLSR(z) = g * FFN_lang(z) + (1 - g) * FFN_shared(z)
    G(z)    = w2 . ReLU(W1 dropout_0.1(z) + b1)      W1: d -> 64, w2: 64 -> 1
    train:  g = sigmoid(G + a * eps), eps ~ N(0,1), a = 5 * min(step / max_steps, 1)
            and, per layer and batch, the layer uses FFN_shared alone with probability p_skip (0.2);
            the sampled g still enters the gate budget (as the official code does)
    infer:  g = 1[G >= 0]  (each token computes only the branch it is routed to)

``FFN_shared`` is the layer's original fc1 -> GELU -> fc2, frozen;
``FFN_lang`` starts as a copy of it with output dropout 0.3. Gate start
(``gate_init``): ``official`` (default) is what the official runs really
start from: W1 and w2 ~ N(0, 0.02), b1 = 0. The official constructor sets
W1 ~ N(0, 0.01), b1 = 0, w2 = 0 (``zero``: every gate exactly at the
threshold G = 0, W1 without gradient at first), but the model then calls
``post_init()``, which under its pinned transformers 4.30.1 re-initialises
every ``nn.Linear`` with N(0, init_std = 0.02) before the experts are
copied from the pretrained FFNs (naver/multilingual-distilwhisper,
DistilWhisper.py; checked by running it under 4.30.1). The residual form of
the Whisper layer is unchanged: the module takes fc2's place, and fc1 and
the activation become identities.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass(frozen=True)
class CLSRConfig:
    languages: tuple[str, ...]
    encoder_layers: tuple[int, ...] = ()
    decoder_layers: tuple[int, ...] = ()
    gate_hidden: int = 64
    gate_dropout: float = 0.1
    expert_dropout: float = 0.3
    skip_gate_prob: float = 0.2
    noise_scale: float = 5.0
    budget: float = 0.5
    gate_init: str = "official"  # official: W1, w2 ~ N(0, 0.02), b1 = 0 | zero: W1 ~ N(0, 0.01), b1 = 0, w2 = 0

    def __post_init__(self) -> None:
        if self.gate_init not in GATE_INITS:
            raise ValueError(f"gate_init {self.gate_init!r} not in {GATE_INITS}")


GATE_INITS = ("official", "zero")


@dataclass
class RoutingState:
    """Per-batch context shared by every CLSR layer of a model."""

    language: str | None = None
    step: int = 0
    max_steps: int = 1
    decoder_mask: torch.Tensor | None = None  # [B, T] True on real (non-padding) decoder tokens
    gate_sums: list[torch.Tensor] = field(default_factory=list)
    gate_counts: list[torch.Tensor] = field(default_factory=list)
    usage: dict[str, tuple[float, float]] = field(default_factory=dict)  # layer -> (open tokens, tokens)

    def reset(self) -> None:
        self.gate_sums.clear()
        self.gate_counts.clear()
        self.usage.clear()

    def count(self, name: str, opened: float, tokens: float) -> None:
        """Accumulate gate openings (soft values in training, routed tokens at inference)."""
        before = self.usage.get(name, (0.0, 0.0))
        self.usage[name] = (before[0] + opened, before[1] + tokens)

    def rates(self) -> dict[str, float]:
        return {name: (o / t if t else 0.0) for name, (o, t) in sorted(self.usage.items())}

    def noise_amplitude(self, scale: float) -> float:
        return scale * min(self.step / max(self.max_steps, 1), 1.0)


class FFN(nn.Module):
    """fc1 -> activation -> fc2 (-> dropout), weights copied from a Whisper layer."""

    def __init__(self, fc1: nn.Linear, fc2: nn.Linear, activation: nn.Module, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1, self.fc2, self.activation = fc1, fc2, activation
        self.dropout = nn.Dropout(dropout)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc2(self.activation(self.fc1(z))))


class Gate(nn.Module):
    def __init__(self, d_model: int, hidden: int, dropout: float, init: str = "official") -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.w1 = nn.Linear(d_model, hidden)
        self.w2 = nn.Linear(hidden, 1, bias=False)
        nn.init.zeros_(self.w1.bias)
        if init == "official":
            nn.init.normal_(self.w1.weight, std=0.02)
            nn.init.normal_(self.w2.weight, std=0.02)
        else:
            nn.init.normal_(self.w1.weight, std=0.01)
            nn.init.zeros_(self.w2.weight)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.w2(torch.relu(self.w1(self.dropout(z)))).squeeze(-1)


class CLSRLayer(nn.Module):
    """Takes the place of a Whisper layer's ``fc2``; sees ``z = LN(x)`` because fc1 and activation are identities."""

    def __init__(
        self, name: str, shared: FFN, languages: tuple[str, ...], cfg: CLSRConfig, state: RoutingState, decoder: bool
    ) -> None:
        super().__init__()
        self.name, self.cfg, self.decoder = name, cfg, decoder
        self.state = state  # shared, not a submodule
        self.shared = shared
        for p in self.shared.parameters():
            p.requires_grad_(False)
        self.experts = nn.ModuleDict({lang: self.new_expert() for lang in languages})
        self.gates = nn.ModuleDict({lang: self.new_gate() for lang in languages})

    def new_expert(self) -> FFN:
        expert = FFN(
            copy.deepcopy(self.shared.fc1),
            copy.deepcopy(self.shared.fc2),
            self.shared.activation,
            self.cfg.expert_dropout,
        )
        for p in expert.parameters():
            p.requires_grad_(True)
        return expert

    def new_gate(self) -> Gate:
        return Gate(self.shared.fc1.in_features, self.cfg.gate_hidden, self.cfg.gate_dropout, self.cfg.gate_init)

    def _mask(self, z: torch.Tensor) -> torch.Tensor | None:
        mask = self.state.decoder_mask if self.decoder else None
        if mask is not None and mask.shape == z.shape[:2]:
            return mask.to(z.device)
        return None

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lang = self.state.language
        if lang is None or lang not in self.experts:
            return self.shared(z)  # a language without an expert uses the original FFN
        logits = self.gates[lang](z)
        if self.training:
            return self._forward_train(z, logits, lang)
        return self._forward_hard(z, logits, lang)

    def _forward_train(self, z: torch.Tensor, logits: torch.Tensor, lang: str) -> torch.Tensor:
        skip = bool(torch.rand(()) < self.cfg.skip_gate_prob)
        noise = torch.randn_like(logits) * self.state.noise_amplitude(self.cfg.noise_scale)
        gate = torch.sigmoid(logits + noise)  # a skipped layer's sampled gate still enters the budget
        mask = self._mask(z)
        weight = mask.to(gate.dtype) if mask is not None else torch.ones_like(gate)
        self.state.gate_sums.append((gate * weight).sum())
        self.state.gate_counts.append(weight.sum())
        self.state.count(self.name, float((gate.detach() * weight).sum()), float(weight.sum()))
        if skip:
            return self.shared(z)
        g = gate.unsqueeze(-1)
        return g * self.experts[lang](z) + (1 - g) * self.shared(z)

    def _forward_hard(self, z: torch.Tensor, logits: torch.Tensor, lang: str) -> torch.Tensor:
        route = logits >= 0
        mask = self._mask(z)
        counted = mask if mask is not None else torch.ones_like(route)
        self.state.count(self.name, float((route & counted).sum()), float(counted.sum()))
        out = torch.empty_like(z)
        flat_z, flat_out, flat_route = z.reshape(-1, z.shape[-1]), out.view(-1, z.shape[-1]), route.reshape(-1)
        if flat_route.any():
            flat_out[flat_route] = self.experts[lang](flat_z[flat_route]).to(out.dtype)
        if not flat_route.all():
            flat_out[~flat_route] = self.shared(flat_z[~flat_route]).to(out.dtype)
        return out


def _layers(model, side: str):
    return model.model.encoder.layers if side == "encoder" else model.model.decoder.layers


def add_clsr(model, cfg: CLSRConfig) -> RoutingState:
    """Put CLSR layers into ``model`` (in place); freeze everything but experts and gates."""
    state = RoutingState()
    for p in model.parameters():
        p.requires_grad_(False)
    for side, indices in (("encoder", cfg.encoder_layers), ("decoder", cfg.decoder_layers)):
        layers = _layers(model, side)
        for i in indices:
            if not 0 <= i < len(layers):
                raise ValueError(f"CLSR {side} layer {i} does not exist (the model has {len(layers)})")
            layer = layers[i]
            shared = FFN(layer.fc1, layer.fc2, layer.activation_fn)
            layer.fc2 = CLSRLayer(f"{side}.{i}", shared, cfg.languages, cfg, state, decoder=side == "decoder")
            layer.fc1 = nn.Identity()
            layer.activation_fn = nn.Identity()
            if getattr(layer, "activation_dropout", 0.0):
                layer.activation_dropout = 0.0  # it would otherwise act on z; the experts carry their own dropout
    model._clsr_state = state
    model._clsr_config = cfg
    return state


def clsr_layers(model) -> list[CLSRLayer]:
    return [m for m in model.modules() if isinstance(m, CLSRLayer)]


def gate_budget_loss(state: RoutingState, budget: float) -> torch.Tensor:
    """``|mean(g) - b|`` over the soft gates of every CLSR layer, padding excluded."""
    if not state.gate_sums:
        return torch.zeros(())
    total = torch.stack(state.gate_sums).sum()
    count = torch.stack(state.gate_counts).sum().clamp_min(1.0)
    return (total / count - budget).abs()


def expert_state_dict(model, language: str) -> dict[str, torch.Tensor]:
    """The parameters of ``language``'s experts and gates, keyed by layer."""
    out = {}
    for layer in clsr_layers(model):
        for prefix, module in (("expert", layer.experts[language]), ("gate", layer.gates[language])):
            for key, value in module.state_dict().items():
                out[f"{layer.name}.{prefix}.{key}"] = value.detach().cpu().contiguous()
    return out


def load_expert_state_dict(model, language: str, tensors: dict[str, torch.Tensor]) -> None:
    by_name = {layer.name: layer for layer in clsr_layers(model)}
    grouped: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        side, index, prefix, rest = key.split(".", 3)
        grouped.setdefault((f"{side}.{index}", prefix), {})[rest] = value
    for (name, prefix), sd in grouped.items():
        layer = by_name.get(name)
        if layer is None:
            raise ValueError(f"expert file has layer {name}, which this model has no CLSR layer for")
        if language not in layer.experts:
            layer.experts[language] = layer.new_expert()
            layer.gates[language] = layer.new_gate()
        target = layer.experts[language] if prefix == "expert" else layer.gates[language]
        target.load_state_dict(sd)


def set_language(model, language: str | None) -> None:
    """Route CLSR layers to ``language``'s experts (no-op for other students)."""
    state = getattr(model, "_clsr_state", None)
    if state is not None:
        state.language = language
