"""Progress as a user sees it: a live bar, redrawn in place, when the output is a terminal; in a file
or a pipe no bar at all, only the lines callers print when something finishes. The bar is plain
text (a carriage return and spaces, no escape codes), and it is erased before such a line."""
from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TextIO, TypeVar

T = TypeVar("T")
WIDTH = 30
REDRAW_S = 0.1  # a bar redrawn more often only costs time


class Bar:
    """A bar over `total` steps, live only when `stream` (default stdout) is a terminal."""

    def __init__(self, total: int, label: str, stream: TextIO | None = None, enabled: bool = True):
        self.total, self.label = max(int(total), 1), label
        self.stream = stream or sys.stdout
        self.live = enabled and self.stream.isatty()
        self._shown, self._drawn_at = 0, 0.0

    def update(self, done: int, **values: float) -> None:
        """Redraw at `done` steps, with named values (loss, top1, ...) after the count."""
        now = time.monotonic()
        if not self.live or (now - self._drawn_at < REDRAW_S and done < self.total):
            return
        filled = WIDTH * min(done, self.total) // self.total
        text = f"{self.label} [{'#' * filled}{'.' * (WIDTH - filled)}] {done}/{self.total}"
        text += "".join(f"  {name} {value:.4f}" for name, value in values.items())
        self.stream.write("\r" + text.ljust(self._shown))
        self.stream.flush()
        self._shown, self._drawn_at = len(text), now

    def close(self, line: str | None = None) -> None:
        """Erase the bar; then print `line`, if any, on a terminal or not."""
        if self.live and self._shown:
            self.stream.write("\r" + " " * self._shown + "\r")
        self._shown = 0
        if line is not None:
            print(line, file=self.stream, flush=True)


def track(items: Iterable[T], total: int, label: str, enabled: bool = True) -> Iterator[T]:
    """The items, with a bar over `total` of them while they are consumed."""
    bar = Bar(total, label, enabled=enabled)
    try:
        for i, item in enumerate(items, 1):
            yield item
            bar.update(i)
    finally:
        bar.close()
