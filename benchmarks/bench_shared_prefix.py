"""A jailbreak template computed once per batch against once per row, on the embedded model (one run).

The 40 questions of TOFU forget01 shipped with harmonia, each wrapped in one DAN template shipped
under ``pkg:attacks`` (default ``Dan_11_0``, the longest: about a thousand tokens before the
question), chat-formatted as the jailbreak attack asks them, answered by
:func:`harmonia.evaluation.generation.generate` with ``share_prefix`` on and off after one
untimed warm-up call. Prints both times, the ratio, and how many of the answers are identical.
Usage::

    python benchmarks/bench_shared_prefix.py [--template Dan_11_0] [--n 40] [--max-new-tokens 40] [--batch-size 40]
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--template", default="Dan_11_0")
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=40)
    args = parser.parse_args()

    import torch

    from harmonia.attacks.jailbreak import JailbreakParams, load_templates, wrap_question
    from harmonia.data.loaders.tofu import load_tofu
    from harmonia.data.paths import resources_dir
    from harmonia.evaluation.generation import generate
    from harmonia.models import load_model
    from harmonia.models.chat import render_prompt

    torch.manual_seed(0)
    loaded = load_model()
    template = load_templates(JailbreakParams(dan_templates=[args.template]))[f"dan/{args.template}"]
    records = load_tofu(resources_dir() / "data" / "tofu" / "forget01.json", role="forget")[: args.n]
    prompts = [render_prompt(loaded.tokenizer, wrap_question(template, r.question, "ChatGPT")) for r in records]
    kw = {"max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size, "progress": False}
    generate(loaded.model, loaded.tokenizer, prompts[:2], **{**kw, "max_new_tokens": 2})  # warm-up

    times, answers = {}, {}
    for share in (True, False):
        start = time.perf_counter()
        answers[share] = generate(loaded.model, loaded.tokenizer, prompts, share_prefix=share, **kw)
        times[share] = time.perf_counter() - start
    tokens = [len(loaded.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    same = sum(a == b for a, b in zip(answers[True], answers[False], strict=True))
    print(f"{len(prompts)} prompts of {min(tokens)}-{max(tokens)} tokens ({args.template}), "
          f"{args.max_new_tokens} new tokens, batches of {args.batch_size}, torch threads: {torch.get_num_threads()}")
    print(f"template once per batch: {times[True]:.1f} s; once per row: {times[False]:.1f} s; "
          f"ratio {times[True] / times[False]:.2f}x")
    print(f"identical answers: {same} of {len(prompts)}")


if __name__ == "__main__":
    main()
