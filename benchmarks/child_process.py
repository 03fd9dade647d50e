"""Measure one benchmark setting in a fresh Python process (``bench_sft_step.py``, ``bench_compile_step.py``).

A setting measured in its own process has its own peak resident memory (ru_maxrss) and its own
caches (autocast, compiled graphs), so settings run one after another do not colour each other.
The benchmark script runs itself with ``--child SETTING`` and prints the measurement as JSON on
its last line.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any


def measure_in_child(script: str, setting: str, *args: str) -> dict[str, Any]:
    """Run ``python script --child setting *args``; the JSON object its last stdout line holds."""
    out = subprocess.run([sys.executable, script, "--child", setting, *args],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])
