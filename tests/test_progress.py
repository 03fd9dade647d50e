"""Progress bars: off when disabled; in a log (not a terminal) one full line, nothing cut."""

from __future__ import annotations

import io

from rich.console import Console

from harmonia.progress import progress_bar


def test_disabled_bar_prints_nothing(capsys):
    with progress_bar("quiet", total=3, enabled=False) as advance:
        advance(2, loss="1.0")
    assert capsys.readouterr().out == ""


def test_log_gets_the_whole_line_without_the_bar():
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=80)
    with progress_bar("calibration_sft", total=150, extra="loss={task.fields[loss]}", console=console) as advance:
        for step in range(150):
            advance(loss=f"{0.05 + step / 1000:.5f}")
    text = out.getvalue()
    assert "calibration_sft" in text and "150/150" in text and "loss=0.19900" in text
    assert "…" not in text and "━" not in text
