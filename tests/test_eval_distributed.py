"""Evaluation sharded over processes: the pure split/merge, and 2 CPU processes (gloo) vs one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harmonia.data.schema import QARecord
from harmonia.evaluation.sharding import across_processes, map_sharded, merge_shards, shard

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("total", "world"), [(0, 2), (1, 2), (5, 2), (7, 3), (6, 3), (4, 1)])
def test_merge_inverts_shard(total, world):
    items = [f"x{i}" for i in range(total)]
    parts = [shard(items, r, world) for r in range(world)]
    assert sorted(x for p in parts for x in p) == sorted(items)
    assert merge_shards(parts, total) == items


def test_merge_refuses_parts_that_do_not_add_up():
    with pytest.raises(RuntimeError, match="skipped or duplicated"):
        merge_shards([["a", "c"], ["b", "d"]], 3)


def test_map_sharded_is_a_plain_call_with_one_process():
    seen: list[list[int]] = []

    def fn(part: list[int]) -> list[int]:
        seen.append(part)
        return [2 * x for x in part]

    assert map_sharded(fn, range(5)) == [0, 2, 4, 6, 8]
    with across_processes(0, 1):
        assert map_sharded(fn, [3]) == [6]
    assert seen == [[0, 1, 2, 3, 4], [3]]


def test_map_sharded_without_a_process_group_is_an_error():
    with across_processes(1, 2), pytest.raises(RuntimeError, match=r"no torch\.distributed process group"):
        map_sharded(lambda part: part, [1, 2, 3])


def _records() -> list[QARecord]:
    out = []
    for i in range(9):
        role = ("forget", "neighbor", "retain")[i % 3]
        out.append(QARecord(
            id=f"qa{i}", question=f"Where does the writer number {i} live?", role=role, source="test",
            answer=f"Writer {i} lives in the harbour town of Port {i} with {i % 4 + 1} cats.",
            metadata={"paraphrased_answer": f"Port {i} is home to writer {i}.",
                      "perturbed_answer": [f"Writer {i} lives in Hill {i}.", f"Writer {i} lives abroad."],
                      "paraphrased_question": f"Writer {i} lives where?"}))
    for i in range(5):
        out.append(QARecord(id=f"mcq{i}", question=f"Which option is number {i}?", answer="beta", role="general",
                            source="test", choices=["alpha", "beta", "gamma", "delta"], correct=1))
    return out


def _values(results: dict) -> dict:
    """Every per-example value and generation of a results.json, keyed by where it sits."""
    out = {f"metric {k}": (v["example_ids"], v["per_example"]) for k, v in results["metrics"].items()}
    for name, attack in results["attacks"].items():
        out[f"attack {name}"] = (attack["example_ids"], attack["per_example"], attack["generations"],
                                 attack["details"].get("recall"))
    out["generations"] = results["generations"]
    return out


@pytest.mark.slow
def test_two_processes_evaluate_like_one(tmp_path, tiny_model_dir):
    from harmonia.evaluation.config import load_eval_config
    from harmonia.evaluation.harness import evaluate

    data = tmp_path / "data.jsonl"
    data.write_text("".join(r.model_dump_json() + "\n" for r in _records()))
    evaluation = {"metrics": ["qa", "probability", "truth_ratio", "mcq"], "progress": False,
                  "generation": {"max_new_tokens": 6, "batch_size": 3}, "scoring_batch_size": 3,
                  "attacks": {"prefill": {"ks": [1, 3]}, "paraphrase": None}}
    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(yaml.safe_dump({"data_file": str(data), "evaluation": evaluation}))
    launcher = Path(sys.executable).with_name("accelerate")
    two = subprocess.run([str(launcher), "launch", "--config_file", str(REPO / "configs/accelerate/cpu_2proc.yaml"),
                          "--main_process_port", "29531", "-m", "harmonia", "eval", str(tiny_model_dir),
                          str(cfg_path), "-o", str(tmp_path / "two")],
                         capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert two.returncode == 0, two.stdout[-2000:] + two.stderr[-3000:]
    sharded = json.loads((tmp_path / "two" / "results.json").read_text())
    assert sharded["meta"]["processes"] == 2

    single = evaluate(str(tiny_model_dir), _records(), load_eval_config(None, [f"{k}={json.dumps(v)}"
                                                                                 for k, v in evaluation.items()]),
                      name="one")
    assert single.meta["processes"] == 1
    one = json.loads(single.model_dump_json())
    got, want = _values(sharded), _values(one)
    assert set(got) == set(want)
    assert {"metric truth_ratio/forget", "metric mcq_acc/general", "attack prefill"} <= set(want)
    for key in want:
        _assert_close(got[key], want[key], key)


def _assert_close(got: object, want: object, where: str) -> None:
    """Texts and ids equal, numbers equal within float tolerance (batches differ between the runs)."""
    if isinstance(want, float) and isinstance(got, float):
        assert got == pytest.approx(want, rel=1e-5, abs=1e-6), where
    elif isinstance(want, dict) and isinstance(got, dict):
        assert set(got) == set(want), where
        for k in want:
            _assert_close(got[k], want[k], f"{where}/{k}")
    elif isinstance(want, list | tuple) and isinstance(got, list | tuple):
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            _assert_close(g, w, f"{where}[{i}]")
    else:
        assert got == want, where
