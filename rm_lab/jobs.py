"""Signal-safe jobs: SIGINT and SIGTERM stop the work where it can be resumed, and the job says so.

`rm_lab` runs every command inside one `Job` (see `rm_lab.cli.main`). A signal then raises `Stopped`:

- at once, in ordinary work: every artifact is written atomically, so nothing half-written is left;
- inside `deferred()` (long work with checkpoints, e.g. train-rm), only at the next `safe_point()`, so
  the work ends where its checkpoints say it is; a second signal there stops at once.

`Stopped` is a BaseException (like KeyboardInterrupt), so a broad `except Exception` never swallows it.
`rm_lab.runs.Run` marks its run `stopped` and adds the run folder and the resume command; the CLI prints
that and exits with 128 + the signal number (130 for SIGINT, 143 for SIGTERM), as a shell reports a
process ended by that signal.

Lightning installs its own SIGTERM handler while `Trainer.fit` runs; it raises `SIGTERMException`, a
SystemExit that would end the process with status 0, at points of its own choosing. `lightning_callback()`
takes SIGTERM back in a single-process fit and stops at batch and epoch boundaries instead, and
`lightning_fit` turns a `SIGTERMException` that still escapes (several processes) into `Stopped`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import threading
from typing import Any, Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(BaseException):
    """A job stopped by SIGINT or SIGTERM (what `Run` and the CLI report, and the exit status)."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = int(signum)
        self.run_path: str | None = None  # filled in by rm_lab.runs.Run
        self.resume: str | None = None  # the command that resumes the run, when it can be resumed

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def message(self) -> str:
        """One line: what stopped, where its files are, and how to go on."""
        text = f"stopped by {self.signal_name}"
        if self.run_path:
            text += f": run {self.run_path} is marked stopped"
        if self.resume:
            return text + f"; its checkpoints are kept: resume with `{self.resume}`"
        return text + ("; nothing of it is resumable: run the command again" if self.run_path else "")


class Job:
    """SIGINT/SIGTERM handlers for the life of one job (main thread only; elsewhere a no-op)."""

    def __init__(self):
        self.requested: int | None = None  # the signal received, if any
        self._deferring = 0
        self._old: dict[int, Any] = {}
        self._active = False

    def __enter__(self) -> "Job":
        if threading.current_thread() is threading.main_thread():  # only there can Python handle signals
            for s in SIGNALS:
                self._old[s] = signal.getsignal(s)
                signal.signal(s, self._handle)
            self._active = True
            _STACK.append(self)
        return self

    def __exit__(self, *exc) -> None:
        if not self._active:
            return
        _STACK.remove(self)
        for s, h in self._old.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)  # None: a handler not set from Python
        self._old.clear()
        self._active = False

    def _handle(self, signum: int, frame) -> None:
        if self._deferring and self.requested is None:
            self.requested = signum
            # os.write, not print: a handler may run in the middle of another write to stderr
            os.write(2, f"\nreceived {signal.Signals(signum).name}: stopping at the next safe point "
                        f"(send it again to stop at once)\n".encode())
            return
        self.requested = self.requested or signum
        raise Stopped(signum)

    def take_signals(self) -> None:
        """Install this job's handlers again (after a library replaced them for a while)."""
        if self._active:
            for s in SIGNALS:
                signal.signal(s, self._handle)

    @contextlib.contextmanager
    def deferred(self) -> Iterator["Job"]:
        self._deferring += 1
        try:
            yield self
        finally:
            self._deferring -= 1

    def safe_point(self) -> None:
        if self.requested is not None:
            raise Stopped(self.requested)


_STACK: list[Job] = []


def current() -> Job | None:
    return _STACK[-1] if _STACK else None


def safe_point() -> None:
    """Raise `Stopped` here if a stop was asked for (cheap; a no-op outside a Job)."""
    job = current()
    if job is not None:
        job.safe_point()


@contextlib.contextmanager
def deferred() -> Iterator[Job | None]:
    """Signals inside this block stop the work at the next `safe_point()`, not at once."""
    job = current()
    if job is None:
        yield None
        return
    with job.deferred():
        yield job


# ----------------------------------------------------------------------------------------------
# Lightning

@functools.cache
def _safe_stop_class():
    import lightning as L

    class SafeStop(L.Callback):
        """Stops `Trainer.fit` at batch and epoch boundaries, where the epoch checkpoints stay consistent:
        a stop inside an epoch discards that epoch, and a resume replays it from the last epoch's
        checkpoint (data order and dropout depend only on seed, epoch and step, so the weights match)."""

        def on_train_start(self, trainer, pl_module):
            job = current()
            if job is not None and trainer.world_size == 1:
                job.take_signals()  # Lightning's handler would exit 0 from a point of its own choosing
            safe_point()

        def on_train_epoch_start(self, trainer, pl_module):
            safe_point()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            safe_point()

        def on_validation_start(self, trainer, pl_module):
            safe_point()

        def on_validation_end(self, trainer, pl_module):
            safe_point()  # runs before ModelCheckpoint's (Lightning calls checkpoint callbacks last)

    return SafeStop


def lightning_callback():
    """A Lightning callback that stops a fit at its next safe point after SIGINT/SIGTERM."""
    return _safe_stop_class()()


def lightning_fit(trainer, *args, **kwargs) -> None:
    """`trainer.fit` with Lightning's own SIGTERM exit (a SystemExit with status 0) reported as `Stopped`."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    try:
        trainer.fit(*args, **kwargs)
    except SIGTERMException:
        raise Stopped(signal.SIGTERM) from None
