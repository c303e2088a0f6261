"""Graceful Ctrl-C / SIGTERM: finish the step, checkpoint, then stop."""

from __future__ import annotations

import signal
import sys
import threading

__all__ = ["GracefulInterrupt"]


class GracefulInterrupt:
    """First Ctrl-C (or SIGTERM, as torchrun and schedulers send) sets ``requested``: the loop
    checkpoints at the end of the step, then raises KeyboardInterrupt (SIGINT) or
    SystemExit(143) (SIGTERM). A second signal raises KeyboardInterrupt at once.
    Installed only in the main thread, and for SIGTERM only over the default action."""

    def __init__(self):
        self.requested: int | None = None  # the signal number received
        self._prev: dict[int, object] = {}

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in (signal.SIGINT, signal.SIGTERM):
            prev = signal.getsignal(sig)
            if sig == signal.SIGTERM and prev not in (signal.SIG_DFL, None):
                continue
            self._prev[sig] = prev
            signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested is not None:
            raise KeyboardInterrupt
        self.requested = signum
        print(f"\n{signal.Signals(signum).name}: saving a checkpoint after this step "
              "(signal again to abort now)", file=sys.stderr, flush=True)

    def raise_for_signal(self):
        if self.requested == signal.SIGTERM:
            raise SystemExit(128 + signal.SIGTERM)
        raise KeyboardInterrupt

    def __exit__(self, *exc):
        for sig, prev in self._prev.items():
            if prev is None:  # installed outside Python: restore the usual default
                prev = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
            signal.signal(sig, prev)
        return False
