"""The legacy HTTP runner: runs are tasks of the existing task-runner service (``LEGACY_RUNNER=http``).

We do not own that service; its contract is all we may rely on (DESIGN.md,
"Execution"): ``POST {url}/tasks`` with ``{spec, params, job_name}`` answers
``{id}``, and ``GET {url}/tasks/{id}`` answers ``{state, message}`` with a
state of ``queued``, ``running``, ``succeeded`` or ``failed``, and perhaps a
``progress`` object ``{done, total, text}`` that is passed through when it
makes sense (and ignored when it does not). It has no push
channel, so this module polls: one poller per active task, never one per
client, backing off while nothing changes and on errors. Trouble with the
service becomes a plain ``reason`` on the status while polling goes on; like
every public answer it never names the service's address (which the client's
own errors do): that stays in the log lines.

The service's task id is kept in the run store (as an annotation on the
rendered manifest) and runs are leased there, as the local runner does, so
after a restart the next process resumes polling the runs this one did not
see finish. The contract has no cancel and no logs: ``cancel`` tries a
``DELETE`` and stops following the task; ``logs`` says there are none.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import unicodedata
from collections.abc import Iterator
from typing import Any, TypeGuard
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter

from webapp import metrics
from webapp.backoff import Backoff
from webapp.door import StatusDoor
from webapp.errors import Conflict, ExecutorUnavailable, InvalidRequest, describe_connection_error
from webapp.executors.leases import LEASE_SECONDS
from webapp.executors.legacy import LEGACY_TASK_ID_ANNOTATION, LegacyRun, LegacyRunner, legacy_task_id
from webapp.jobspecs import container_env
from webapp.status import JobStatus, Phase, Progress, utcnow

logger = logging.getLogger(__name__)

TASK_ID_ANNOTATION = LEGACY_TASK_ID_ANNOTATION
"""Where a run's task id at the legacy service is kept, on the manifest in the run store."""

UNREADY_AFTER_FAILURES = 3
"""Consecutive failed requests (launches or polls) after which ``/readyz`` reports the service down."""

ORPHAN_AFTER_SECONDS = 2 * LEASE_SECONDS
"""An unfinished run with no task id this old was never handed over: its launching process died mid-launch."""

_SERVICE_MESSAGE_LIMIT = 300
_PROGRESS_TEXT_LIMIT = 200
_PROGRESS_COUNT_LIMIT = 2**53 - 1


@dataclasses.dataclass(frozen=True)
class _Observation:
    """What one successful poll says: the fields to set on the status."""

    status: Phase
    reason: str | None
    message: str | None
    active: int
    succeeded: int = 0
    failed: int = 0
    progress: Progress | None = None
    """The task's progress, when the service reports it; ``None`` changes nothing (a final status keeps it)."""

    def fields(self) -> dict[str, Any]:
        changes: dict[str, Any] = {
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
            "active": self.active,
            "succeeded": self.succeeded,
            "failed": self.failed,
        }
        if self.progress is not None:
            changes["progress"] = self.progress
        return changes


class _RunnerTrouble(Exception):
    """A poll that got no usable answer; ``reason`` and ``message`` go on the status meanwhile.

    ``detail`` is for the log only: it may name the service's address.
    """

    def __init__(self, reason: str, message: str, *, kind: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.kind = kind  # the metric label: timeout, unreachable, server_error, bad_answer
        self.detail = detail or message


class _TaskLost(Exception):
    """The service answered 404 for a task id it gave us."""


class _Unreachable(Exception):
    """No HTTP answer at all: connection refused, DNS failure, timeout.

    ``public`` says why in words anyone may read; ``detail`` is the client's
    own message, which names the service's URL, for the log only.
    """

    def __init__(self, error: requests.RequestException) -> None:
        self.timeout = isinstance(error, requests.Timeout)
        self.public = "timed out" if self.timeout else describe_connection_error(error)
        self.detail = str(error) or type(error).__name__
        super().__init__(self.public)


class _HttpRun(LegacyRun):
    """A run that is a task of the legacy service: its id there."""

    def __init__(self, status: JobStatus, task_id: str) -> None:
        super().__init__(status)
        self.task_id = task_id


class HttpRunner(LegacyRunner[_HttpRun]):
    """An :class:`~webapp.executors.Executor` handing tasks to the legacy task-runner service."""

    def __init__(
        self,
        *,
        door: StatusDoor,
        base_url: str,
        session: requests.Session | None = None,
        poll_seconds: float = 1.0,
        max_poll_seconds: float = 10.0,
        request_timeout: float = 5.0,
        give_up_after: float = 600.0,
    ) -> None:
        super().__init__(
            door=door,
            title="the legacy task runner client",
            thread_prefix="legacy-poll",
            leases_name="legacy-http-leases",
            join_seconds=request_timeout,
        )
        self._base_url = base_url.rstrip("/")
        self._session = session or _default_session()
        self._poll_seconds = poll_seconds
        self._max_poll_seconds = max(max_poll_seconds, poll_seconds)
        self._timeout = request_timeout
        self._give_up_after = give_up_after
        self._failures = 0
        self._last_failure = ""

    # -- lifecycle (stop() stops every poller; the tasks run on) -------------------

    def unready_reason(self) -> str | None:
        if stopping := super().unready_reason():
            return stopping
        with self._lock:
            if self._failures >= UNREADY_AFTER_FAILURES:
                return f"the legacy task runner is unreachable: {self._last_failure}"
        return None

    # -- launching -------------------------------------------------------------

    def launch(self, status: JobStatus, manifest: dict[str, Any]) -> None:
        job_name = status.job_name
        params = _task_params(manifest)  # refuse a manifest we cannot submit before anything starts
        self._accept(job_name)
        task_id = self._submit(status, params)
        try:
            accepted = self._door.change(
                job_name,
                durable=True,
                manifest=_with_task_id(manifest, task_id),
                status=Phase.PENDING,
                reason=None,
                message=None,
            )
        except Exception:
            self._delete_task_quietly(job_name, task_id)  # we could not remember it: do not leave it running
            raise
        assert accepted is not None  # the launcher recorded the run before handing it over
        if accepted.terminal:  # cancelled while it was being handed over: nobody will follow the task
            self._delete_task_quietly(job_name, task_id)
            return
        self._start(_HttpRun(accepted, task_id))

    def _submit(self, status: JobStatus, params: dict[str, Any]) -> str:
        """``POST /tasks``; the service's task id, or one of our errors.

        After a timeout or a 5xx the service may have made the task anyway; the
        contract offers no way to find it, so it runs unobserved (docs/LEGACY_RUNNER.md).
        """
        body = {"spec": status.spec, "params": params, "job_name": status.job_name}
        try:
            response = self._send("POST", "/tasks", body=body)
        except _Unreachable as error:
            logger.warning(
                "legacy.launch_failed", extra={"job_name": status.job_name, "mode": self.mode, "error": error.detail}
            )
            raise ExecutorUnavailable(f"the legacy task runner is unreachable: {error.public}") from error
        code = response.status_code
        if code >= 500:
            raise ExecutorUnavailable(f"the legacy task runner answered {code}")
        if code in (400, 422):
            raise InvalidRequest(f"the legacy task runner refused the task: {_service_message(response)}")
        if code == 409:
            raise Conflict(f"the legacy task runner already has a task for {status.job_name}")
        if code >= 300:
            raise ExecutorUnavailable(f"the legacy task runner refused the task ({code}): {_service_message(response)}")
        task_id = _task_id_from(response)
        if task_id is None:
            raise ExecutorUnavailable("the legacy task runner accepted the task but answered no task id")
        return task_id

    def _resume(self, stored: JobStatus) -> None:
        """Take over polling a run that a stopped process handed over but did not see finish."""
        task_id = legacy_task_id(self._store.manifest(stored.job_name))
        if task_id is None:
            self._fail_orphan(stored)
            return
        if not self._leases.claim(stored.job_name):
            return
        resumed = self._door.change(
            stored.job_name, reason="Resumed", message="following the legacy task again after a restart"
        )
        if resumed is None or resumed.terminal:
            return
        logger.info("job.resumed", extra={"job_name": stored.job_name, "mode": self.mode})
        self._start(_HttpRun(resumed, task_id))

    def _fail_orphan(self, status: JobStatus) -> None:
        """A run with no task id, long unclaimed: its launch never finished, so nothing will ever run it."""
        age = (utcnow() - status.created_at).total_seconds()
        if age < ORPHAN_AFTER_SECONDS:
            return  # maybe a launch in progress elsewhere
        if not self._leases.claim(status.job_name):
            return
        logger.warning("job.error", extra={"job_name": status.job_name, "mode": self.mode, "error": "no task id"})
        self._door.change(
            status.job_name,
            status=Phase.FAILED,
            reason="TaskLost",
            message="no legacy task id was recorded for this run (its launch did not finish, "
            "or it was started by the local runner)",
        )

    # -- polling ---------------------------------------------------------------

    def _execute(self, run: _HttpRun) -> None:
        """The one poller of one task: until its status is terminal, or the run is stopped.

        It polls every ``poll_seconds`` after a change, twice as long after
        each poll that changed nothing, and backs off (with jitter) while the
        service does not answer; both up to ``max_poll_seconds``.
        """
        job_name = run.status.job_name
        quiet = Backoff(initial=self._poll_seconds, maximum=self._max_poll_seconds, jitter=0)
        errors = Backoff(initial=self._poll_seconds, maximum=self._max_poll_seconds)
        delay = quiet.next_delay()
        failing_since: float | None = None
        while not run.wake.wait(delay):
            try:
                observed = self._observe(run.task_id)
            except _TaskLost:
                if run.wake.is_set():
                    return
                self._update(
                    run,
                    status=Phase.FAILED,
                    reason="TaskLost",
                    message=f"the legacy task runner no longer knows task {run.task_id}",
                )
                return
            except _RunnerTrouble as trouble:
                if run.wake.is_set():
                    return
                metrics.LEGACY_POLL_FAILURES.labels(reason=trouble.kind).inc()
                failing_since = failing_since if failing_since is not None else time.monotonic()
                if time.monotonic() - failing_since >= self._give_up_after:
                    logger.warning(
                        "legacy.poll_gave_up", extra={"job_name": job_name, "mode": self.mode, "error": trouble.detail}
                    )
                    self._update(
                        run,
                        status=Phase.FAILED,
                        reason=trouble.reason,
                        message=f"gave up after {self._give_up_after:g}s without an answer ({trouble.message})",
                    )
                    return
                if self._update(run, reason=trouble.reason, message=trouble.message):
                    logger.warning(
                        "legacy.poll_failed", extra={"job_name": job_name, "mode": self.mode, "error": trouble.detail}
                    )
                delay = errors.next_delay()
                continue
            if run.wake.is_set():
                return
            if failing_since is not None:
                logger.info("legacy.poll_recovered", extra={"job_name": job_name, "mode": self.mode})
            failing_since = None
            errors.reset()
            if self._update(run, **observed.fields()):
                quiet.reset()
            if run.status.terminal:
                return
            delay = quiet.next_delay()

    def _observe(self, task_id: str) -> _Observation:
        """``GET /tasks/{id}`` mapped to our status fields; raises :class:`_RunnerTrouble` or :class:`_TaskLost`."""
        try:
            response = self._send("GET", f"/tasks/{quote(task_id, safe='')}")
        except _Unreachable as error:
            raise _RunnerTrouble(
                "RunnerUnreachable",
                f"the legacy task runner did not answer: {error.public}",
                kind="timeout" if error.timeout else "unreachable",
                detail=f"the legacy task runner did not answer: {error.detail}",
            ) from error
        code = response.status_code
        if code == 404:
            raise _TaskLost(task_id)
        if code >= 500:
            raise _RunnerTrouble("RunnerUnreachable", f"the legacy task runner answered {code}", kind="server_error")
        if code >= 300:
            raise _RunnerTrouble(
                "RunnerError",
                f"the legacy task runner refused the status request ({code}): {_service_message(response)}",
                kind="bad_answer",
            )
        try:
            body = response.json()
        except ValueError:
            body = None
        state = body.get("state") if isinstance(body, dict) else None
        message = _clip(body.get("message")) if isinstance(body, dict) else None
        progress = _progress_from(body.get("progress")) if isinstance(body, dict) else None
        if state == "queued":
            return _Observation(
                Phase.PENDING,
                "QueuedByLegacyRunner",
                message or "waiting in the legacy task runner's queue",
                0,
                progress=progress,
            )
        if state == "running":
            return _Observation(Phase.RUNNING, None, message, 1, progress=progress)
        if state == "succeeded":
            return _Observation(Phase.SUCCEEDED, None, message, 0, succeeded=1, progress=progress)
        if state == "failed":
            return _Observation(
                Phase.FAILED,
                "TaskFailed",
                message or "the legacy runner reported failure",
                0,
                failed=1,
                progress=progress,
            )
        described = f"an unknown state: {_clip(state)}" if isinstance(state, str) and state else "no task state"
        raise _RunnerTrouble("RunnerError", f"the legacy task runner answered {described}", kind="bad_answer")

    def _send(self, method: str, path: str, *, body: dict[str, Any] | None = None) -> requests.Response:
        """One request with a timeout; counts failures for :meth:`unready_reason`."""
        try:
            response = self._session.request(method, self._base_url + path, json=body, timeout=self._timeout)
        except requests.RequestException as error:
            unreachable = _Unreachable(error)
            self._note_answer(failure=unreachable.public)
            raise unreachable from error
        self._note_answer(failure=f"it answered {response.status_code}" if response.status_code >= 500 else None)
        return response

    def _note_answer(self, *, failure: str | None) -> None:
        with self._lock:
            if failure is None:
                self._failures = 0
            else:
                self._failures += 1
                self._last_failure = failure

    # -- cancelling and output -------------------------------------------------

    def _halt(self, run: _HttpRun) -> None:
        """Ask the service to drop a cancelled task (best effort); its poller stops already."""
        self._delete_task_quietly(run.status.job_name, run.task_id)

    def _cancel_orphan(self, job_name: str) -> None:
        task_id = legacy_task_id(self._store.manifest(job_name))
        if task_id is not None:
            self._delete_task_quietly(job_name, task_id)

    def _delete_task_quietly(self, job_name: str, task_id: str) -> None:
        """``DELETE /tasks/{id}``: not in the contract, so 404 and 405 are fine and nothing is raised."""
        try:
            response = self._send("DELETE", f"/tasks/{quote(task_id, safe='')}")
        except _Unreachable as error:
            logger.warning(
                "legacy.cancel_failed", extra={"job_name": job_name, "mode": self.mode, "error": error.detail}
            )
            return
        if response.status_code < 300 or response.status_code in (404, 405):
            logger.info(
                "legacy.cancel_sent",
                extra={"job_name": job_name, "mode": self.mode, "http_status": response.status_code},
            )
        else:
            logger.warning(
                "legacy.cancel_failed",
                extra={"job_name": job_name, "mode": self.mode, "error": f"answered {response.status_code}"},
            )

    def logs(self, job_name: str, *, tail_lines: int) -> str:
        status = self._known(job_name)
        if not tail_lines:
            return ""
        last = status.status.value + (f" ({status.message})" if status.message else "")
        return f"[jobpulse] the legacy task runner does not provide task output; last status: {last}\n"

    def follow_logs(self, job_name: str, *, tail_lines: int) -> Iterator[str]:
        text = self.logs(job_name, tail_lines=tail_lines)
        if text:
            yield text


def _default_session() -> requests.Session:
    """A session whose pool fits one connection per poller of a busy process."""
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=32)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _task_params(manifest: dict[str, Any]) -> dict[str, Any]:
    """The launch parameters, from the rendered manifest's ``TASK_PARAMS`` env (never logged: donor data)."""
    params = json.loads(container_env(manifest).get("TASK_PARAMS") or "{}")
    if not isinstance(params, dict):
        raise InvalidRequest("the rendered manifest's TASK_PARAMS is not a JSON object")
    return params


def _with_task_id(manifest: dict[str, Any], task_id: str) -> dict[str, Any]:
    """A copy of ``manifest`` whose metadata carries the service's task id (the caller's is untouched)."""
    metadata = dict(manifest.get("metadata") or {})
    metadata["annotations"] = {**(metadata.get("annotations") or {}), TASK_ID_ANNOTATION: task_id}
    return {**manifest, "metadata": metadata}


def _task_id_from(response: requests.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    task_id = body.get("id") if isinstance(body, dict) else None
    if isinstance(task_id, bool) or not isinstance(task_id, str | int) or task_id == "":
        return None
    return str(task_id)


def _service_message(response: requests.Response) -> str:
    """The service's own words from an error answer, else the HTTP status."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        for key in ("message", "error", "detail"):
            if isinstance(body.get(key), str) and body[key]:
                return _clip(body[key]) or ""
    return f"{response.status_code} {response.reason or ''}".strip()


def _progress_from(value: Any) -> Progress | None:
    """The optional ``progress`` object of a task's answer, if it makes sense; ``None`` (ignored) if not.

    ``done`` a whole number from 0, ``total`` one from ``done`` or null, ``text`` a string or null (made one
    line without control characters, and cut to 200 characters).
    """
    if not isinstance(value, dict):
        return None
    done, total, text = value.get("done"), value.get("total"), value.get("text")
    if not _is_count(done) or (total is not None and (not _is_count(total) or total < done)):
        return None
    if text is not None and not isinstance(text, str):
        return None
    if text is not None:
        text = "".join(c for c in " ".join(text.split()) if unicodedata.category(c) not in ("Cc", "Cf", "Cs"))
        text = text if len(text) <= _PROGRESS_TEXT_LIMIT else text[: _PROGRESS_TEXT_LIMIT - 1] + "…"
    return Progress(done=done, total=total, text=text or None, at=utcnow())


def _is_count(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _PROGRESS_COUNT_LIMIT


def _clip(text: Any) -> str | None:
    if not isinstance(text, str) or not text:
        return None
    return text if len(text) <= _SERVICE_MESSAGE_LIMIT else text[: _SERVICE_MESSAGE_LIMIT - 1] + "…"
