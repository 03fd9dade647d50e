"""Losses of harmonia.methods.losses, each checked against values worked out by hand.

Logits are chosen so softmax probabilities are simple fractions: a row [ln3, 0, 0, 0] gives
p = (1/2, 1/6, 1/6, 1/6) and a zero row gives p = 1/4 everywhere.
"""

from __future__ import annotations

import math

import pytest
import torch

from harmonia.methods.losses import (
    DistillSums,
    TopK,
    activation_mse_sum,
    bild_sum,
    dpo_sum,
    gather_positions,
    kl_sum,
    nll_sum,
    npo_sum,
    num_target_sequences,
    num_target_tokens,
    rmu_control_vector,
    sequence_avg_logprob,
    sequence_logprob,
    sequence_mask,
    simnpo_sum,
    target_mask,
    teacher_topk,
    token_logprobs,
    topk_distill_sums,
)

LN2, LN3 = math.log(2.0), math.log(3.0)


def approx(value: float) -> object:
    return pytest.approx(value, abs=1e-5)


def lm_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """B=2, T=4, V=4. Row 0: prompt at 0-1, answer at 2-3. Row 1: prompt 0, answer 1-2, pad 3.

    Targets (after the shift): row 0 t=1 -> token 2, t=2 -> token 1; row 1 t=0 -> token 3,
    t=1 -> token 0. Every other position carries large junk logits that must not matter.
    """
    logits = torch.full((2, 4, 4), 7.0)
    logits[:, :, 1] = -9.0  # junk, overwritten at target positions below
    logits[0, 1] = torch.tensor([0.0, 0.0, LN3, 0.0])  # p(2) = 3/6 -> log p = -ln 2
    logits[0, 2] = 0.0  # uniform -> p(1) = 1/4 -> -ln 4
    logits[1, 0] = torch.tensor([LN3, 0.0, 0.0, 0.0])  # p(3) = 1/6 -> -ln 6
    logits[1, 1] = torch.tensor([LN3, 0.0, 0.0, 0.0])  # p(0) = 1/2 -> -ln 2
    labels = torch.tensor([[-100, -100, 2, 1], [-100, 3, 0, -100]])
    return logits, labels


# ---------------------------------------------------------------------------------------------
# token / sequence log-probs, masking, shift, counts
# ---------------------------------------------------------------------------------------------


def test_token_logprobs_hand_values_and_shift() -> None:
    logits, labels = lm_batch()
    lp = token_logprobs(logits, labels)
    assert lp.shape == (2, 3)
    expected = [[0.0, -LN2, -math.log(4)], [-math.log(6), -LN2, 0.0]]
    assert lp.tolist() == [[approx(v) for v in row] for row in expected]
    assert target_mask(labels).tolist() == [[False, True, True], [True, True, False]]


def test_unshifted_alignment_would_differ() -> None:
    # The informative row [0, 0, ln3, 0] sits at t=1 and scores labels[2]=2. Moving it to t=2
    # (the unshifted position of label 2) must change the result.
    logits, labels = lm_batch()
    moved = logits.clone()
    moved[0, 1], moved[0, 2] = logits[0, 2].clone(), logits[0, 1].clone()
    # now t=1 is uniform (-ln 4 for token 2), t=2 gives p(1) = 1/6
    assert token_logprobs(moved, labels)[0].tolist() == [0.0, approx(-math.log(4)), approx(-math.log(6))]


def test_prompt_and_padding_positions_do_not_matter() -> None:
    logits, labels = lm_batch()
    before = token_logprobs(logits, labels)
    changed = logits.clone()
    # prompt position whose next label is -100 (row 0, t=0), padding (row 1, t=2 predicts pad and
    # t=3 has nothing to predict) and row 0's last position
    for b, t in [(0, 0), (0, 3), (1, 2), (1, 3)]:
        changed[b, t] = torch.tensor([50.0, -50.0, 3.0, 11.0])
    assert torch.equal(token_logprobs(changed, labels), before)
    # control: a target position does matter
    changed[0, 1] = 0.0
    assert not torch.allclose(token_logprobs(changed, labels), before)


def test_nll_sequence_logprob_and_counts() -> None:
    logits, labels = lm_batch()
    # ln2 + ln4 + ln6 + ln2 = ln 96
    assert nll_sum(logits, labels).item() == approx(math.log(96))
    assert sequence_logprob(logits, labels).tolist() == [approx(-math.log(8)), approx(-math.log(12))]
    # two target tokens each
    assert sequence_avg_logprob(logits, labels).tolist() == [approx(-math.log(8) / 2),
                                                             approx(-math.log(12) / 2)]
    assert num_target_tokens(labels).item() == 4
    assert num_target_sequences(labels).item() == 2


def test_sum_semantics_duplicate_batch_doubles_sum_and_count() -> None:
    logits, labels = lm_batch()
    logits2, labels2 = torch.cat([logits, logits]), torch.cat([labels, labels])
    assert nll_sum(logits2, labels2).item() == approx(2 * math.log(96))
    assert num_target_tokens(labels2).item() == 8
    assert num_target_sequences(labels2).item() == 4


def test_sequence_without_targets_is_excluded() -> None:
    logits, labels = lm_batch()
    labels = torch.cat([labels, torch.full((1, 4), -100)])
    logits = torch.cat([logits, torch.zeros(1, 4, 4)])
    assert sequence_mask(labels).tolist() == [True, True, False]
    assert num_target_sequences(labels).item() == 2
    assert sequence_avg_logprob(logits, labels)[2].item() == 0.0
    # NPO of an empty row would be (2/beta) ln 2 > 0; the mask removes it
    zero = torch.zeros(3)
    assert npo_sum(zero, zero, beta=0.1, valid=sequence_mask(labels)).item() == approx(2 * 20 * LN2)


def test_gradient_reaches_logits_only_at_target_positions() -> None:
    logits, labels = lm_batch()
    logits.requires_grad_(True)
    nll_sum(logits, labels).backward()
    touched = logits.grad.abs().sum(-1) > 0
    assert touched.tolist() == [[False, True, True, False], [True, True, False, False]]


def test_shape_errors() -> None:
    logits, labels = lm_batch()
    with pytest.raises(ValueError, match="aligned"):
        token_logprobs(logits, labels[:, :3])
    with pytest.raises(ValueError, match="bool"):
        gather_positions(logits, torch.ones(2, 4))


def test_gather_positions_row_major() -> None:
    logits = torch.arange(2 * 3 * 2, dtype=torch.float32).view(2, 3, 2)
    mask = torch.tensor([[False, True, True], [True, False, False]])
    assert gather_positions(logits, mask).tolist() == [[2.0, 3.0], [4.0, 5.0], [6.0, 7.0]]


# ---------------------------------------------------------------------------------------------
# NPO, SimNPO, DPO, KL
# ---------------------------------------------------------------------------------------------


def test_npo_hand_values_and_reference_detached() -> None:
    beta = 0.1
    policy = torch.tensor([-5.0, -5.0 + LN3 / beta], requires_grad=True)
    ref = torch.tensor([-5.0, -5.0], requires_grad=True)
    loss = npo_sum(policy, ref, beta=beta)
    # (2/0.1) * softplus(0) = 20 ln 2 ; (2/0.1) * softplus(ln 3) = 20 ln(1 + 3) = 40 ln 2
    assert loss.item() == approx(60 * LN2)
    loss.backward()
    assert ref.grad is None
    # d/dx (2/b) softplus(b x) = 2 sigmoid(b x): 2 * 1/2 = 1 and 2 * 3/4 = 1.5
    assert policy.grad.tolist() == [approx(1.0), approx(1.5)]


def test_simnpo_hand_values() -> None:
    avg = torch.tensor([-0.5, 0.0])
    # beta 2, gamma 1: (2/2) softplus(2 * -0.5 + 1) = ln 2 ; softplus(0 + 1) = ln(1 + e)
    assert simnpo_sum(avg, beta=2.0, gamma=1.0).item() == approx(LN2 + math.log(1 + math.e))
    # defaults beta 4.5, gamma 0 at avg = 0: (2/4.5) ln 2 per row
    assert simnpo_sum(torch.zeros(2)).item() == approx(2 * (2 / 4.5) * LN2)


def test_dpo_hand_values() -> None:
    pc = torch.tensor([-1.0, -1.0], requires_grad=True)
    pr = torch.tensor([-2.0, -4.0])
    rc = torch.tensor([-1.0, -3.0], requires_grad=True)
    rr = torch.tensor([-2.0, -2.0])
    # margins: (0) - (0) = 0 -> ln 2 ; (2) - (-2) = 4, beta 0.5 -> -logsigmoid(2) = ln(1 + e^-2)
    loss = dpo_sum(pc, pr, rc, rr, beta=0.5)
    assert loss.item() == approx(LN2 + math.log(1 + math.exp(-2)))
    loss.backward()
    assert rc.grad is None
    # valid excludes the second pair
    assert dpo_sum(pc, pr, rc, rr, beta=0.5, valid=torch.tensor([True, False])).item() == approx(LN2)


def test_kl_ref_student_hand_value_and_masking() -> None:
    labels = torch.tensor([[-100, 1, -100]])  # only t=0 is a target position
    student = torch.zeros(1, 3, 4)
    ref = torch.zeros(1, 3, 4)
    ref[0, 0] = torch.tensor([LN3, 0.0, 0.0, 0.0])  # p = (1/2, 1/6, 1/6, 1/6), q = 1/4
    ref[0, 1] = torch.tensor([9.0, -9.0, 0.0, 0.0])  # t=1 predicts a -100 label: ignored
    ref[0, 2] = torch.tensor([-9.0, 9.0, 0.0, 0.0])  # last position: ignored
    # KL(p || q) = 1/2 ln(2) + 3 * 1/6 ln(4/6)
    expected = 0.5 * LN2 + 0.5 * math.log(2 / 3)
    student.requires_grad_(True)
    ref.requires_grad_(True)
    loss = kl_sum(student, ref, labels)
    assert loss.item() == approx(expected)
    loss.backward()
    assert ref.grad is None
    assert kl_sum(ref.detach(), ref.detach(), labels).item() == approx(0.0)


# ---------------------------------------------------------------------------------------------
# RMU
# ---------------------------------------------------------------------------------------------


def test_activation_mse_with_control_vector_and_frozen_target() -> None:
    acts = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = torch.tensor([[True, True, False]])
    # target c*u = [1, 0]: ((0)^2 + 2^2)/2 = 2 ; (2^2 + 4^2)/2 = 10
    assert activation_mse_sum(acts, torch.tensor([1.0, 0.0]), mask).item() == approx(12.0)
    frozen = torch.tensor([[[0.0, 0.0], [3.0, 3.0], [0.0, 0.0]]])
    # (1 + 4)/2 = 2.5 ; (0 + 1)/2 = 0.5 ; masked position ignored
    assert activation_mse_sum(acts, frozen, mask).item() == approx(3.0)
    with pytest.raises(ValueError, match="target"):
        activation_mse_sum(acts, torch.zeros(3), mask)


def test_rmu_control_vector_norm_sign_and_seed() -> None:
    u1 = rmu_control_vector(16, 6.5, torch.Generator().manual_seed(0))
    u2 = rmu_control_vector(16, 6.5, torch.Generator().manual_seed(0))
    u3 = rmu_control_vector(16, 6.5, torch.Generator().manual_seed(1))
    assert u1.shape == (16,)
    assert u1.norm().item() == approx(6.5)
    assert bool((u1 >= 0).all())
    assert torch.equal(u1, u2)
    assert not torch.equal(u1, u3)


# ---------------------------------------------------------------------------------------------
# Top-K distillation
# ---------------------------------------------------------------------------------------------

# One position, V=6, K=2. Teacher Top-2: ids {0, 1} (4, 3), K-th logit 3.
# Student Top-2: ids {2, 0} (5, 3.5); id 2 is outside the teacher's Top-2 -> the only push id.
T1 = [4.0, 3.0, 1.0, 0.0, -1.0, 2.0]
S1 = [3.5, 1.0, 5.0, 0.0, -1.0, 2.0]


def one_position() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor([S1], requires_grad=True), torch.tensor([T1])


def test_pull_and_push_hand_values() -> None:
    s, t = one_position()
    out = topk_distill_sums(s, t, 2, beta=1.0, push="smooth_l1")
    # pull: SmoothL1(3.5-4 = -0.5) = 0.5*0.25 = 0.125 ; SmoothL1(1-3 = -2) = 2-0.5 = 1.5 ; mean 0.8125
    assert out.pull.item() == approx(0.8125)
    # push: id 2, SmoothL1(5-1 = 4) = 3.5, divided by K=2
    assert out.push.item() == approx(1.75)
    # hinge, margin 0.5: relu(5 - (3 - 0.5)) = 2.5, / K
    hinge = topk_distill_sums(s, t, 2, push="hinge", margin=0.5)
    assert hinge.push.item() == approx(1.25)
    assert hinge.pull.item() == approx(0.8125)


def test_position_weights_multiply_each_positions_terms() -> None:
    s, t = one_position()
    s2, t2 = torch.cat([s, s]).detach().requires_grad_(), torch.cat([t, t])
    out = topk_distill_sums(s2, t2, 2, push="smooth_l1", weights=torch.tensor([2.0, 0.5]))
    assert out.pull.item() == approx(2.5 * 0.8125) and out.push.item() == approx(2.5 * 1.75)
    with pytest.raises(ValueError, match="weights must be"):
        topk_distill_sums(s2, t2, 2, weights=torch.ones(3))


def test_smooth_l1_beta() -> None:
    s, t = one_position()
    out = topk_distill_sums(s, t, 2, beta=0.5)
    # |x| >= beta -> |x| - beta/2: 0.5-0.25 = 0.25 ; 2-0.25 = 1.75 ; mean 1.0 ; push (4-0.25)/2
    assert out.pull.item() == approx(1.0)
    assert out.push.item() == approx(1.875)


def test_centre_hand_values() -> None:
    s, t = one_position()
    # teacher constant (4+3)/2 = 3.5 ; student constant (3.5+1)/2 = 2.25
    # centred Top-K: teacher (0.5, -0.5), student (1.25, -1.25): diffs +-0.75 -> 0.5*0.5625 each
    out = topk_distill_sums(s, t, 2, centre=True)
    assert out.pull.item() == approx(0.28125)
    # push id 2: student 5-2.25 = 2.75, teacher 1-3.5 = -2.5, diff 5.25 -> 4.75, / 2
    assert out.push.item() == approx(2.375)
    # hinge: threshold (3-3.5) - 0.5 = -1 ; relu(2.75 + 1) = 3.75, / 2
    assert topk_distill_sums(s, t, 2, push="hinge", margin=0.5, centre=True).push.item() == approx(1.875)


def test_centre_hand_gradient() -> None:
    s, t = one_position()
    out = topk_distill_sums(s, t, 2, centre=True)
    out.pull.backward(retain_graph=True)
    # centred diffs +0.75 / -0.75 -> SmoothL1' / K = +0.375 / -0.375 ; the student constant is
    # (S0 + S1)/2, so dS0 = 0.375*(1 - 1/2) + (-0.375)*(-1/2) = 0.375 and dS1 = -0.375
    assert s.grad.tolist() == [[approx(0.375), approx(-0.375), 0.0, 0.0, 0.0, 0.0]]
    s.grad = None
    out.push.backward()
    # push: SmoothL1'(5.25) / K = 0.5 on (S2 - (S0 + S1)/2)
    assert s.grad.tolist() == [[approx(-0.25), approx(-0.25), approx(0.5), 0.0, 0.0, 0.0]]


def test_centre_is_invariant_to_student_shift() -> None:
    s, t = one_position()
    shifted = (s.detach() + 10.0).requires_grad_(True)
    a = topk_distill_sums(s, t, 2, centre=True)
    b = topk_distill_sums(shifted, t, 2, centre=True)
    assert b.pull.item() == approx(a.pull.item())
    assert b.push.item() == approx(a.push.item())
    # without centring the shift is penalised
    assert topk_distill_sums(shifted, t, 2).pull.item() > a.pull.item() + 1.0


def test_two_positions_sum_and_fixed_denominator() -> None:
    # position 2: teacher Top-2 ids {0, 1} (5, 4); student Top-2 ids {2, 3} (3, 2), both pushed
    s = torch.tensor([S1, [0.0, 0.0, 3.0, 2.0, 0.0, 0.0]])
    t = torch.tensor([T1, [5.0, 4.0, 0.0, 0.0, 0.0, 0.0]])
    out = topk_distill_sums(s, t, 2)
    # position 2 pull: SmoothL1(-5) = 4.5, SmoothL1(-4) = 3.5, mean 4 ; push (2.5 + 1.5)/2 = 2
    assert out.pull.item() == approx(0.8125 + 4.0)
    assert out.push.item() == approx(1.75 + 2.0)
    # hinge margin 0.5 at position 2: threshold 3.5, both student logits below -> 0
    assert topk_distill_sums(s, t, 2, push="hinge", margin=0.5).push.item() == approx(1.25)


def test_no_push_when_student_topk_matches_teacher() -> None:
    t = torch.tensor([T1])
    s = torch.tensor([[9.0, 8.0, 1.0, 0.0, -1.0, 2.0]])  # Top-2 ids {0, 1}, far above T_K
    assert topk_distill_sums(s, t, 2, push="hinge").push.item() == 0.0
    assert topk_distill_sums(s, t, 2).push.item() == 0.0


def test_hand_gradient_and_teacher_detached() -> None:
    s, _ = one_position()
    t = torch.tensor([T1], requires_grad=True)
    out = topk_distill_sums(s, t, 2)
    (out.pull + out.push).backward()
    assert t.grad is None
    # pull: d/dS0 SmoothL1(-0.5)/2 = -0.5/2 ; d/dS1 SmoothL1(-2)/2 = -1/2 ; push d/dS2 = +1/2
    assert s.grad.tolist() == [[approx(-0.25), approx(-0.5), approx(0.5), 0.0, 0.0, 0.0]]


def test_cache_gradients_do_not_reach_values() -> None:
    s, t = one_position()
    ids, values = teacher_topk(t, 2)
    values = values.clone().requires_grad_(True)
    out = topk_distill_sums(s, TopK(ids, values), push="hinge")
    (out.pull + out.push).backward()
    assert values.grad is None
    assert s.grad is not None


def test_teacher_topk_sorted_descending() -> None:
    ids, values = teacher_topk(torch.tensor([T1]), 3)
    assert ids.tolist() == [[0, 1, 5]]
    assert values.tolist() == [[4.0, 3.0, 2.0]]


@pytest.mark.parametrize("centre", [False, True])
def test_cached_equals_full_for_pull_and_hinge(centre: bool) -> None:
    gen = torch.Generator().manual_seed(0)
    s = torch.randn(5, 10, generator=gen)
    t = torch.randn(5, 10, generator=gen)
    full = topk_distill_sums(s, t, 3, push="hinge", margin=0.2, centre=centre)
    cached = topk_distill_sums(s, teacher_topk(t, 3), push="hinge", margin=0.2, centre=centre)
    # a larger cache sliced to k=3 is the same teacher Top-3
    sliced = topk_distill_sums(s, teacher_topk(t, 6), 3, push="hinge", margin=0.2, centre=centre)
    for other in (cached, sliced):
        assert isinstance(other, DistillSums)
        assert other.pull.item() == approx(full.pull.item())
        assert other.push.item() == approx(full.push.item())
    assert full.pull.item() > 0 and full.push.item() > 0


def test_smooth_l1_push_from_cache_raises() -> None:
    s, t = one_position()
    with pytest.raises(ValueError, match="full logits"):
        topk_distill_sums(s, teacher_topk(t, 2), push="smooth_l1")
    with pytest.raises(ValueError, match="cached K"):
        topk_distill_sums(s, teacher_topk(t, 2), 3, push="hinge")
    with pytest.raises(ValueError, match="push variant"):
        topk_distill_sums(s, t, 2, push="l2")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# BiLD
# ---------------------------------------------------------------------------------------------


def kl_of_softmaxes(p_logits: list[float], q_logits: list[float]) -> float:
    """KL(softmax(p) || softmax(q)) in plain Python."""
    zp = sum(math.exp(x) for x in p_logits)
    zq = sum(math.exp(x) for x in q_logits)
    p = [math.exp(x) / zp for x in p_logits]
    q = [math.exp(x) / zq for x in q_logits]
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))


def test_bild_hand_worked_k3() -> None:
    teacher = torch.tensor([[3.0, 2.0, 0.0, -5.0]])
    student = torch.tensor([[2.0, 0.0, 2.5, -5.0]], requires_grad=True)
    # t-LD: teacher Top-3 ids (0, 1, 2); pairs (0,1), (0,2), (1,2)
    #   teacher diffs: 3-2, 3-0, 2-0 = (1, 3, 2) ; student diffs: 2-0, 2-2.5, 0-2.5 = (2, -0.5, -2.5)
    # s-LD: student Top-3 ids (2, 0, 1) (2.5, 2, 0)
    #   student diffs: 0.5, 2.5, 2 ; teacher at (2, 0, 1) = (0, 3, 2): diffs -3, -2, 1
    t_ld = kl_of_softmaxes([1, 3, 2], [2, -0.5, -2.5])
    s_ld = kl_of_softmaxes([-3, -2, 1], [0.5, 2.5, 2])
    loss = bild_sum(student, teacher, k=3, temperature=1.0)
    assert loss.item() == approx(t_ld + s_ld)
    # temperature 2 halves every difference
    t2 = kl_of_softmaxes([0.5, 1.5, 1], [1, -0.25, -1.25]) + kl_of_softmaxes([-1.5, -1, 0.5], [0.25, 1.25, 1])
    assert bild_sum(student, teacher, k=3, temperature=2.0).item() == approx(t2)
    # sum over positions: two copies double it
    assert bild_sum(student.repeat(2, 1), teacher.repeat(2, 1), k=3, temperature=1.0).item() == approx(
        2 * (t_ld + s_ld))


def test_bild_zero_for_equal_logits_and_teacher_detached() -> None:
    teacher = torch.tensor([[3.0, 2.0, 0.0, -5.0]], requires_grad=True)
    assert bild_sum(teacher.detach().clone(), teacher, k=3).item() == approx(0.0)
    student = torch.tensor([[2.0, 0.0, 2.5, -5.0]], requires_grad=True)
    bild_sum(student, teacher, k=3).backward()
    assert teacher.grad is None
    assert student.grad.abs().sum().item() > 0
