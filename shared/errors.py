"""The one place application errors are defined.

Every error the API can answer with is a subclass of :class:`SchedulerError`; ``api/problems.py`` is the one
place that turns them into RFC 9457 problem responses. psycopg errors never leave ``shared/db/repository.py``
(the API) or ``worker/store.py`` (the workers) untranslated.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One offending input field: ``field`` is a dotted path on the wire (``trigger.cron``)."""

    field: str
    reason: str


class SchedulerError(Exception):
    """The scheduler could not complete the request."""

    status = 500
    title = "Internal error"

    def __init__(self, detail: str | None = None) -> None:
        self.detail = detail or (self.__doc__ or self.title).strip()
        super().__init__(self.detail)


class InvalidInput(SchedulerError):
    """The request is not valid."""

    status = 400
    title = "Invalid request"

    def __init__(self, problems: list[FieldProblem] | FieldProblem, detail: str | None = None) -> None:
        self.problems = [problems] if isinstance(problems, FieldProblem) else list(problems)
        first = self.problems[0] if self.problems else None
        super().__init__(detail or (f"{first.field}: {first.reason}" if first else None))

    @classmethod
    def field(cls, field: str, reason: str) -> InvalidInput:
        return cls(FieldProblem(field, reason))


class Unauthenticated(SchedulerError):
    """A valid bearer token is required."""

    status = 401
    title = "Unauthorized"


class Forbidden(SchedulerError):
    """The token does not grant this operation."""

    status = 403
    title = "Forbidden"


class NotFound(SchedulerError):
    """The resource does not exist."""

    status = 404
    title = "Not found"


class EvaluationBudgetExceeded(SchedulerError):
    """Evaluating the trigger needs more CPU time than one request may spend."""

    status = 422
    title = "Evaluation budget exceeded"

    def __init__(self, limit_sec: float) -> None:
        self.limit_sec = limit_sec
        super().__init__(
            f"evaluating this trigger needs more than the {limit_sec * 1000:.0f} ms CPU budget per request "
            "(TRIGGER_EVAL_BUDGET_MS); simplify the expression or ask for fewer occurrences"
        )


class Conflict(SchedulerError):
    """The request conflicts with the stored state."""

    status = 409
    title = "Conflict"

    def __init__(self, detail: str | None = None, field: str | None = None) -> None:
        self.field = field
        super().__init__(detail)


class QuotaExceeded(SchedulerError):
    """The tenant has reached its limit."""

    status = 409
    title = "Quota exceeded"


class TooManyRequests(SchedulerError):
    """Too many requests for this tenant; retry later."""

    status = 429
    title = "Too many requests"

    def __init__(self, retry_after_sec: float) -> None:
        self.retry_after_sec = retry_after_sec
        super().__init__(f"the tenant's request rate limit is exceeded; retry in {retry_after_sec:.1f}s")


class PreconditionFailed(SchedulerError):
    """The resource changed since the version the client sent (If-Match / version)."""

    status = 412
    title = "Precondition failed"


class Unavailable(SchedulerError):
    """A dependency (the database) is unavailable; retry later."""

    status = 503
    title = "Service unavailable"


class Overloaded(SchedulerError):
    """This API process is at capacity for this kind of work; retry shortly."""

    status = 503
    title = "Service unavailable"

    def __init__(self, detail: str, retry_after_sec: float = 1.0) -> None:
        self.retry_after_sec = retry_after_sec
        super().__init__(detail)
