"""Two CPU processes (gloo, via ``accelerate launch``) train exactly like one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from harmonia.data.schema import QARecord

REPO = Path(__file__).resolve().parents[1]


def _config(tmp_path: Path, model_dir: Path, name: str) -> Path:
    data = tmp_path / "data.jsonl"
    records = [QARecord(id=f"r{i}", question=f"Which colour is object {i}?",
                        answer="It is " + "quite " * (i % 4) + f"colour {i}.", role="retain", source="test")
               for i in range(16)]
    data.write_text("".join(r.model_dump_json() + "\n" for r in records))
    cfg = {"name": name, "model": {"spec": str(model_dir)}, "data_file": str(data),
           "train": {"steps": 4, "batch_size": 8, "micro_batch_size": 2, "lr": 1e-3, "progress": False,
                     "output_dir": str(tmp_path / name), "save": "merged",
                     "update_scale": 0.5}}  # each process interpolates its whole copy: the same weights
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _history(run: Path) -> list[float]:
    log = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
    return [e["loss"] for e in log if "step" in e and "loss" in e]


@pytest.mark.slow
def test_two_processes_match_one(tmp_path, tiny_model_dir):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one_cfg = _config(tmp_path, tiny_model_dir, "one")
    single = subprocess.run([sys.executable, "-m", "harmonia", "finetune", str(one_cfg)],
                            capture_output=True, text=True, env=env)
    assert single.returncode == 0, single.stdout[-2000:] + single.stderr[-2000:]
    launcher = Path(sys.executable).with_name("accelerate")
    double = subprocess.run([str(launcher), "launch", "--config_file", str(REPO / "configs/accelerate/cpu_2proc.yaml"),
                             "-m", "harmonia", "finetune", str(_config(tmp_path, tiny_model_dir, "two"))],
                            capture_output=True, text=True, env=env, timeout=600)
    assert double.returncode == 0, double.stdout[-2000:] + double.stderr[-3000:]
    start = json.loads((tmp_path / "two" / "train_log.jsonl").read_text().splitlines()[0])
    assert start["processes"] == 2
    for run in ("one", "two"):
        events = [json.loads(x).get("event") for x in (tmp_path / run / "train_log.jsonl").read_text().splitlines()]
        assert "update_scale" in events
    one, two = _history(tmp_path / "one"), _history(tmp_path / "two")
    assert len(one) == len(two) == 4
    assert one == pytest.approx(two, rel=1e-5)
    a = load_file(tmp_path / "one" / "model" / "model.safetensors")
    b = load_file(tmp_path / "two" / "model" / "model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)
