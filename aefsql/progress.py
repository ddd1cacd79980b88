"""A one-line progress report on stderr for long sampling jobs."""

from __future__ import annotations

import os
import sys
import threading
import time

IDLE_RESET = 2.0  # seconds without work that end one job's line: the next work is a new job
# A rate over the first instants of a job is noise (90,000,000,000 points/s after 1 µs):
# the rate, and the ETA drawn from it, wait until the job has run this long.
MIN_RATE_SECONDS = 1.0


class Progress:
    """Counts points, blocks and bytes, and redraws one line at most every `interval` seconds.

    Off unless `enabled`; `None` means on when the stream is a terminal and $AEFSQL_PROGRESS
    is not "0". With a `total` (see `start`), the line shows done/total and an ETA.
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
        self._width = 0

    def start(self, total: int | None) -> None:
        """A new job of `total` points (None: unknown)."""
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
        """End the job: draw its final counts and end the line, so that what is printed next
        starts on a line of its own; the next work counts from zero."""
        with self._lock:
            now = time.monotonic()
            if self.enabled and self.points:
                self._draw(now)
            self._finish_line()
            self._reset(now)
            self.total = None

    def _draw(self, now: float) -> None:
        elapsed = now - self._started
        parts = [
            f"{self.points:,}" + (f"/{self.total:,}" if self.total else "") + " points",
            f"{self.blocks:,} blocks",
            f"{self.bytes / 1e6:,.1f} MB read",
            _duration(elapsed),
        ]
        if elapsed >= MIN_RATE_SECONDS and self.points:
            rate = self.points / elapsed
            parts.append(f"{rate:,.0f} points/s")
            if self.total and self.points < self.total:
                parts.append(f"ETA {_duration((self.total - self.points) / rate)}")
        line = "aefsql: " + ", ".join(parts)
        # Pad over the previous, possibly longer, line: "\r" only moves the cursor.
        self.stream.write("\r" + line.ljust(self._width))
        self.stream.flush()
        self._width = len(line)
        self._last_draw = now
        self._open_line = True

    def _finish_line(self) -> None:
        if self._open_line:
            self.stream.write("\n")
            self.stream.flush()
            self._open_line = False


def _duration(seconds: float) -> str:
    """4.2 s, 45 s, 3 min 07 s, 2 h 05 min."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min {int(seconds % 60):02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
