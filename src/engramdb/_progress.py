"""Progress bars for the long things a user starts (bulk upserts, index builds), with rich.

Bars appear only for work large enough to be worth watching, on stderr, and vanish when
done; callers print their own one-line summary.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

__all__ = ["SHOW_FROM", "progress_bar"]

SHOW_FROM = 10_000  # items: below this, work finishes before a bar is worth drawing


@contextlib.contextmanager
def progress_bar(
    description: str, total: int, *, enabled: bool = True
) -> Iterator[Callable[[int], None]]:
    """Yields ``advance(n)``; draws a bar when ``enabled`` and ``total >= SHOW_FROM``."""
    if not enabled or total < SHOW_FROM:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(file=sys.stderr), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)
