"""Pure-tensor losses of every harmonia method and baseline.

Conventions the training engine relies on:

- ``logits`` are aligned with ``input_ids`` (``[B, T, V]``) and ``labels`` too (``[B, T]``), with
  ``IGNORE_INDEX`` (-100) at prompt and padding positions. Functions that need next-token
  alignment shift internally with :func:`shift_for_next_token`: position ``t``'s logits predict
  ``labels[t + 1]``.
- Every loss returns a SUM over its units (target tokens, sequences or distilled positions),
  never a mean. The engine divides by the global number of units over gradient-accumulation
  micro-batches and processes (see :func:`num_target_tokens`, :func:`num_target_sequences`), so
  the normalisation does not depend on how examples are split into batches.
- Only the rows that contribute are gathered before any softmax, and they are upcast to float32
  there: prompts are usually much longer than answers, so this saves most of the memory of a
  full ``[B, T, V]`` float32 copy while keeping bf16 models numerically safe.
- Reference/teacher inputs are detached: gradients flow only into the trained model.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = -100

PushVariant = Literal["smooth_l1", "hinge"]


# ---------------------------------------------------------------------------------------------
# Alignment, masks and counts
# ---------------------------------------------------------------------------------------------


def shift_for_next_token(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Align logits with the labels they predict: ``logits[:, t]`` scores ``labels[:, t + 1]``.

    Returns views ``(logits[:, :-1], labels[:, 1:])``; no data is copied. This is the only place
    the shift happens, so every loss agrees on which position predicts which token.
    """
    if logits.dim() != 3 or labels.dim() != 2:
        raise ValueError(f"expected logits [B, T, V] and labels [B, T], got {tuple(logits.shape)} "
                         f"and {tuple(labels.shape)}")
    if logits.shape[:2] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} are not "
                         "aligned on [B, T]")
    if labels.shape[1] < 2:
        raise ValueError("sequences need at least 2 positions for next-token prediction")
    return logits[:, :-1], labels[:, 1:]


def target_mask(labels: Tensor) -> Tensor:
    """Bool ``[B, T-1]``: True where the shifted label is a target token (not -100)."""
    if labels.dim() != 2:
        raise ValueError(f"expected labels [B, T], got {tuple(labels.shape)}")
    return labels[:, 1:] != IGNORE_INDEX


def sequence_mask(labels: Tensor) -> Tensor:
    """Bool ``[B]``: True for sequences with at least one target token.

    Sequence-level losses must skip the other rows (pass this as ``valid``): an empty answer has
    log-probability 0, which is not "no loss" for NPO, SimNPO or DPO.
    """
    return target_mask(labels).any(dim=1)


def num_target_tokens(labels: Tensor) -> Tensor:
    """Number of target tokens (the normaliser of token-level losses), as a 0-dim int64 tensor."""
    return target_mask(labels).sum()


def num_target_sequences(labels: Tensor) -> Tensor:
    """Number of sequences with a target token (normaliser of sequence losses), 0-dim int64."""
    return sequence_mask(labels).sum()


def gather_positions(logits: Tensor, mask: Tensor) -> Tensor:
    """Select the rows of ``logits [B, T, V]`` where ``mask [B, T]`` is True, in row-major order.

    Returns ``[N, V]`` (N = ``mask.sum()``), a copy of only the selected rows.
    """
    if logits.dim() != 3 or mask.shape != logits.shape[:2]:
        raise ValueError(f"mask {tuple(mask.shape)} does not match logits {tuple(logits.shape)} "
                         "on [B, T]")
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be bool, got {mask.dtype}")
    return logits[mask]


def _target_rows(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Shifted target rows as float32 ``[N, V]``, their labels ``[N]`` and the ``[B, T-1]`` mask."""
    shifted_logits, shifted_labels = shift_for_next_token(logits, labels)
    mask = shifted_labels != IGNORE_INDEX
    return gather_positions(shifted_logits, mask).float(), shifted_labels[mask], mask


# ---------------------------------------------------------------------------------------------
# Token and sequence log-probabilities
# ---------------------------------------------------------------------------------------------


def token_logprobs(logits: Tensor, labels: Tensor) -> Tensor:
    """Log-probability of each target token, float32 ``[B, T-1]``, 0 where the label is -100.

    Computed with ``cross_entropy(reduction='none')`` on the target rows only.
    """
    rows, row_labels, mask = _target_rows(logits, labels)
    out = torch.zeros(mask.shape, dtype=torch.float32, device=logits.device)
    out[mask] = -row_nll(rows, row_labels)
    return out


def row_nll(rows: Tensor, labels: Tensor) -> Tensor:
    """Negative log-likelihood of ``labels [N]`` under each row of logits ``[N, V]``, float32 ``[N]``."""
    return F.cross_entropy(rows.float(), labels, reduction="none")


def nll_sum(logits: Tensor, labels: Tensor) -> Tensor:
    """Summed negative log-likelihood of the target tokens.

    Used by SFT / refusal SFT, the GradDiff retain term, and (negated) by gradient ascent.
    Normalise by :func:`num_target_tokens`.
    """
    return -token_logprobs(logits, labels).sum()


def sequence_logprob(logits: Tensor, labels: Tensor) -> Tensor:
    """``log pi(y|x)`` of each sequence: sum of its target-token log-probs, ``[B]`` (0 if empty)."""
    return token_logprobs(logits, labels).sum(dim=1)


def sequence_avg_logprob(logits: Tensor, labels: Tensor) -> Tensor:
    """Length-normalised ``log pi(y|x) / |y|`` per sequence, ``[B]`` (SimNPO's reward).

    Sequences without target tokens get 0; exclude them with :func:`sequence_mask`.
    """
    counts = target_mask(labels).sum(dim=1)
    # clamp only avoids 0/0 for empty rows, whose value is documented as meaningless
    return sequence_logprob(logits, labels) / counts.clamp(min=1)


def _masked_sum(per_sequence: Tensor, valid: Tensor | None) -> Tensor:
    """Sum a ``[B]`` loss over the rows where ``valid`` is True (all rows when None)."""
    if valid is None:
        return per_sequence.sum()
    if valid.shape != per_sequence.shape or valid.dtype != torch.bool:
        raise ValueError(f"valid must be bool {tuple(per_sequence.shape)}, got {valid.dtype} "
                         f"{tuple(valid.shape)}")
    return per_sequence[valid].sum()


# ---------------------------------------------------------------------------------------------
# Preference-style unlearning losses (sequence level)
# ---------------------------------------------------------------------------------------------


def npo_sum(policy_logp: Tensor, ref_logp: Tensor, beta: float = 0.1,
            valid: Tensor | None = None) -> Tensor:
    """Negative Preference Optimization (Zhang et al. 2024, arXiv 2404.05868), summed.

    Per forget sequence: ``(2/beta) * softplus(beta * (log pi(y|x) - log pi_ref(y|x)))``, i.e.
    ``-(2/beta) log sigmoid(-beta log(pi/pi_ref))``: a bounded version of gradient ascent that
    stops pushing once the policy is well below the reference. ``valid`` ([B] bool, usually
    :func:`sequence_mask`) selects the rows that count; normalise by their number.
    """
    per_seq = (2.0 / beta) * F.softplus(beta * (policy_logp - ref_logp.detach()))
    return _masked_sum(per_seq, valid)


def simnpo_sum(policy_avg_logp: Tensor, beta: float = 4.5, gamma: float = 0.0,
               valid: Tensor | None = None) -> Tensor:
    """SimNPO (Fan et al. 2024, arXiv 2410.07163), summed over forget sequences.

    Per sequence: ``(2/beta) * softplus(beta * log pi(y|x)/|y| + gamma)`` (paper's form
    ``-(2/beta) log sigmoid(-beta/|y| log pi - gamma)``): NPO without a reference model, with
    length normalisation and a reward margin ``gamma``. Defaults: beta 4.5, gamma 0 (the
    authors' TOFU forget10 setting as listed by OpenUnlearning; MUSE-Books uses beta 0.75,
    gamma 0). Note: the authors' code subtracts gamma before multiplying by beta, so their
    ``gamma`` equals this one divided by beta.
    """
    per_seq = (2.0 / beta) * F.softplus(beta * policy_avg_logp + gamma)
    return _masked_sum(per_seq, valid)


def dpo_sum(policy_chosen: Tensor, policy_rejected: Tensor, ref_chosen: Tensor,
            ref_rejected: Tensor, beta: float = 0.1, valid: Tensor | None = None) -> Tensor:
    """Direct Preference Optimization (Rafailov et al. 2023, arXiv 2305.18290), summed.

    Per pair: ``-log sigmoid(beta * ((pc - rc) - (pr - rr)))`` on sequence log-probs. For IdkDPO
    (as in TOFU, Maini et al. 2024, arXiv 2401.06121) the chosen answer is a refusal and the
    rejected one is the gold answer. ``valid`` should require both answers to be non-empty.
    """
    margin = (policy_chosen - ref_chosen.detach()) - (policy_rejected - ref_rejected.detach())
    return _masked_sum(-F.logsigmoid(beta * margin), valid)


def kl_sum(student_logits: Tensor, ref_logits: Tensor, labels: Tensor) -> Tensor:
    """``KL(ref || student)`` of next-token distributions, summed over target positions.

    The GradDiff-KL retain term (as in TOFU, Maini et al. 2024, arXiv 2401.06121): keep the
    model's retain-set predictions equal to the frozen reference's. Normalise by
    :func:`num_target_tokens`.
    """
    if student_logits.shape != ref_logits.shape:
        raise ValueError(f"student {tuple(student_logits.shape)} and reference "
                         f"{tuple(ref_logits.shape)} logits differ in shape")
    student_rows, _, _ = _target_rows(student_logits, labels)
    ref_rows, _, _ = _target_rows(ref_logits.detach(), labels)
    return F.kl_div(F.log_softmax(student_rows, dim=-1), F.log_softmax(ref_rows, dim=-1),
                    reduction="sum", log_target=True)


# ---------------------------------------------------------------------------------------------
# RMU (representation misdirection)
# ---------------------------------------------------------------------------------------------


def activation_mse_sum(acts: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Squared error averaged over the hidden dim, summed over positions where ``mask`` is True.

    RMU (Li et al. 2024, WMDP, arXiv 2403.03218): the forget term pulls a layer's activations
    ``acts [B, T, H]`` toward the control vector ``c*u`` (``target [H]``), the retain term keeps
    them equal to the frozen model's (``target [B, T, H]``, detached). Normalise by
    ``mask.sum()``.
    """
    if acts.dim() != 3 or mask.shape != acts.shape[:2]:
        raise ValueError(f"expected acts [B, T, H] and mask [B, T], got {tuple(acts.shape)} and "
                         f"{tuple(mask.shape)}")
    target = target.detach()
    if target.shape == acts.shape:
        target = gather_positions(target, mask)
    elif target.shape != acts.shape[-1:]:
        raise ValueError(f"target must be [H] or [B, T, H] matching acts {tuple(acts.shape)}, got "
                         f"{tuple(target.shape)}")
    rows = gather_positions(acts, mask).float()
    return (rows - target.float()).pow(2).mean(dim=-1).sum()


def rmu_control_vector(hidden: int, coeff: float, generator: torch.Generator,
                       dtype: torch.dtype = torch.float32) -> Tensor:
    """RMU's fixed random direction ``coeff * u / ||u||`` with ``u ~ U[0, 1)^hidden``, ``[H]``.

    Drawn once per run, as in the WMDP reference code; deterministic under ``generator``'s seed
    and placed on the generator's device.
    """
    u = torch.rand(hidden, generator=generator, device=generator.device, dtype=torch.float32)
    return (u / u.norm() * coeff).to(dtype)


# ---------------------------------------------------------------------------------------------
# Bidirectional Top-K logit distillation (METHOD.md Part 3)
# ---------------------------------------------------------------------------------------------


class TopK(NamedTuple):
    """A teacher's cached Top-K per position: ``ids [N, K]`` and ``values [N, K]``, descending."""

    ids: Tensor
    values: Tensor


class DistillSums(NamedTuple):
    """Per-term sums over distilled positions; the engine weights and normalises them."""

    pull: Tensor
    push: Tensor


def teacher_topk(teacher_logits: Tensor, k: int) -> TopK:
    """Top-K ids and values of ``teacher_logits [N, V]``, sorted descending (for caching)."""
    if teacher_logits.dim() != 2 or not 1 <= k <= teacher_logits.shape[-1]:
        raise ValueError(f"need teacher logits [N, V] and 1 <= k <= V, got "
                         f"{tuple(teacher_logits.shape)} and k={k}")
    values, ids = torch.topk(teacher_logits.detach(), k, dim=-1, sorted=True)
    return TopK(ids, values)


def _resolve_teacher(student: Tensor, teacher: Tensor | TopK, k: int | None) -> tuple[TopK, Tensor | None]:
    """Return the teacher's Top-K (sliced to ``k``) and its detached full logits when given."""
    if isinstance(teacher, TopK):
        cached_k = teacher.ids.shape[-1]
        if teacher.ids.shape != teacher.values.shape or teacher.ids.shape[0] != student.shape[0]:
            raise ValueError(f"cached Top-K ids {tuple(teacher.ids.shape)} / values "
                             f"{tuple(teacher.values.shape)} do not match {student.shape[0]} positions")
        k = cached_k if k is None else k
        if not 1 <= k <= cached_k:
            raise ValueError(f"k={k} needs 1 <= k <= the cached K={cached_k}")
        # the cache is sorted descending, so its first k entries are the teacher's Top-k
        return TopK(teacher.ids[:, :k], teacher.values[:, :k].detach()), None
    if teacher.shape != student.shape:
        raise ValueError(f"teacher logits {tuple(teacher.shape)} and student logits "
                         f"{tuple(student.shape)} differ in shape")
    if k is None:
        raise ValueError("k is required when the teacher is given as full logits")
    full = teacher.detach()
    return teacher_topk(full, k), full


def topk_distill_sums(student: Tensor, teacher: Tensor | TopK, k: int | None = None, *,
                      beta: float = 1.0, push: PushVariant = "smooth_l1", margin: float = 0.0,
                      centre: bool = False, weights: Tensor | None = None) -> DistillSums:
    """Bidirectional Top-K logit distillation (arXiv 2604.15482; DUET, arXiv 2601.21283).

    ``student [N, V]`` are the student's logits at the N distilled positions (see
    :func:`gather_positions`); ``teacher`` is either the teacher's full logits ``[N, V]`` or a
    cached :class:`TopK` (then ``k`` defaults to, and may not exceed, the cached K). Per position:

    - pull: SmoothL1(beta)(S_i - T_i) averaged over the teacher's Top-K ids i: imitate the
      teacher's preferred tokens.
    - push: over the student's own Top-K ids not in the teacher's Top-K (its confident tokens the
      teacher does not want), summed and divided by K (a fixed denominator, so positions with
      fewer such ids are not up-weighted). ``'smooth_l1'``: SmoothL1(beta)(S_i - T_i) toward the
      teacher's logits, which needs full teacher logits. ``'hinge'``: relu(S_i - (T_K - margin))
      with T_K the teacher's K-th largest logit, which works from the cache.
    - ``centre``: raw logits of two models can differ by a per-position constant, which SmoothL1
      would otherwise learn; each model's logits are first reduced by their mean over the
      teacher's Top-K ids (the same constants are used for push).

    Returns the sums over positions of both terms, each position's value multiplied by
    ``weights [N]`` when given. Gradients reach only ``student``.
    """
    if student.dim() != 2:
        raise ValueError(f"student logits must be [N, V], got {tuple(student.shape)}")
    if push not in ("smooth_l1", "hinge"):
        raise ValueError(f"unknown push variant {push!r}; expected 'smooth_l1' or 'hinge'")
    if push == "smooth_l1" and isinstance(teacher, TopK):
        raise ValueError("push='smooth_l1' needs the teacher's full logits (the student's Top-K ids "
                         "are not in a cached Top-K); pass full logits or use push='hinge'")
    top, full = _resolve_teacher(student, teacher, k)
    k = top.ids.shape[-1]
    t_top = top.values.float()
    s_top = student.gather(-1, top.ids).float()

    if centre:
        t_shift = t_top.mean(dim=-1, keepdim=True)
        s_shift = s_top.mean(dim=-1, keepdim=True)  # keeps its gradient: shifts cancel exactly
    else:
        t_shift = s_shift = torch.zeros((), device=student.device)

    if weights is None:
        weights = torch.ones(student.shape[0], device=student.device)
    elif weights.shape != student.shape[:1]:
        raise ValueError(f"weights must be [N] = [{student.shape[0]}], got {tuple(weights.shape)}")
    pull = F.smooth_l1_loss(s_top - s_shift, t_top - t_shift, reduction="none", beta=beta)
    pull_sum = (pull.mean(dim=-1) * weights).sum()

    # the student's Top-K is a selection, not a gradient path: pick ids on detached logits
    s_ids = torch.topk(student.detach(), k, dim=-1).indices
    outside = ~(s_ids.unsqueeze(-1) == top.ids.unsqueeze(-2)).any(dim=-1)
    s_push = student.gather(-1, s_ids).float() - s_shift
    if push == "smooth_l1":
        t_push = full.gather(-1, s_ids).float() - t_shift  # full is set: cache case raised above
        per_id = F.smooth_l1_loss(s_push, t_push, reduction="none", beta=beta)
    else:
        threshold = t_top[:, -1:] - t_shift - margin
        per_id = F.relu(s_push - threshold)
    push_sum = ((per_id * outside).sum(dim=-1).div(k) * weights).sum()
    return DistillSums(pull_sum, push_sum)


# ---------------------------------------------------------------------------------------------
# BiLD (ablation baseline)
# ---------------------------------------------------------------------------------------------


def _logit_difference_kl(student_sel: Tensor, teacher_sel: Tensor, temperature: float) -> Tensor:
    """KL(softmax(teacher pair diffs) || softmax(student pair diffs)) per row, ``[N]``.

    Pairs are ``(i, j)`` with ``i < j`` in the leading model's descending order.
    """
    k = student_sel.shape[-1]
    i, j = torch.triu_indices(k, k, offset=1, device=student_sel.device)
    s_diff = (student_sel[:, i] - student_sel[:, j]) / temperature
    t_diff = (teacher_sel[:, i] - teacher_sel[:, j]) / temperature
    return F.kl_div(F.log_softmax(s_diff, dim=-1), F.log_softmax(t_diff, dim=-1),
                    reduction="none", log_target=True).sum(dim=-1)


def bild_sum(student: Tensor, teacher: Tensor, k: int = 8, temperature: float = 3.0) -> Tensor:
    """BiLD loss (Li et al. 2024, arXiv 2406.13555), summed over positions.

    t-LD: take the teacher's Top-k ids, form the pairwise logit differences ``z_i - z_j``
    (``i < j`` in descending order) of teacher and student at those ids, and take
    ``KL(softmax(teacher diffs / temperature) || softmax(student diffs / temperature))``.
    s-LD: the same led by the student's Top-k. BiLD = t-LD + s-LD. Defaults k=8, temperature 3
    follow the authors' code. ``student``/``teacher`` are ``[N, V]``; the teacher is detached.
    """
    if student.dim() != 2 or teacher.shape != student.shape:
        raise ValueError(f"need student and teacher logits [N, V] of equal shape, got "
                         f"{tuple(student.shape)} and {tuple(teacher.shape)}")
    if not 2 <= k <= student.shape[-1]:
        raise ValueError(f"BiLD needs 2 <= k <= V (pairs of logits), got k={k}")
    teacher = teacher.detach()
    t_ids = torch.topk(teacher, k, dim=-1).indices
    s_ids = torch.topk(student.detach(), k, dim=-1).indices
    t_led = _logit_difference_kl(student.gather(-1, t_ids).float(), teacher.gather(-1, t_ids).float(),
                                 temperature)
    s_led = _logit_difference_kl(student.gather(-1, s_ids).float(), teacher.gather(-1, s_ids).float(),
                                 temperature)
    return (t_led + s_led).sum()
