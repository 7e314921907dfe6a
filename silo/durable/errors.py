"""The errors of durable runs. All are raised inside grain code or returned to whoever
asks for a run's result; their names are what a remote caller sees as ``error_type``."""

from __future__ import annotations


class DurableError(Exception):
    """Base of the durable-run errors."""


class StepFailedError(DurableError):
    """A step's function failed on its last attempt. Raised live and on replay alike (the
    journal holds the original error's type and message, not the exception object), so a
    method's ``except`` branches take the same path both times."""

    def __init__(self, step: str, error_type: str, message: str, attempts: int) -> None:
        super().__init__(f"step {step} failed after {attempts} attempt(s): "
                         f"{error_type}: {message}")
        self.step, self.error_type, self.error_message = step, error_type, message
        self.attempts = attempts


class NonDeterminismError(DurableError):
    """Replay found the method's code doing something else than the journal recorded (a
    step renamed, added, removed or reordered between runs): the run is parked, nothing is
    guessed and nothing more runs."""


class RunCancelledError(DurableError):
    """The run was cancelled from outside; raised at the run's next durable point (step,
    wait, sleep). A method may catch it to compensate (its steps still run), or let it
    propagate (the run ends as ``cancelled``)."""


class DurableBusyError(DurableError):
    """A durable method was called while another run of the grain is unfinished (one run
    per grain at a time; calling the same method with the same arguments joins it)."""


class RunMovedError(DurableError):
    """The activation that ran the caller's run left (deactivated, fenced) before the run
    ended; the run goes on where the grain is next activated. Not retried by clients on
    purpose (a retry could start a second run once this one ended): ask for the result with
    ``ref.run_result(run)``; ``run`` is in the message and in the attribute."""

    def __init__(self, run: int, grain: str) -> None:
        super().__init__(f"run {run} of {grain} stopped on this activation before it ended "
                         f"(the grain left); it resumes where the grain is next activated: "
                         f"ref.run_result({run}) gives its result")
        self.run = run


class RunNotFoundError(DurableError):
    """No such run in the journal (never started, or trimmed by the retention policy)."""


class DurableRunError(DurableError):
    """Raised by ``run_result`` for a run that ended without a result (failed, cancelled,
    parked); ``status`` is the run's status as ``run_status`` gives it."""

    def __init__(self, status: dict[str, object]) -> None:
        error = status.get("error") or {}
        detail = ""
        if isinstance(error, dict):
            detail = f": {error.get('type', '')}: {error.get('message', '')}"
        super().__init__(f"run {status.get('run')} of {status.get('method')} "
                         f"{status.get('status')}{detail}")
        self.status = status
