"""Rich progress bars that can be switched off (tests, non-interactive logs, non-main processes)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

# Redirected to a file, rich draws the bar once, at the end, at 80 columns: the counts, times and
# fields were cut to "150/1… 0:19…". A log gets one line wide enough for them, without the bar.
LOG_WIDTH = 200


@contextlib.contextmanager
def progress_bar(description: str, total: int | None, *, enabled: bool = True, extra: str = "",
                 console: Console | None = None) -> Iterator[Callable[..., None]]:
    """Yield ``advance(n=1, **fields)``; fields fill ``extra`` (e.g. ``"{task.fields[loss]}"``)."""
    if not enabled:
        yield lambda n=1, **fields: None
        return
    console = console or Console()
    if not console.is_terminal:
        console.width = max(console.width, LOG_WIDTH)
    columns = [TextColumn("[bold]{task.description}"), *([BarColumn()] if console.is_terminal else []),
               MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn()]
    if extra:
        columns.append(TextColumn(extra))
    with Progress(*columns, transient=False, console=console) as progress:
        task = progress.add_task(description, total=total, **_field_defaults(extra))

        def advance(n: int = 1, **fields: object) -> None:
            progress.update(task, advance=n, **fields)

        yield advance


def _field_defaults(extra: str) -> dict[str, str]:
    import re

    return {name: "" for name in re.findall(r"task\.fields\[(\w+)\]", extra)}
