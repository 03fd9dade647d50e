"""GPU benchmark (not a test): tokens/s and MFU of an SFT step and a harmonia unlearning step.

A 1B-class model with random weights from a Llama-3.2-1B-shaped config (hidden 2048, 16 layers,
32 heads, 8 KV heads, intermediate 8192, vocabulary 128256, tied embeddings), fp32 master weights
under bf16 autocast (what ``train.bf16`` does through accelerate), a batch of 8 records of 512
tokens, full fine-tuning. Three settings, built from harmonia's own methods and stepped like the
engine (``distill_common``): ``sft``; ``live`` (harmonia, frozen teacher copy run every step on
the instructed input); ``cached`` (harmonia, the teacher's Top-K computed once in ``prepare``).

MFU counts 6N FLOPs per trained token and 2N per teacher token (N = parameters, tied embedding
once) against the device's dense bf16 peak (table below, or ``--peak-flops``). The live step's
FLOP floor relative to SFT is ``1 + T_teacher / (3 T_student)``; with a 96-token instruction on
512-token records that is 1 + 608/1536 = 1.40.

Levers: fused AdamW on CUDA (``--no-fused`` to compare), ``--compile`` (torch.compile of the
model). The distillation loss never upcasts full-vocabulary rows: the student's logits are
gathered at the distilled positions and only the K selected columns go to float32
(``losses.topk_distill_sums``).

When vLLM is importable, ``check_vllm_greedy.py`` runs afterwards (its own process): HF and
vLLM greedy outputs on the same model should match.

Usage (about 3 minutes on one H200)::

    python benchmarks/bench_gpu_unlearn.py            # GPU
    python benchmarks/bench_gpu_unlearn.py --tiny     # CPU check of the script itself (seconds)
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from distill_common import SETTINGS, build_methods, prepare_batches, token_counts, train_step

# dense bf16 peak FLOP/s by device-name substring (first match wins)
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12}
FULL = {"hidden_size": 2048, "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8,
        "intermediate_size": 8192, "vocab_size": 128256}
TINY = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "intermediate_size": 128}
INSTRUCTION_TOKENS = 96


def build_model(tokenizer: Any, shape: dict[str, int], device: str) -> Any:
    """A randomly initialised Llama of ``shape`` (vocabulary: the tokenizer's unless given)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**{"vocab_size": len(tokenizer), **shape}, tie_word_embeddings=True,
                         max_position_embeddings=4096, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    return LlamaForCausalLM(config).to(device)


def long_records(n: int, tokenizer: Any, seq_len: int) -> list[Any]:
    """``n`` records (half forget, half retain) whose answers fill ``seq_len`` tokens after the prompt."""
    from harmonia.data.schema import QARecord

    out = []
    for i in range(n):
        role = "forget" if i < n // 2 else "retain"
        words = " ".join(f"fact{i}x{j} about writer {i} and the city of Port {j}." for j in range(seq_len))
        # cut the answer to about seq_len tokens: the method truncates the rest at max_length
        ids = tokenizer(words, add_special_tokens=False)["input_ids"][:seq_len]
        out.append(QARecord(id=f"{role}{i}", question=f"Tell me everything about writer number {i}.",
                            answer=tokenizer.decode(ids), role=role, source="bench", group=f"Writer {i}"))
    return out


def peak_flops(device_name: str, override: float | None) -> float | None:
    if override is not None:
        return override
    return next((v for k, v in PEAK_BF16.items() if k in device_name), None)


def main() -> None:
    import torch

    from harmonia.models import load_tokenizer

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a small model and batch (checks the script on CPU)")
    parser.add_argument("--batch-size", type=int, default=None, help="records per step (default 8; tiny 4)")
    parser.add_argument("--seq-len", type=int, default=None, help="tokens per record (default 512; tiny 128)")
    parser.add_argument("--steps", type=int, default=6, help="rounds of the three settings; the first is warm-up")
    parser.add_argument("--peak-flops", type=float, default=None, help="device peak FLOP/s (default: table)")
    parser.add_argument("--no-fused", action="store_true", help="plain AdamW instead of fused (CUDA)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--no-vllm-check", action="store_true", help="skip check_vllm_greedy.py")
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be >= 2 (the first round is a warm-up)")
    batch_size = args.batch_size or (4 if args.tiny else 8)
    seq_len = args.seq_len or (128 if args.tiny else 512)

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    device_name = torch.cuda.get_device_name() if cuda else "cpu"
    tok = load_tokenizer("smollm2-135m-instruct")
    model = build_model(tok, TINY if args.tiny else FULL, device)
    n_params = sum(p.numel() for p in model.parameters())  # tied embedding counted once
    # the engine keeps a frozen copy of the starting weights as the teacher of a full fine-tune
    teacher = copy.deepcopy(model).eval().requires_grad_(False)
    if args.compile:
        model = torch.compile(model)
    tmp = tempfile.TemporaryDirectory()
    # every role sees the instruction, so every record pays the teacher's extra tokens
    instructed = {"role_context": {"retain": "instructed"}}
    methods = build_methods(tok, teacher, Path(tmp.name) / "cache", seq_len, instructed)
    prepared = prepare_batches(methods, long_records(batch_size, tok, seq_len), device)

    fused = cuda and not args.no_fused
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-7, fused=fused)
    autocast = torch.autocast(device, dtype=torch.bfloat16)
    model.train()
    seconds: dict[str, list[float]] = {n: [] for n in SETTINGS}
    for round_ in range(args.steps):
        # the order rotates every round so a busy machine slows every setting alike
        for name in SETTINGS[round_ % 3:] + SETTINGS[: round_ % 3]:
            t0 = time.perf_counter()
            train_step(methods[name], model, prepared[name], optimizer, autocast)
            if cuda:
                torch.cuda.synchronize()
            if round_ > 0:
                seconds[name].append(time.perf_counter() - t0)
    tmp.cleanup()
    report(seconds, prepared, n_params, peak_flops(device_name, args.peak_flops),
           f"{device_name}, {n_params / 1e9:.3f}B parameters, batch {batch_size}x{seq_len}, bf16 autocast, "
           f"fused AdamW {fused}, compile {args.compile}, {args.steps - 1} timed rounds")
    if not args.no_vllm_check and importlib.util.find_spec("vllm") is not None:
        check = Path(__file__).with_name("check_vllm_greedy.py")
        subprocess.run([sys.executable, str(check)], check=True)
    elif not args.no_vllm_check:
        print("vLLM not importable: HF/vLLM greedy check skipped (pip install 'harmonia[vllm]')")


def report(seconds: dict[str, list[float]], prepared: dict[str, dict[str, Any]], n_params: int,
           peak: float | None, header: str) -> None:
    """The table: step time, tokens/s, MFU, ratio to SFT, and the live step's FLOP floor."""
    step = {n: statistics.median(s) for n, s in seconds.items()}
    student, teacher_tokens = token_counts(prepared)
    flops = {n: 6 * n_params * student[n] for n in SETTINGS}
    flops["live"] += 2 * n_params * teacher_tokens
    floor = 1 + teacher_tokens / (3 * student["live"])
    nominal = 1 + (512 + INSTRUCTION_TOKENS) / (3 * 512)
    print(header)
    print(f"tokens per step: student {student['live']}, live teacher {teacher_tokens} "
          f"(instruction overhead {(teacher_tokens - student['live']) / len(prepared['live']['examples']):.0f} "
          "tokens per record)")
    print(f"{'setting':<8}{'step s':>9}{'tok/s':>10}{'MFU':>8}{'/ SFT':>8}{'floor':>8}{'prepare s':>11}")
    for name in SETTINGS:
        mfu = f"{flops[name] / step[name] / peak:.1%}" if peak else "n/a"
        goal = {"sft": "1.000", "live": f"{floor:.3f}", "cached": "1.000"}[name]
        print(f"{name:<8}{step[name]:>9.3f}{student[name] / step[name]:>10.0f}{mfu:>8}"
              f"{step[name] / step['sft']:>8.3f}{goal:>8}{prepared[name]['prepare_s']:>11.1f}")
    print(f"live: {step['live'] / step['sft'] / floor:.3f} x its FLOP floor {floor:.3f} "
          f"(1 + T_teacher / (3 T_student) with these tokens; {nominal:.3f} for a {INSTRUCTION_TOKENS}-token "
          f"instruction on 512-token records); cached: {step['cached'] / step['sft']:.3f} x SFT")
    if peak is None:
        print("MFU: unknown device peak; pass --peak-flops")


if __name__ == "__main__":
    main()
