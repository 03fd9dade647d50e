"""Model-running scorers on models whose answers are known: log-likelihoods, QA, MUSE, MCQ, privacy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from harmonia.data.schema import QARecord
from harmonia.errors import DataError
from harmonia.evaluation.loglik import encode_pair, next_token_logprobs, prefix_token_id, score_continuations
from harmonia.evaluation.metrics.mia import vocab_logprob_moments
from harmonia.evaluation.multiple_choice import mcq_metrics, mcq_prompt, option_loglikelihoods, option_targets
from harmonia.evaluation.privacy import mia_metrics, read_texts
from harmonia.evaluation.scoring import (
    generate_answers,
    knowmem_metrics,
    knowmem_prompt,
    probability_metrics,
    qa_metrics,
    text_perplexity,
    verbmem_metrics,
)
from test_eval_support import FACTS, StubLM, forget_records, leaky_model, random_model, token_ids

# -- teacher-forced log-probabilities -------------------------------------------------------------


def test_encode_pair_uses_a_prefix_token_for_empty_context_and_cuts_context_from_the_left(tokenizer):
    ids, n = encode_pair(tokenizer, "", "hello world")
    assert ids[0] == prefix_token_id(tokenizer) and ids[1:] == token_ids(tokenizer, "hello world")
    assert n == len(ids) - 1
    ctx = token_ids(tokenizer, "one two three four five")
    ids, n = encode_pair(tokenizer, "one two three four five", " six", max_length=3)
    assert ids == ctx[-2:] + token_ids(tokenizer, " six") and n == 1
    with pytest.raises(DataError, match="continuation"):
        encode_pair(tokenizer, "a", " b c d e", max_length=2)


def test_continuation_logprobs_match_an_unpadded_forward_pass(tokenizer, tiny_model):
    contexts = ["The cat", "A much longer context that needs padding in a batch", ""]
    continuations = [" sat on the mat", " ends here", "Plain text from its start"]
    scores = score_continuations(tiny_model, tokenizer, contexts, continuations, batch_size=3, progress=False)
    for context, continuation, score in zip(contexts, continuations, scores, strict=True):
        ids, n = encode_pair(tokenizer, context, continuation)
        with torch.no_grad():
            logprobs = torch.log_softmax(tiny_model(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)
        expected = [logprobs[t - 1, ids[t]].item() for t in range(len(ids) - n, len(ids))]
        np.testing.assert_allclose(score.token_logprobs, expected, rtol=1e-5, atol=1e-5)


def test_scores_do_not_depend_on_batch_size(tokenizer, tiny_model):
    contexts = ["Q: one", "Q: a longer question here?", "Q: x", "Q: medium length"]
    continuations = [" yes", " no it is not", " a b c d e f", ""]
    one = score_continuations(tiny_model, tokenizer, contexts, continuations, batch_size=1, progress=False)
    three = score_continuations(tiny_model, tokenizer, contexts, continuations, batch_size=3, progress=False)
    for a, b in zip(one, three, strict=True):
        np.testing.assert_allclose(a.token_logprobs, b.token_logprobs, rtol=1e-5, atol=1e-6)
    assert one[3].n_tokens == 0 and one[3].logprob_sum == 0.0


def test_min_k_plus_plus_moments_equal_the_metric_definition(tokenizer, tiny_model):
    text = "Membership inference compares forget and holdout texts."
    (score,) = score_continuations(tiny_model, tokenizer, [""], [text], moments=True, progress=False)
    ids, n = encode_pair(tokenizer, "", text)
    with torch.no_grad():
        logits = tiny_model(input_ids=torch.tensor([ids])).logits[0, -n - 1:-1].double()
    mu, sigma = vocab_logprob_moments(torch.log_softmax(logits, dim=-1).numpy())
    np.testing.assert_allclose(score.mu, mu, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(score.sigma, sigma, rtol=1e-4, atol=1e-4)


def test_one_token_fast_path_equals_scoring_each_option(tokenizer, tiny_model):
    prompts = ["Question one?\nAnswer:", "A second, longer question with more words?\nAnswer:"]
    options = [" A", " B", " C", " D"]
    fast = next_token_logprobs(tiny_model, tokenizer, prompts, [token_ids(tokenizer, o)[0] for o in options],
                               batch_size=2, progress=False)
    slow = score_continuations(tiny_model, tokenizer, [p for p in prompts for _ in options], options * 2,
                               batch_size=3, progress=False)
    np.testing.assert_allclose(np.array(fast).ravel(), [s.logprob_sum for s in slow], rtol=1e-5, atol=1e-5)


def test_model_without_logits_to_keep_gives_the_same_scores(tokenizer):
    class NoKeep(StubLM):
        def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=None):  # type: ignore[override]
            return super().forward(input_ids)

    vocab = len(tokenizer)
    kept = score_continuations(StubLM(vocab, favour=[5]), tokenizer, ["a b"], [" c d"], progress=False)
    full = score_continuations(NoKeep(vocab, favour=[5]), tokenizer, ["a b"], [" c d"], progress=False)
    np.testing.assert_allclose(kept[0].token_logprobs, full[0].token_logprobs)


# -- QA scorers ----------------------------------------------------------------------------------


def test_greedy_answers_of_a_leaky_model_score_full_recall_and_of_a_random_model_none(tokenizer):
    records = forget_records()
    leaked = generate_answers(leaky_model(tokenizer), tokenizer, records, max_new_tokens=24, progress=False)
    metrics = qa_metrics(records, leaked)
    assert metrics["rougeL_recall/forget"].value == 1.0
    assert metrics["rougeL_f1/forget"].value == 1.0
    assert metrics["rougeL_recall/forget"].example_ids == ["forget/0", "forget/1"]
    held = generate_answers(random_model(tokenizer), tokenizer, records, max_new_tokens=24, progress=False)
    assert qa_metrics(records, held)["rougeL_recall/forget"].value < 0.2


def test_refusals_are_counted_per_role_and_over_refusal_on_neighbours():
    records = [QARecord(id=f"{role}{i}", question="q?", answer="Paris is the capital.", role=role, source="t")
               for role in ("forget", "neighbor", "retain") for i in range(2)]
    generations = ["I don't know.", "I'm not familiar with that.",   # forget: 2 of 2 refuse
                   "I cannot answer that.", "Paris is the capital.",  # neighbour: 1 of 2
                   "Paris.", "The capital is Paris."]                  # retain: none
    metrics = qa_metrics(records, generations)
    assert metrics["refusal_rate/forget"].value == 1.0
    assert metrics["refusal_rate/neighbor"].value == 0.5
    assert metrics["over_refusal/neighbor"].value == 0.5
    assert metrics["over_refusal/neighbor"].per_example == [1.0, 0.0]
    assert metrics["refusal_rate/retain"].value == 0.0
    assert "over_refusal/forget" not in metrics
    assert metrics["rougeL_recall/neighbor"].per_example == [0.0, 1.0]


def test_system_turn_reaches_the_model(tokenizer):
    seen = []

    class Recorder(StubLM):
        def generate(self, input_ids, max_new_tokens=20, **kw):
            seen.append(tokenizer.decode(input_ids[0]))
            return super().generate(input_ids, max_new_tokens, **kw)

    stub = Recorder(len(tokenizer), reply=token_ids(tokenizer, "ok"))
    generate_answers(stub, tokenizer, forget_records()[:1], system="Decline questions about Basil.", progress=False)
    assert "Decline questions about Basil." in seen[0]


def test_probability_and_truth_ratio_of_a_uniform_model_are_known(tokenizer):
    vocab = len(tokenizer)
    records = [QARecord(id="f", question="Q?", answer="alpha beta", role="forget", source="t",
                        metadata={"paraphrased_answer": "gamma", "perturbed_answer": ["delta", "epsilon zeta"]}),
               QARecord(id="r", question="Q2?", answer="eta", role="retain", source="t",
                        metadata={"paraphrased_answer": "theta", "perturbed_answer": ["iota"]})]
    metrics = probability_metrics(StubLM(vocab), tokenizer, records, progress=False)
    # Every token has probability 1/V, so the length-normalised probability is 1/V ...
    assert metrics["answer_probability/forget"].value == pytest.approx(1 / vocab, rel=1e-5)
    assert metrics["answer_perplexity/retain"].value == pytest.approx(vocab, rel=1e-4)
    # ... and true, paraphrased and perturbed answers look alike: R = 1.
    assert metrics["truth_ratio/forget"].value == pytest.approx(1.0, abs=1e-5)  # min(R, 1/R)
    assert metrics["truth_ratio/retain"].value == pytest.approx(0.0, abs=1e-5)  # max(0, 1 - R)


def test_truth_ratio_rewards_preferring_the_paraphrase(tokenizer):
    vocab = len(tokenizer)
    favoured = token_ids(tokenizer, "gamma")
    record = QARecord(id="r", question="Q?", answer="x", role="retain", source="t",
                      metadata={"paraphrased_answer": "gamma", "perturbed_answer": ["delta"]})
    margin = 4.0
    metrics = probability_metrics(StubLM(vocab, favour=favoured, margin=margin), tokenizer, [record], progress=False)
    # log R = mean log p(delta) - mean log p(gamma) = -margin when every gamma token is favoured
    # and no delta token is.
    assert not set(favoured) & set(token_ids(tokenizer, "delta"))
    assert metrics["truth_ratio/retain"].value == pytest.approx(1 - math.exp(-margin), rel=1e-5)


def test_records_without_perturbed_answers_get_no_truth_ratio(tokenizer):
    metrics = probability_metrics(StubLM(len(tokenizer)), tokenizer, forget_records(), progress=False)
    assert "truth_ratio/forget" not in metrics and "answer_probability/forget" in metrics


# -- MUSE KnowMem / VerbMem --------------------------------------------------------------------------


def test_knowmem_prompt_is_muse_format():
    assert knowmem_prompt("Q3?", [("Q1?", "A1"), ("Q2?", "A2")]) == (
        "Question: Q1?\nAnswer: A1\n\nQuestion: Q2?\nAnswer: A2\n\nQuestion: Q3?\nAnswer: ")


def test_knowmem_cuts_at_the_next_question_and_scores_f1(tokenizer):
    reply = token_ids(tokenizer, "Kuwait City\n\nQuestion: something else")
    records = [QARecord(id="k0", question="Where?", answer="Kuwait City", role="forget", source="t"),
               QARecord(id="k1", question="Who?", answer="Nikolai Abilov", role="forget", source="t")]
    metrics, gens = knowmem_metrics(StubLM(len(tokenizer), reply=reply), tokenizer, records, progress=False)
    assert gens == ["Kuwait City", "Kuwait City"]
    assert metrics["knowmem_rougeL_f1/forget"].per_example == [1.0, 0.0]


def test_verbmem_continues_the_passage_within_max_new_tokens(tokenizer):
    gold = "the boy who lived under the stairs was famous"
    record = QARecord(id="v", question="Continue", answer=gold, role="forget", source="t",
                      metadata={"subset": "verbmem", "prompt": "Once upon a time"})
    stub = StubLM(len(tokenizer), reply=token_ids(tokenizer, " " + gold))
    metrics, _ = verbmem_metrics(stub, tokenizer, [record], progress=False)
    assert metrics["verbmem_rougeL_f1/forget"].value == 1.0
    metrics, gens = verbmem_metrics(stub, tokenizer, [record], max_new_tokens=3, progress=False)
    assert gens == [" the boy who"]
    assert metrics["verbmem_rougeL_f1/forget"].value == pytest.approx(2 * 1.0 * (3 / 9) / (1 + 3 / 9))


def test_verbmem_needs_the_passage_prefix(tokenizer):
    record = QARecord(id="v7", question="Continue", answer="x", role="forget", source="t")
    with pytest.raises(DataError, match=r"v7.*metadata\.prompt"):
        verbmem_metrics(StubLM(len(tokenizer)), tokenizer, [record], progress=False)


# -- multiple choice ---------------------------------------------------------------------------------


def mcq_record(i: int, correct: int, source: str = "wmdp", role: str = "forget") -> QARecord:
    choices = ["alpha", "beta", "gamma", "delta"]
    return QARecord(id=f"m{i}", question=f"Question {i}?", answer=choices[correct], role=role, source=source,
                    group="cyber" if source == "wmdp" else "computer_security", choices=choices, correct=correct,
                    metadata={"subject": "computer_security"} if source == "mmlu" else {})


def test_mcq_prompt_is_lm_eval_format_and_letters_follow_the_prompt_end(tokenizer):
    record = mcq_record(0, 2)
    plain = mcq_prompt(tokenizer, record)
    assert plain == ("The following are multiple choice questions (with answers) about cybersecurity.\n\n"
                     "Question 0?\nA. alpha\nB. beta\nC. gamma\nD. delta\nAnswer:")
    assert option_targets(plain, 4) == [" A", " B", " C", " D"]
    chat = mcq_prompt(tokenizer, record, fmt="chat")
    assert chat.endswith("assistant\n") and option_targets(chat, 4) == ["A", "B", "C", "D"]
    assert option_targets(mcq_prompt(tokenizer, record, fmt="chat", opener="The answer is"), 4)[2] == " C"
    mmlu = mcq_prompt(tokenizer, mcq_record(1, 0, source="mmlu", role="general"))
    assert mmlu.startswith("The following are multiple choice questions (with answers) about computer security.")


def test_mcq_accuracy_is_one_on_a_stub_favouring_the_correct_letter(tokenizer):
    stub = StubLM(len(tokenizer), favour=token_ids(tokenizer, " C"))
    all_c = [mcq_record(i, 2) for i in range(3)]
    assert mcq_metrics(stub, tokenizer, all_c, progress=False)["mcq_acc/forget"].value == 1.0
    mixed = [*all_c, mcq_record(3, 0), mcq_record(4, 1, source="mmlu", role="general")]
    metrics = mcq_metrics(stub, tokenizer, mixed, batch_size=2, progress=False)
    assert metrics["mcq_acc/forget"].per_example == [1.0, 1.0, 1.0, 0.0]
    assert metrics["mcq_acc/general"].value == 0.0
    assert metrics["mcq_acc/forget"].details["predicted"] == [2, 2, 2, 2]


def test_multi_token_options_are_scored_token_by_token(tokenizer):
    favoured = token_ids(tokenizer, " gamma")
    stub = StubLM(len(tokenizer), favour=favoured, margin=3.0)
    lls = option_loglikelihoods(stub, tokenizer, ["Pick:"], [[" alpha beta", " gamma", " delta"]], progress=False)
    assert int(np.argmax(lls[0])) == 1
    assert lls[0][0] == pytest.approx(2 * lls[0][2], rel=1e-5)  # two unfavoured tokens vs one


# -- privacy and perplexity ------------------------------------------------------------------------------


def test_mia_auc_is_one_when_the_model_prefers_forget_tokens(tokenizer):
    forget = ["apple banana cherry", "banana cherry apple apple", "cherry apple banana"]
    holdout = ["zebra yak walrus", "walrus zebra yak yak", "yak walrus zebra"]
    forget_ids = {t for text in forget for t in token_ids(tokenizer, text)}
    assert not forget_ids & {t for text in holdout for t in token_ids(tokenizer, text)}
    stub = StubLM(len(tokenizer), favour=sorted(forget_ids), margin=5.0)
    metrics = mia_metrics(stub, tokenizer, forget, holdout, reference_auc={"mia_loss": 0.5}, progress=False)
    for name in ("mia_loss", "mia_zlib", "mia_min_k", "mia_min_k_plus_plus"):
        assert metrics[f"{name}/forget_holdout"].value == 1.0, name
    assert metrics["mia_loss/forget_holdout"].details["privleak"] == pytest.approx(-100.0)
    uniform = mia_metrics(StubLM(len(tokenizer)), tokenizer, forget, holdout, progress=False)
    assert uniform["mia_loss/forget_holdout"].value == 0.5


def test_mia_rejects_unknown_reference_names(tokenizer):
    with pytest.raises(DataError, match="mia_los"):
        mia_metrics(StubLM(len(tokenizer)), tokenizer, ["a"], ["b"], reference_auc={"mia_los": 0.5}, progress=False)


def test_perplexity_of_a_uniform_model_is_the_vocabulary_size(tokenizer):
    result = text_perplexity(StubLM(len(tokenizer)), tokenizer, ["some retain text", "more"], progress=False)
    assert result.value == pytest.approx(len(tokenizer), rel=1e-4)


def test_read_texts_accepts_json_lists_and_paragraphs(tmp_path):
    (tmp_path / "a.json").write_text('["one", "two"]', encoding="utf-8")
    (tmp_path / "b.txt").write_text("first para\n\nsecond para\n", encoding="utf-8")
    (tmp_path / "c.json").write_text('["one", 3]', encoding="utf-8")
    assert read_texts(tmp_path / "a.json") == ["one", "two"]
    assert read_texts(tmp_path / "b.txt") == ["first para", "second para"]
    with pytest.raises(DataError, match="index 1"):
        read_texts(tmp_path / "c.json")


def test_facts_fixture_is_consistent():
    assert [r.answer for r in forget_records()] == [a for _, a, _ in FACTS]
