"""GPU check (not a test): vLLM and HF greedy generations agree on the same model (needs vllm).

Runs the embedded model (SmolLM2-135M-Instruct) in bfloat16 on chat prompts through harmonia's two
backends, :func:`harmonia.evaluation.generation.generate` and
:class:`harmonia.evaluation.backends.VLLMGenerator`, with the same stop strings, and prints how
many outputs match exactly and the first differing pair. Kernels differ, so an output may
diverge after a near-tie between two tokens; a mismatch at the very start points to a bug.

Usage: ``python benchmarks/check_vllm_greedy.py [--n 32] [--max-new-tokens 48]``
"""

from __future__ import annotations

import argparse


def main() -> None:
    from harmonia.evaluation.backends import VLLMGenerator
    from harmonia.evaluation.generation import generate
    from harmonia.models import load_model
    from harmonia.models.chat import render_prompt

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    args = parser.parse_args()
    loaded = load_model(dtype="bfloat16", device="cuda")
    tok = loaded.tokenizer
    prompts = [render_prompt(tok, f"In two sentences, what is {topic}?", system=None)
               for topic in ("a prime number", "photosynthesis", "the capital of France", "a compiler",
                             "gravity", "a haiku", "the Pacific Ocean", "an electron")
               * (args.n // 8 + 1)][: args.n]
    stop = ["\n\n"]
    hf = generate(loaded.model, tok, prompts, max_new_tokens=args.max_new_tokens, batch_size=8, stop=stop,
                  progress=False)
    vllm = VLLMGenerator(loaded.path, tok, dtype="bfloat16", seed=0, gpu_memory_utilization=0.3)(
        prompts, max_new_tokens=args.max_new_tokens, stop=stop, progress=False)
    same = sum(a == b for a, b in zip(hf, vllm, strict=True))
    print(f"vLLM vs HF greedy (bf16, {args.max_new_tokens} new tokens): {same}/{len(prompts)} identical")
    for a, b in zip(hf, vllm, strict=True):
        if a != b:
            common = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
            print(f"first difference at character {common}:\n  HF:   {a!r}\n  vLLM: {b!r}")
            break


if __name__ == "__main__":
    main()
