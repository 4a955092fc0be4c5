"""A one-line progress bar for the demo's long steps (plain lines when not on a terminal)."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO


class Progress:
    """``with Progress("training") as p: ...; p.update(0.5, "half way")``.

    On a terminal a ticker redraws the bar with the elapsed time every 0.2 s, so a step with
    no fractions to report (a pipeline run) still shows it is alive; elsewhere (CI logs) only
    the final line is written.
    """

    def __init__(self, label: str, *, stream: TextIO | None = None, width: int = 24):
        self.label, self.width = label, width
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.fraction: float | None = None
        self.text = ""
        self.t0 = time.monotonic()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._tick, daemon=True)

    def update(self, fraction: float | None = None, text: str = "") -> None:
        with self._lock:
            self.fraction = None if fraction is None else min(max(fraction, 0.0), 1.0)
            self.text = text

    def _line(self) -> str:
        elapsed = time.monotonic() - self.t0
        if self.fraction is None:  # indeterminate: a block sweeping across the bar
            pos = int(elapsed * 8) % self.width
            bar = "".join("#" if abs(i - pos) < 3 else "-" for i in range(self.width))
        else:
            done = int(round(self.fraction * self.width))
            bar = "#" * done + "-" * (self.width - done)
        return f"  {self.label:<22} [{bar}] {elapsed:5.1f} s  {self.text}"[:118]

    def _tick(self) -> None:
        while not self._stop.wait(0.2):
            with self._lock:
                self.stream.write("\r" + self._line().ljust(118))
                self.stream.flush()

    def __enter__(self) -> Progress:
        if self.tty:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self.tty:
            self._thread.join()
            self.stream.write("\r" + " " * 118 + "\r")
            self.stream.flush()
