"""Shared fixtures: the real SmolLM2 tokenizer and tiny random models built from it in seconds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"benchmark data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tokenizer():
    """The embedded model's real tokenizer (converted once into $HARMONIA_HOME on first use)."""
    from harmonia.models import load_tokenizer

    return load_tokenizer("smollm2-135m-instruct")


@pytest.fixture()
def tiny_model(tokenizer):
    from harmonia.models.tiny import build_tiny_model

    return build_tiny_model(tokenizer, seed=0)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer) -> Path:
    """A tiny model saved as a Hugging Face directory, usable as a model spec."""
    from harmonia.models.tiny import build_tiny_model

    path = tmp_path_factory.mktemp("tiny-model")
    build_tiny_model(tokenizer, seed=0).save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.fixture()
def script():
    """Import a file of ``scripts/`` as a module (they are run as files, not installed)."""
    import importlib.util

    def load(name: str) -> Any:
        spec = importlib.util.spec_from_file_location(f"script_{name}", SCRIPTS / f"{name}.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture()
def tiny_demo(tiny_model_dir, tmp_path, monkeypatch) -> list[str]:
    """Overrides that run a demo config end to end on the tiny model in seconds, in a fresh HARMONIA_HOME."""
    monkeypatch.setenv("HARMONIA_HOME", str(tmp_path / "home"))
    return [f"model.spec={tiny_model_dir}", "target.epochs=null", "target.steps=1", "teacher.calibration.epochs=0.05",
            "evaluation.generation.max_new_tokens=4", "unlearn.train.batch_size=8"]
