"""Sparse KD losses equal dense reference implementations (values and gradients, float64)."""

from __future__ import annotations

import pytest
import torch

from pipeline.student.losses import cross_entropy, sparse_js, sparse_kl, sparse_rkl


def _case(seed: int, n=6, vocab=50, k=5):
    g = torch.Generator().manual_seed(seed)
    teacher_full = torch.log_softmax(torch.randn(n, vocab, generator=g, dtype=torch.float64) * 2, -1)
    top_vals, top_ids = teacher_full.topk(k, -1)
    tail = torch.logsumexp(teacher_full.scatter(-1, top_ids, float("-inf")), -1)
    student = torch.randn(n, vocab, generator=g, dtype=torch.float64, requires_grad=True)
    return student, top_ids, top_vals, tail


def _dense_buckets(student_logits, ids, vals, tail, mode, temperature):
    """Dense reference: full-vocabulary masks and sums, no log-space tricks."""
    q = torch.softmax(student_logits / temperature, -1)
    inside = torch.zeros_like(q, dtype=torch.bool).scatter(-1, ids, True)
    q_top = q.gather(-1, ids)
    p_top = vals.exp()
    if mode == "renorm":
        return p_top / p_top.sum(-1, keepdim=True), q_top / q_top.sum(-1, keepdim=True)
    q_rest = (q * (~inside)).sum(-1, keepdim=True)
    p = torch.cat([p_top, tail.exp().unsqueeze(-1)], -1)
    return p / p.sum(-1, keepdim=True), torch.cat([q_top, q_rest], -1)


def _dense_js(p, q):
    m = (p + q) / 2
    return 0.5 * (p * (p / m).log()).sum(-1) + 0.5 * (q * (q / m).log()).sum(-1)


def _dense_kl(p, q):
    return (p * (p / q).log()).sum(-1)


@pytest.mark.parametrize("tail", ["renorm", "ghost"])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize(
    ("sparse", "dense"), [(sparse_js, _dense_js), (sparse_kl, _dense_kl), (sparse_rkl, lambda p, q: _dense_kl(q, p))]
)
def test_sparse_loss_matches_dense_reference(tail, temperature, sparse, dense):
    student, ids, vals, tail_lp = _case(3)
    got = sparse(student, ids, vals, tail_lp, tail=tail, temperature=temperature)
    (grad_got,) = torch.autograd.grad(got, student)
    p, q = _dense_buckets(student, ids, vals, tail_lp, tail, temperature)
    want = dense(p, q).mean() * temperature**2
    (grad_want,) = torch.autograd.grad(want, student)
    assert torch.allclose(got, want, atol=1e-5, rtol=0)
    assert torch.allclose(grad_got, grad_want, atol=1e-5, rtol=0)


def test_js_is_zero_when_student_equals_teacher_and_bounded():
    student, ids, vals, tail = _case(5)
    g = torch.Generator().manual_seed(5)
    teacher_logits = torch.randn(6, 50, generator=g, dtype=torch.float64) * 2
    full = torch.log_softmax(teacher_logits, -1)
    v, i = full.topk(5, -1)
    t = torch.logsumexp(full.scatter(-1, i, float("-inf")), -1)
    assert sparse_js(teacher_logits, i, v, t, tail="ghost").abs() < 1e-10
    assert 0 < sparse_js(student, ids, vals, tail, tail="ghost") <= torch.log(torch.tensor(2.0))


def test_cross_entropy_uses_label_smoothing():
    logits = torch.tensor([[10.0, 0.0, 0.0]])
    assert cross_entropy(logits, torch.tensor([0]), 0.1) > cross_entropy(logits, torch.tensor([0]), 0.0)


@pytest.mark.parametrize("sparse", [sparse_js, sparse_kl, sparse_rkl])
def test_renorm_retempers_a_cache_of_another_temperature_exactly(sparse):
    """A top-k stored at T_c = 1, trained at T = 2 (renorm), gives the loss of a top-k stored at T = 2."""
    g = torch.Generator().manual_seed(5)
    teacher_logits = torch.randn(6, 50, generator=g, dtype=torch.float64) * 3
    student = torch.randn(6, 50, generator=g, dtype=torch.float64)
    at = {t: torch.log_softmax(teacher_logits / t, -1).topk(5, -1) for t in (1.0, 2.0)}
    assert torch.equal(at[1.0].indices, at[2.0].indices)  # tempering keeps the order
    tail = torch.zeros(6, dtype=torch.float64)  # unused by renorm
    retempered = sparse(student, at[1.0].indices, at[1.0].values, tail, "renorm", 2.0, teacher_temperature=1.0)
    stored_at_2 = sparse(student, at[2.0].indices, at[2.0].values, tail, "renorm", 2.0, teacher_temperature=2.0)
    assert torch.allclose(retempered, stored_at_2)
    assert not torch.allclose(sparse(student, at[1.0].indices, at[1.0].values, tail, "renorm", 2.0), stored_at_2)
    with pytest.raises(ValueError, match="cannot be re-tempered"):
        sparse(student, at[1.0].indices, at[1.0].values, tail, "ghost", 2.0, teacher_temperature=1.0)


@pytest.mark.parametrize("tail", ["renorm", "ghost"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("sparse", [sparse_js, sparse_kl, sparse_rkl])
def test_padding_entries_take_no_part(tail, dtype, sparse):
    """A position keeping fewer entries (min_prob caches: padding has log-prob -inf) gives the loss and the
    gradients of that position with only its kept entries, the padding's mass staying in the tail."""
    student, ids, vals, tail_lp = _case(5, k=6)
    student = student.detach().to(dtype).requires_grad_(True)
    counts = [1, 6, 3, 2, 6, 4]
    padded_ids, padded_vals, padded_tail = ids.clone(), vals.clone().to(dtype), tail_lp.clone().to(dtype)
    for t, c in enumerate(counts):
        padded_tail[t] = torch.logaddexp(tail_lp[t], torch.logsumexp(vals[t, c:], -1))
        padded_ids[t, c:], padded_vals[t, c:] = 0, float("-inf")
    got = sparse(student, padded_ids, padded_vals, padded_tail, tail=tail)
    (grad_got,) = torch.autograd.grad(got, student)
    want = sum(
        sparse(student[t : t + 1], ids[t : t + 1, :c], vals[t : t + 1, :c].to(dtype), padded_tail[t : t + 1], tail=tail)
        for t, c in enumerate(counts)
    ) / len(counts)
    (grad_want,) = torch.autograd.grad(want, student)
    assert torch.isfinite(got) and torch.isfinite(grad_got).all()
    tol = 1e-9 if dtype == torch.float64 else 1e-5
    assert torch.allclose(got, want, atol=tol, rtol=0)
    assert torch.allclose(grad_got, grad_want, atol=tol, rtol=0)
