"""The optimizer step: gradients clipped to their global norm, parameters without a gradient left alone."""

from __future__ import annotations

import pytest
import torch

from pipeline.student.config import TrainConfig
from pipeline.student.loop import optimizer_step


@pytest.mark.parametrize(("max_norm", "scale"), [(0.0, 1.0), (1.0, 0.1), (20.0, 1.0)])
def test_gradients_are_clipped_to_their_global_norm(max_norm, scale):
    """Gradients (3, 4) and (5 sqrt 3): global norm 10, so clipped to 1 they move plain SGD by a tenth of them.
    A parameter without a gradient stays out of the norm and does not move."""
    a, b, untouched = (torch.nn.Parameter(torch.zeros(n)) for n in (2, 1, 3))
    a.grad, b.grad = torch.tensor([3.0, 4.0]), torch.tensor([5.0 * 3**0.5])
    norm = optimizer_step(torch.optim.SGD([a, b, untouched], lr=1.0), [a, b, untouched], max_norm, 1)
    assert norm == pytest.approx(10.0)
    assert torch.allclose(a.detach(), torch.tensor([-3.0, -4.0]) * scale)
    assert torch.allclose(b.detach(), torch.tensor([-5.0 * 3**0.5]) * scale)
    assert untouched.grad is None and torch.equal(untouched.detach(), torch.zeros(3))
    assert TrainConfig.max_grad_norm == 1.0  # the HF Trainer default the official runs use
