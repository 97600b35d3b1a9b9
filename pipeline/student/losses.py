"""Distillation losses from a sparse (top-k) teacher, and the CE term.

The teacher is known only through its top-k log-probs and the log of the
mass outside them. Two ways to compare the student with it:

* ``renorm``: both distributions restricted to the teacher's top-k ids and
  renormalised there;
* ``ghost``: k + 1 buckets, the top-k ids plus one "ghost" bucket holding
  the remaining mass (the teacher's stored tail; the student's mass outside
  the teacher's top-k).

Only ``[N, k]`` gathers of the student's log-probs are used: no dense
vocabulary-sized teacher tensor is built. A position may keep fewer than k
entries (a cache built with ``min_prob``): its padding entries have teacher
log-prob -inf and take no part, on either side. Divergences are multiplied by
T^2 and averaged over the label positions given (padding already removed).

The stored log-probs are the teacher's at the cache's temperature T_c. In
``renorm`` mode they are re-tempered exactly to the training temperature T:
restricted to the top-k, softmax(z / T) = softmax(log p_Tc * T_c / T), since
the normaliser cancels. With ``ghost`` the outside mass cannot be
re-tempered (the other logits are unknown), so T must equal T_c.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x <= 0, accurate near 0 and for very negative x."""
    x = x.clamp(max=-1e-12)
    return torch.where(x > -0.6931, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


# Stands for "no entry" on both sides: exp() is exactly 0 in float32/bf16/fp16, and unlike -inf it keeps
# 0 * (log p - log q) at 0 and the gradients finite.
_ABSENT = -1.0e4


def sparse_buckets(
    student_logits: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_logprobs: torch.Tensor,
    tail_logprob: torch.Tensor,
    tail: str,
    temperature: float = 1.0,
    teacher_temperature: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(teacher, student) log-probabilities over the same buckets: ``[N, k]`` or ``[N, k+1]``.

    ``teacher_temperature``: the temperature the stored log-probs were taken at (default: ``temperature``)."""
    stored = temperature if teacher_temperature is None else teacher_temperature
    student_all = torch.log_softmax(student_logits / temperature, dim=-1)
    student = student_all.gather(-1, topk_ids)
    teacher = topk_logprobs.to(student.dtype)
    kept = torch.isfinite(teacher)
    student = torch.where(kept, student, torch.full_like(student, _ABSENT))
    teacher = torch.where(kept, teacher, torch.full_like(teacher, _ABSENT))
    if tail == "renorm":
        if stored != temperature:
            teacher = teacher * (stored / temperature)
        return torch.log_softmax(teacher, dim=-1), torch.log_softmax(student, dim=-1)
    if tail != "ghost":
        raise ValueError(f"tail must be renorm or ghost, not {tail!r}")
    if stored != temperature:
        raise ValueError(
            f"ghost tail: the cache's temperature {stored} differs from {temperature}; its outside mass cannot be re-tempered"
        )
    student_ghost = _log1mexp(torch.logsumexp(student, dim=-1))
    teacher = torch.cat([teacher, tail_logprob.to(student.dtype).unsqueeze(-1)], dim=-1)
    teacher = teacher - torch.logsumexp(teacher, dim=-1, keepdim=True)  # float16 storage: sum back to 1
    return teacher, torch.cat([student, student_ghost.unsqueeze(-1)], dim=-1)


def _kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def _js(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    log_m = torch.logaddexp(log_p, log_q) - torch.log(torch.tensor(2.0, dtype=log_p.dtype))
    return 0.5 * (_kl(log_p, log_m) + _kl(log_q, log_m))


def _bucket_loss(divergence):
    """A KD loss: ``divergence(teacher, student)`` per position over :func:`sparse_buckets`, mean, times T^2."""

    def loss(
        student_logits,
        topk_ids,
        topk_logprobs,
        tail_logprob,
        tail: str = "ghost",
        temperature: float = 1.0,
        teacher_temperature: float | None = None,
    ) -> torch.Tensor:
        log_p, log_q = sparse_buckets(
            student_logits, topk_ids, topk_logprobs, tail_logprob, tail, temperature, teacher_temperature
        )
        return divergence(log_p, log_q).mean() * temperature**2

    return loss


# Jensen-Shannon divergence.
sparse_js = _bucket_loss(_js)
# Forward KL(teacher || student).
sparse_kl = _bucket_loss(_kl)
# Reverse KL(student || teacher) over the same buckets: mode-seeking where forward KL is mass-covering. With
# ``ghost``, the student's mass outside the teacher's kept entries meets the teacher's tail as one bucket.
sparse_rkl = _bucket_loss(lambda log_p, log_q: _kl(log_q, log_p))


def cross_entropy(student_logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.1) -> torch.Tensor:
    return F.cross_entropy(student_logits, labels, label_smoothing=label_smoothing)


KD_LOSSES = {"js": sparse_js, "kl": sparse_kl, "rkl": sparse_rkl}


def weighted_cross_entropy(
    student_logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor, label_smoothing: float = 0.1
) -> torch.Tensor:
    """:func:`cross_entropy` with a weight per label token, still divided by the number of tokens (a weight of 0
    takes a token out of CE, not out of the mean)."""
    per_token = F.cross_entropy(student_logits, labels, label_smoothing=label_smoothing, reduction="none")
    return (per_token * weight).sum() / max(len(labels), 1)
