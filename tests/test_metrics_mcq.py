"""Multiple-choice prompts (lm-eval templates) and accuracy from option log-likelihoods."""

import pytest

from harmonia.errors import DataError
from harmonia.evaluation.metrics.mcq import (
    mcq_accuracy,
    mcq_accuracy_norm,
    mcq_targets,
    mmlu_prompt,
    predicted_choice,
    wmdp_prompt,
)

CHOICES = ["3", "4", "5", "6"]


def test_mmlu_prompt_matches_lm_eval_template():
    prompt = mmlu_prompt("  What is 2+2? \n", CHOICES, "high_school_mathematics")
    assert prompt == (
        "The following are multiple choice questions (with answers) about high school mathematics.\n\n"
        "What is 2+2?\nA. 3\nB. 4\nC. 5\nD. 6\nAnswer:"
    )


def test_mmlu_fewshot_shots_carry_their_answer_letter():
    prompt = mmlu_prompt(
        "What is 1+1?", ["1", "2", "3", "4"], "computer_security", fewshot=[("What is 2+2?", CHOICES, 1)]
    )
    assert prompt == (
        "The following are multiple choice questions (with answers) about computer security.\n\n"
        "What is 2+2?\nA. 3\nB. 4\nC. 5\nD. 6\nAnswer: B\n\n"
        "What is 1+1?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer:"
    )


def test_wmdp_prompt_uses_the_domain_description():
    assert wmdp_prompt("Which port?", ["22", "80", "443", "8080"]) == (
        "The following are multiple choice questions (with answers) about cybersecurity.\n\n"
        "Which port?\nA. 22\nB. 80\nC. 443\nD. 8080\nAnswer:"
    )
    assert wmdp_prompt("Q", ["a", "b"], domain="bio").startswith(
        "The following are multiple choice questions (with answers) about biology."
    )
    with pytest.raises(DataError, match="unknown WMDP domain 'space'"):
        wmdp_prompt("Q", CHOICES, domain="space")


def test_targets_have_the_leading_space():
    assert mcq_targets(4) == [" A", " B", " C", " D"]
    with pytest.raises(DataError):
        mcq_targets(1)


def test_bad_fewshot_answer_names_the_shot():
    with pytest.raises(DataError, match=r"record 0.*fewshot"):
        mmlu_prompt("Q", CHOICES, "anatomy", fewshot=[("Q0", CHOICES, 4)])


def test_ties_go_to_the_lowest_index():
    assert predicted_choice([-1.0, -0.5, -0.5]) == 1
    assert predicted_choice([-2.0, -2.0]) == 0


def test_accuracy_from_loglikelihoods():
    lls = [
        [-1.0, -2.0, -3.0, -4.0],  # predicts 0, correct 0 -> right
        [-5.0, -1.0, -1.0, -9.0],  # tie 1/2 -> predicts 1, correct 2 -> wrong
        [-2.0, -2.0, -2.0, -2.0],  # all tied -> predicts 0, correct 0 -> right
    ]
    r = mcq_accuracy(lls, [0, 2, 0])
    assert r.per_example == [1.0, 0.0, 1.0]
    assert r.value == pytest.approx(2 / 3)


def test_acc_norm_divides_by_character_length():
    # raw: -4 < -3 so option 1 wins; per character: -4/8 = -0.5 > -3/2 = -1.5 so option 0 wins.
    assert mcq_accuracy([[-4.0, -3.0]], [0]).value == 0.0
    assert mcq_accuracy_norm([[-4.0, -3.0]], [[8, 2]], [0]).value == 1.0


def test_letter_options_make_acc_norm_equal_acc():
    lls = [[-1.2, -0.7, -3.0, -2.2], [-0.1, -0.9, -0.2, -4.0]]
    correct = [1, 2]
    assert (
        mcq_accuracy_norm(lls, [[1, 1, 1, 1]] * 2, correct).per_example
        == mcq_accuracy(lls, correct).per_example
    )


def test_invalid_inputs_raise():
    with pytest.raises(DataError, match=r"record 0.*field 'correct'"):
        mcq_accuracy([[-1.0, -2.0]], [2])
    with pytest.raises(DataError, match="field 'option_loglikelihoods'"):
        mcq_accuracy([[float("nan"), -2.0]], [0])
    with pytest.raises(DataError, match="option_char_lengths"):
        mcq_accuracy_norm([[-1.0, -2.0]], [[1, 0]], [0])
