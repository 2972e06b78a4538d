"""Stopping a running sweep on request: Ctrl-C (SIGINT) and `ray job stop` (SIGTERM) alike.

The first signal asks Ray Tune to stop every trial (a Tune Stopper, checked at each step of its loop), after which the
sweep ends as usual: finished levels are kept, MLflow runs of unfinished series are marked KILLED and the summary is
printed. A second signal stops at once (KeyboardInterrupt). Tune's own SIGINT handler is left out, and with it its
"Tuner.restore(...)" hint: this tool resumes a sweep by running the same spec again.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Iterator

from ray.tune.stopper import Stopper

SIGNALS = (signal.SIGINT, signal.SIGTERM)
TUNE_SIGINT_ENV = "TUNE_DISABLE_SIGINT_HANDLER"


class StopRequest(Stopper):
    """Set by the first stop signal; tells Tune to stop all trials."""

    def __init__(self):
        self._event = threading.Event()
        self.signal_name: str | None = None
        self.exit_code = 0

    def __call__(self, trial_id: str, result: dict) -> bool:
        """No single trial is stopped on its own results."""
        return False

    def stop_all(self) -> bool:
        """True once a stop signal arrived."""
        return self._event.is_set()

    def __getstate__(self) -> dict:
        """Tune pickles its stopper with the experiment state: the signal name and exit code travel, not the event."""
        return {"signal_name": self.signal_name, "exit_code": self.exit_code}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _event=threading.Event())

    def handle(self, signum: int, frame) -> None:
        """Signal handler: the first signal asks for a stop, the second interrupts at once."""
        if self._event.is_set():
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name
        self.exit_code = 128 + signum
        self._event.set()
        print(f"{self.signal_name}: stopping the sweep; finished levels are kept, unfinished runs are marked KILLED "
              "(send it again to stop at once)", file=sys.stderr, flush=True)


@contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """While inside (in the main thread), SIGINT and SIGTERM ask the returned StopRequest to stop the sweep, and
    Tune does not install its own SIGINT handler; the previous handlers are put back on exit."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    saved = {signum: signal.getsignal(signum) for signum in SIGNALS}
    saved_env = os.environ.get(TUNE_SIGINT_ENV)
    os.environ[TUNE_SIGINT_ENV] = "1"
    for signum in SIGNALS:
        signal.signal(signum, request.handle)
    try:
        yield request
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
        os.environ.pop(TUNE_SIGINT_ENV) if saved_env is None else os.environ.__setitem__(TUNE_SIGINT_ENV, saved_env)
