"""A small progress line on stderr: steps, phase, acceptance per move, mean energy, speed."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """Redraws one line at most every ``interval`` seconds (a new line every 10 s when stderr is
    not a terminal, so logs stay readable)."""

    def __init__(self, total: int, n_chains: int, enabled: bool, file: TextIO | None = None):
        self.total = total
        self.n_chains = n_chains
        self.enabled = enabled
        self.file = file if file is not None else sys.stderr
        self.tty = bool(getattr(self.file, "isatty", lambda: False)())
        self.interval = 0.2 if self.tty else 10.0
        self.start = time.perf_counter()
        self.last = -float("inf")
        self.start_done = 0

    def begin(self, done: int) -> None:
        self.start_done = done
        self.start = time.perf_counter()

    def due(self) -> bool:
        return self.enabled and time.perf_counter() - self.last >= self.interval

    def update(self, done: int, phase: str, acceptance: dict[str, float], energy: float) -> None:
        now = time.perf_counter()
        self.last = now
        rate = (done - self.start_done) / max(now - self.start, 1e-9)
        width = 24
        filled = int(width * done / max(self.total, 1))
        bar = "#" * filled + "." * (width - filled)
        # A move not proposed yet has no acceptance: "-" rather than nan.
        acc = " ".join(
            f"{name} {value:.2f}" if value == value else f"{name} -"
            for name, value in acceptance.items()
        )
        line = (
            f"{phase:>8} [{bar}] {done}/{self.total} | acc {acc} | <U> {energy:.1f} kJ/mol | "
            f"{rate:.0f} steps/s ({rate * self.n_chains:.3g} chain-steps/s)"
        )
        if self.tty:
            self.file.write("\r" + line + "\033[K")
        else:
            self.file.write(line + "\n")
        self.file.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.file.write("\n")
            self.file.flush()
