"""Runs that get interrupted: SIGINT (Ctrl-C), SIGTERM (batch schedulers) and SIGHUP (a closed
terminal) stop a sampling run between two steps, never inside one, so its state and checkpoint
stay consistent and a resume continues bit for bit."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

__all__ = ["STOP_SIGNALS", "DeferredInterrupt", "SamplingInterrupted"]


class SamplingInterrupted(KeyboardInterrupt):
    """A run stopped by a signal (Ctrl-C's SIGINT, a batch scheduler's SIGTERM, a closed
    terminal's SIGHUP) after finishing its current step; the checkpoint, if any, was written.
    A KeyboardInterrupt, so code that catches Ctrl-C catches every such stop."""

    def __init__(self, signum: int, checkpoint: Path | None = None, done: int = 0, total: int = 0):
        self.signum = signum
        self.signal_name = signal.Signals(signum).name
        self.checkpoint = checkpoint
        self.done = done
        self.total = total
        where = f"; the run is saved in {checkpoint}" if checkpoint is not None else ""
        super().__init__(f"interrupted by {self.signal_name} after step {done} of {total}{where}")

    @property
    def exit_status(self) -> int:
        """The shell's convention for a process ended by this signal: 128 + its number."""
        return 128 + self.signum


#: Signals that stop a run cleanly (deferred to the end of the step); SIGHUP where it exists.
STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


class DeferredInterrupt:
    """Turns SIGINT, SIGTERM and SIGHUP into a flag checked between steps, so a step is never cut
    in half (the state and the recorded draws stay consistent and the checkpoint resumes
    bit-identically). A second signal of the same kind interrupts at once."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> DeferredInterrupt:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.getsignal(signum)
                signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum == signum:
            raise SamplingInterrupted(signum)
        self.signum = signum

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
