"""A one-line progress report on stderr for long sampling jobs."""

from __future__ import annotations

import os
import sys
import threading
import time

IDLE_RESET = 2.0  # seconds without work that end one job's line: the next work is a new job


class Progress:
    """Counts points, blocks and bytes, and redraws one line at most every `interval` seconds.

    Off unless `enabled`; `None` means on when the stream is a terminal and $AEFSQL_PROGRESS
    is not "0".
    """

    def __init__(self, stream=None, enabled: bool | None = None, interval: float = 0.5):
        self.stream = stream or sys.stderr
        if enabled is None:
            enabled = os.environ.get("AEFSQL_PROGRESS", "1") != "0" and _is_terminal(self.stream)
        self.enabled = enabled
        self.interval = interval
        self.total: int | None = None
        self._lock = threading.Lock()
        self._reset(time.monotonic())

    def _reset(self, now: float) -> None:
        self.points = self.blocks = self.bytes = 0
        self._started = self._last_work = now
        self._last_draw = 0.0
        self._open_line = False

    def start(self, total: int | None) -> None:
        with self._lock:
            self._finish_line()
            self._reset(time.monotonic())
            self.total = total

    def add(self, points: int = 0, blocks: int = 0, nbytes: int = 0) -> None:
        if not self.enabled:
            return
        with self._lock:
            now = time.monotonic()
            if now - self._last_work > IDLE_RESET and self.total is None:
                self._finish_line()
                self._reset(now)
            self.points += points
            self.blocks += blocks
            self.bytes += nbytes
            self._last_work = now
            if now - self._last_draw >= self.interval:
                self._draw(now)

    def close(self) -> None:
        with self._lock:
            if self.enabled and self.points:
                self._draw(time.monotonic())
            self._finish_line()
            self.total = None

    def _draw(self, now: float) -> None:
        elapsed = max(now - self._started, 1e-9)
        done = f"{self.points:,}" + (f"/{self.total:,}" if self.total else "")
        self.stream.write(
            f"\raefsql: {done} points, {self.blocks:,} blocks, "
            f"{self.bytes / 1e6:,.1f} MB read, {self.points / elapsed:,.0f} points/s"
        )
        self.stream.flush()
        self._last_draw = now
        self._open_line = True

    def _finish_line(self) -> None:
        if self._open_line:
            self.stream.write("\n")
            self.stream.flush()
            self._open_line = False


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
