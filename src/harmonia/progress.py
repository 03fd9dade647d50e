"""Rich progress bars that can be switched off (tests, non-interactive logs, non-main processes)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


@contextlib.contextmanager
def progress_bar(description: str, total: int | None, *, enabled: bool = True,
                 extra: str = "") -> Iterator[Callable[..., None]]:
    """Yield ``advance(n=1, **fields)``; fields fill ``extra`` (e.g. ``"{task.fields[loss]}"``)."""
    if not enabled:
        yield lambda n=1, **fields: None
        return
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn()]
    if extra:
        columns.append(TextColumn(extra))
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task(description, total=total, **_field_defaults(extra))

        def advance(n: int = 1, **fields: object) -> None:
            progress.update(task, advance=n, **fields)

        yield advance


def _field_defaults(extra: str) -> dict[str, str]:
    import re

    return {name: "" for name in re.findall(r"task\.fields\[(\w+)\]", extra)}
