"""Launching runs: what the API's ``POST`` asks of the back end.

The launcher turns a request into a run: checks the spec and the limits
(``MAX_ACTIVE_JOBS``, and each client's fair share of it; over the limit, a
run waits in line for capacity while fewer than ``MAX_QUEUED_JOBS`` wait, and
:mod:`webapp.admission` admits it later through :meth:`Launcher.admit`), claims the
``Idempotency-Key`` within the client's own keys (so a retried request never
makes a second run, and one client's key is nothing to another; a key left
bound to a run that was never saved is taken over by a later retry), renders
the manifest (with the run's own progress URL and token, see
:mod:`webapp.progress_reports`), records the launch and hands it to the executor of the
configured mode. A rerun (:meth:`Launcher.rerun`) is a launch of a finished
run's stored manifest and params again, as a new run of the old run's mode
only, linked both ways (``rerun_of`` / ``reruns``). Every status it writes goes through the door
(:mod:`webapp.door`). Finding, cancelling and reading runs is
:mod:`webapp.run_control`'s.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import logging
import secrets
import threading
import time
from collections.abc import Mapping
from typing import Any

from webapp import metrics
from webapp.comparison import shadow_launch_failed
from webapp.door import StatusDoor
from webapp.dual import record as record_comparison
from webapp.errors import (
    Conflict,
    ExecutorUnavailable,
    JobNotFound,
    RunStoreUnavailable,
    TooManyActiveJobs,
    UnknownJobspec,
)
from webapp.executors import Executor
from webapp.executors.legacy import LEGACY_TASK_ID_ANNOTATION
from webapp.jobspecs import (
    PROGRESS_TOKEN_ENV,
    PROGRESS_URL_ENV,
    Jobspec,
    container_env,
    progress_url,
    render_job,
)
from webapp.names import new_job_name, new_pipeline_run_id
from webapp.runstore import WAITING_FOR_CAPACITY, IdempotencyClaim, RunStore, awaits_admission, just_admitted
from webapp.settings import Settings
from webapp.status import JobStatus, Phase, finished_by

logger = logging.getLogger(__name__)

ORPHANED_CLAIM_SECONDS = 30.0
"""An ``Idempotency-Key`` bound this long to a job that has no run is orphaned: the next request takes it over.

A launch saves its run within moments of claiming the key (well within the
store's own timeouts); a key still without a run after this long belongs to
a launch that failed and could not give the key back (the store refused
both), and would otherwise answer ``409`` for ``STATUS_RETENTION_SECONDS``.
"""


MAX_RERUNS = 50
"""The most reruns one run lists (``reruns``); one more is refused (409): a run is not a cron job."""


def request_fingerprint(body: Mapping[str, Any]) -> str:
    """A stable digest of a request body, to tell a retry from a different request."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


class Launcher:
    def __init__(
        self,
        *,
        settings: Settings,
        specs: Mapping[str, Jobspec],
        executors: Mapping[str, Executor],
        door: StatusDoor,
    ) -> None:
        self._settings = settings
        self._specs = specs
        self._executors = executors
        self._door = door
        self._store: RunStore = door.store
        self._rerun_lock = threading.Lock()

    @property
    def spec_names(self) -> list[str]:
        return sorted(self._specs)

    def launch(
        self,
        *,
        spec_name: str,
        params: Mapping[str, str],
        pipeline_run_id: str | None = None,
        idempotency_key: str | None = None,
        fingerprint: str | None = None,
        client: str,
        fair_share: bool = False,
        request_root: str | None = None,
    ) -> tuple[JobStatus, bool]:
        """Start a run for ``client`` (its address); return its status and whether it is new (``False``: a repeat).

        ``fair_share`` holds the client to ``MAX_ACTIVE_JOBS_PER_CLIENT`` unfinished runs (donations: strangers).
        ``request_root``: the launch request's root URL, the base of the run's progress URL when
        ``SERVICE_URL`` is unset (with neither, the task gets no progress URL and cannot report).
        """
        spec = self._specs.get(spec_name)
        if spec is None:
            raise UnknownJobspec(
                f"no jobspec named {spec_name!r}", fields={"spec": [f"one of: {', '.join(self.spec_names)}"]}
            )
        run_id = pipeline_run_id or new_pipeline_run_id()
        job_name = new_job_name(run_id)
        mode = self._settings.primary_mode

        if idempotency_key is not None:
            idempotency_key = f"{client} {idempotency_key}"  # each client's keys are its own
            claim = self._store.claim_idempotency_key(idempotency_key, fingerprint=fingerprint or "", job_name=job_name)
            if not claim.won and claim.fingerprint == (fingerprint or "") and self._orphaned(claim):
                claim = self._store.claim_idempotency_key(
                    idempotency_key, fingerprint=fingerprint or "", job_name=job_name, replacing=claim.job_name
                )
            if not claim.won:
                if claim.fingerprint != (fingerprint or ""):
                    raise Conflict("this Idempotency-Key was already used for a different request")
                earlier = self.wait_for_status(claim.job_name)
                metrics.LAUNCHES.labels(mode=mode, result="repeat").inc()
                return earlier, False

        started = time.perf_counter()
        base_url = self._settings.service_url or request_root
        shadow_mode = self._shadow_mode()
        shadow_name = new_job_name(run_id) if shadow_mode else None
        try:
            place = self._check_active_limits(client, fair_share=fair_share)
            status = JobStatus.new(job_name=job_name, mode=mode, spec=spec.name, pipeline_run_id=run_id)
            status = dataclasses.replace(status, shadow_job_name=shadow_name)
            if place is not None:
                status = dataclasses.replace(status, **self.waiting_fields(place))
            status = self._start(
                status, spec, params, client=client, base_url=base_url, task_image=self._settings.task_image
            )
        except Exception as error:
            if idempotency_key is not None:
                self._release_key(idempotency_key, job_name=job_name)
            result = "unavailable" if isinstance(error, (ExecutorUnavailable, RunStoreUnavailable)) else "refused"
            metrics.LAUNCHES.labels(mode=mode, result=result).inc()
            logger.warning(
                "job.error",
                extra={"job_name": job_name, "mode": mode, "pipeline_run_id": run_id, "error": str(error)},
            )
            raise
        waits = awaits_admission(status)
        metrics.LAUNCHES.labels(mode=mode, result="queued" if waits else "launched").inc()
        metrics.LAUNCH_SECONDS.labels(mode=mode).observe(time.perf_counter() - started)
        logger.info(
            "job.queued" if waits else "job.launched",
            extra={"job_name": job_name, "mode": mode, "pipeline_run_id": run_id, "spec": spec.name},
        )
        if shadow_mode and shadow_name:
            self._start_shadow(status, spec, params, mode=shadow_mode, job_name=shadow_name, base_url=base_url)
        return self._door.current(job_name) or status, True

    def rerun(
        self,
        job_name: str,
        *,
        client: str,
        request_root: str | None = None,
        idempotency_key: str | None = None,
    ) -> tuple[JobStatus, bool]:
        """Start a new run of the finished run ``job_name``: its stored manifest and params, its spec and
        pipeline run id, in its mode only (no dual-mode shadow: a rerun is never compared); the new status,
        and whether it is new (``False``: a repeat of an ``idempotency_key`` already used for this rerun).

        The new run has a new job name and its own progress token (never the old run's); its ``rerun_of``
        names the old run, whose ``reruns`` then lists it. Limits and admission apply as to any launch.
        Raises :class:`JobNotFound`, or :class:`Conflict` when the run has not finished, its mode is not
        enabled, its manifest is gone, it lists :data:`MAX_RERUNS` reruns already, or the key was used for
        another request.

        The new run is started first and linked after (a run never lists a rerun that never started); if
        the process dies in between, :meth:`link_rerun` links it when any instance next hears of the rerun.
        """
        new_name: str | None = None
        if idempotency_key is not None:
            idempotency_key = f"{client} {idempotency_key}"  # the same keys as launches: one key, one request
            fingerprint = request_fingerprint({"rerun": job_name})
            new_name = new_job_name((self._door.current(job_name) or _unknown(job_name)).pipeline_run_id)
            claim = self._store.claim_idempotency_key(idempotency_key, fingerprint=fingerprint, job_name=new_name)
            if not claim.won and claim.fingerprint == fingerprint and self._orphaned(claim):
                claim = self._store.claim_idempotency_key(
                    idempotency_key, fingerprint=fingerprint, job_name=new_name, replacing=claim.job_name
                )
            if not claim.won:
                if claim.fingerprint != fingerprint:
                    raise Conflict("this Idempotency-Key was already used for a different request")
                earlier = self.wait_for_status(claim.job_name)
                metrics.LAUNCHES.labels(mode=earlier.mode, result="repeat").inc()
                return earlier, False
        try:
            with self._rerun_lock:  # the count of reruns is read and grown by one thread at a time
                return self._rerun(job_name, new_name=new_name, client=client, request_root=request_root), True
        except Exception:
            if idempotency_key is not None and new_name is not None:
                self._release_key(idempotency_key, job_name=new_name)
            raise

    def _rerun(self, job_name: str, *, new_name: str | None, client: str, request_root: str | None) -> JobStatus:
        old = self._door.current(job_name) or _unknown(job_name)
        if not old.terminal:
            raise Conflict(f"{job_name} has not finished ({old.status.value}): cancel it first, or wait")
        if len(old.reruns) >= MAX_RERUNS:
            raise Conflict(f"{job_name} has too many reruns already ({MAX_RERUNS}); rerun one of them")
        if old.mode not in self._executors:
            raise Conflict(
                f"{job_name} ran in {old.mode} mode, which is not enabled "
                f"(EXECUTION_MODE={self._settings.execution_mode})"
            )
        manifest = self._store.manifest(job_name)
        if manifest is None:
            raise Conflict(f"the manifest of {job_name} is no longer in the run store: it cannot be rerun")
        env = container_env(manifest)
        params = json.loads(env.get("TASK_PARAMS") or "{}")
        source = Jobspec(name=old.spec, manifest=rerun_source(manifest))
        new_name = new_name or new_job_name(old.pipeline_run_id)
        base_url = self._settings.service_url or request_root
        started = time.perf_counter()
        try:
            place = self._check_active_limits(client, fair_share=False)
            status = JobStatus.new(job_name=new_name, mode=old.mode, spec=old.spec, pipeline_run_id=old.pipeline_run_id)
            status = dataclasses.replace(status, rerun_of=job_name)
            if place is not None:
                status = dataclasses.replace(status, **self.waiting_fields(place))
            status = self._start(status, source, params, client=client, base_url=base_url, task_image=None)
        except Exception as error:
            result = "unavailable" if isinstance(error, (ExecutorUnavailable, RunStoreUnavailable)) else "refused"
            metrics.LAUNCHES.labels(mode=old.mode, result=result).inc()
            logger.warning("job.error", extra={"job_name": new_name, "mode": old.mode, "error": str(error)})
            raise
        waits = awaits_admission(status)
        metrics.LAUNCHES.labels(mode=old.mode, result="queued" if waits else "launched").inc()
        metrics.LAUNCH_SECONDS.labels(mode=old.mode).observe(time.perf_counter() - started)
        logger.info(
            "job.rerun",
            extra={"job_name": new_name, "rerun_of": job_name, "mode": old.mode, "spec": old.spec},
        )
        self._door.change(job_name, reruns=(new_name,))  # (made already if the hub's link_rerun heard it first)
        return self._door.current(new_name) or status

    def link_rerun(self, status: JobStatus, previous: JobStatus | None) -> None:
        """Hub listener: a rerun first heard here, or just finished, is listed in its old run's ``reruns``.

        The rerun itself links it right after starting it; this repairs the link a process that died in
        between never made (whichever instance next hears of the rerun, after a restart too).
        """
        if status.rerun_of is None or not (previous is None or finished_by(status, previous)):
            return
        old = self._door.current(status.rerun_of)
        if old is not None and status.job_name not in old.reruns:
            self._door.change(status.rerun_of, reruns=(status.job_name,))

    def _orphaned(self, claim: IdempotencyClaim) -> bool:
        """The key's launch failed and left no run, and could not give the key back (the store refused that too)."""
        if time.time() - claim.claimed_at < ORPHANED_CLAIM_SECONDS:
            return False  # maybe still being launched by another request
        return self._door.current(claim.job_name) is None

    def _release_key(self, idempotency_key: str, *, job_name: str) -> None:
        """Give back the key of a failed launch; if the store refuses, the next request takes it over."""
        try:
            self._store.release_idempotency_key(idempotency_key, job_name=job_name)
        except RunStoreUnavailable as error:
            logger.warning("idempotency.release_failed", extra={"job_name": job_name, "error": error.message})

    def _check_active_limits(self, client: str, *, fair_share: bool) -> int | None:
        """Refuse a launch over the limits (:class:`TooManyActiveJobs`), or say where it waits in line (1 = next).

        ``None``: it starts now. Once runs wait, a new one waits behind them (nobody jumps the line). A client's
        fair share counts its waiting runs too: one address cannot fill the line.
        """
        max_active, max_queued = self._settings.max_active_jobs, self._settings.max_queued_jobs
        place = None
        if max_active:
            waiting = self._store.count_waiting() if max_queued else 0
            if waiting or self._store.count_unfinished() - waiting >= max_active:
                if waiting >= max_queued:
                    raise TooManyActiveJobs(
                        f"{max_active} tasks are already unfinished"
                        + (f" and {waiting} wait in line" if max_queued else "")
                        + "; try again shortly"
                    )
                place = waiting + 1
        share = self._settings.max_active_jobs_per_client
        if fair_share and share and self._store.count_unfinished(client=client) >= share:
            raise TooManyActiveJobs(f"this address already has {share} unfinished tasks; try again when one ends")
        return place

    def waiting_fields(self, place: int) -> dict[str, Any]:
        """What the status of a run waiting for capacity at ``place`` (1 = next to start) says."""
        ahead = "next in line" if place == 1 else f"{place - 1} ahead in line"
        return {
            "status": Phase.QUEUED,
            "reason": WAITING_FOR_CAPACITY,
            "message": f"{self._settings.max_active_jobs} tasks are running; waiting for one to finish ({ahead})",
            "queue_position": place,
        }

    def _shadow_mode(self) -> str | None:
        if self._settings.execution_mode != "dual":
            return None
        return "k8s" if self._settings.primary_mode == "legacy" else "legacy"

    def _start(
        self,
        status: JobStatus,
        spec: Jobspec,
        params: Mapping[str, str],
        *,
        client: str | None,
        base_url: str | None,
        task_image: str | None,
    ) -> JobStatus:
        """Record the run (``client``: whose share it counts against), hand it to its executor, publish it.

        ``task_image``: the image every container gets, or ``None`` to keep the manifest's (a rerun keeps
        what its first run ran).

        The run gets its own progress token, a new secret kept only in its manifest (the run store has it,
        so every instance can check it, after a restart too). Leave no record behind if the executor cannot
        start it. A run that waits for capacity (:func:`~webapp.runstore.awaits_admission`) is recorded and
        published only: :meth:`admit` hands it on when its turn comes.
        """
        manifest = render_job(
            spec,
            job_name=status.job_name,
            pipeline_run_id=status.pipeline_run_id,
            params=params,
            task_image=task_image,
            progress_url=progress_url(base_url, status.job_name) if base_url else None,
            progress_token=secrets.token_urlsafe(32) if base_url else None,
        )
        self._door.open(status, manifest=manifest, client=client)
        if awaits_admission(status):
            return self._door.announce(status)
        try:
            self._hand_over(status, manifest)
        except Exception:
            self._door.withdraw(status.job_name)
            raise
        return self._door.announce(status)

    def _hand_over(self, status: JobStatus, manifest: dict[str, Any]) -> None:
        """Give the recorded run to the executor of its mode, which starts it (or raises why it cannot)."""
        self._executors[status.mode].launch(status, manifest)

    def admit(self, job_name: str) -> JobStatus | None:
        """Hand a run that waited for capacity to its executor, as a direct launch does; its status now.

        The caller holds the run's admission (:meth:`~webapp.runstore.Runs.claim_admission`). The run leaves
        the line first (its status says so, saved before anything starts); ``None`` if it is no longer
        ``Queued`` (cancelled meanwhile): nothing starts. An executor that cannot take it now
        (:class:`ExecutorUnavailable`: the API server is away, the runner is stopping) puts it back in line, at
        its place, for a later pass (its status says it waits again); one that refuses it for good, or a
        manifest that is gone, makes it ``Failed`` (``StartError``): a waiting run is never dropped silently.
        """
        status = self._door.change(
            job_name,
            durable=True,
            only_if=lambda current: current.status == Phase.QUEUED,
            reason=None,
            message=None,
            queue_position=None,
        )
        if status is None:
            return None
        # Out of the line in the store before anything starts: a process that dies after this point leaves a
        # run the executors resume (or settle) as any other, never one a second admission starts again.
        self._store.admit_run(job_name)
        manifest = self._store.manifest(job_name)
        try:
            if manifest is None:
                raise Conflict("its manifest is missing from the run store")
            self._hand_over(status, manifest)
        except ExecutorUnavailable as error:  # it passes: the run waits on, and is admitted again later
            back = self._back_in_line(job_name, error)
            if back is not None:
                return back
            metrics.LAUNCHES.labels(mode=status.mode, result="unavailable").inc()
            logger.warning("job.error", extra={"job_name": job_name, "mode": status.mode, "error": str(error)})
            return self._door.change(
                job_name, status=Phase.FAILED, reason="StartError", message=f"it could not be started: {error}"
            )
        except Exception as error:
            metrics.LAUNCHES.labels(mode=status.mode, result="unavailable").inc()
            logger.warning("job.error", extra={"job_name": job_name, "mode": status.mode, "error": str(error)})
            return self._door.change(
                job_name, status=Phase.FAILED, reason="StartError", message=f"it could not be started: {error}"
            )
        metrics.LAUNCHES.labels(mode=status.mode, result="launched").inc()
        logger.info("job.admitted", extra={"job_name": job_name, "mode": status.mode, "spec": status.spec})
        return self._door.current(job_name) or status

    def _back_in_line(self, job_name: str, error: ExecutorUnavailable) -> JobStatus | None:
        """Put an admitted run its executor cannot take now back in line; its status (``None``: the store refused)."""
        try:
            if not self._store.return_to_line(job_name):
                return self._door.current(job_name)  # it finished meanwhile (a cancel)
        except RunStoreUnavailable:
            return None
        logger.warning("job.admission_deferred", extra={"job_name": job_name, "error": str(error)})
        fields = {**self.waiting_fields(1), "message": f"it could not be started yet ({error}); it waits in line"}
        changed = self._door.change(job_name, only_if=just_admitted, **fields)
        if changed is not None:
            return changed
        # moved on meanwhile (a cancel; a process that executes it after all): it is not waiting
        with contextlib.suppress(RunStoreUnavailable):  # (if the store refuses, the admitter's next pass marks it)
            self._store.admit_run(job_name)
        return self._door.current(job_name)

    def _start_shadow(
        self,
        primary: JobStatus,
        spec: Jobspec,
        params: Mapping[str, str],
        *,
        mode: str,
        job_name: str,
        base_url: str | None,
    ) -> None:
        """Start the dual-mode shadow run; its failure never fails the donor's request.

        The shadow is saved with no client: it is our comparison, not a second donation, so it does not count
        against the donor's fair share (it does count against ``MAX_ACTIVE_JOBS``: it takes a slot). The shadow
        of a primary that waits for capacity waits too, in line behind it: it starts when the admitter says.
        """
        shadow = JobStatus.new(job_name=job_name, mode=mode, spec=spec.name, pipeline_run_id=primary.pipeline_run_id)
        shadow = dataclasses.replace(shadow, shadow_job_name=primary.job_name)
        try:
            if awaits_admission(primary):
                shadow = dataclasses.replace(shadow, **self.waiting_fields(self._store.count_waiting() + 1))
            self._start(shadow, spec, params, client=None, base_url=base_url, task_image=self._settings.task_image)
        except Exception as error:
            metrics.LAUNCHES.labels(mode=mode, result="shadow_failed").inc()
            logger.warning(
                "job.shadow_failed",
                extra={
                    "job_name": job_name,
                    "mode": mode,
                    "pipeline_run_id": primary.pipeline_run_id,
                    "error": str(error),
                },
            )
            record_comparison(
                self._store, shadow_launch_failed(primary, shadow_mode=mode, shadow_job=job_name, error=str(error))
            )
            self._door.change(primary.job_name, shadow_job_name=None)  # there is no other run to point to
            return
        metrics.LAUNCHES.labels(mode=mode, result="shadow").inc()

    def wait_for_status(self, job_name: str, *, timeout: float = 5.0) -> JobStatus:
        """The status of a run another request is launching right now (a double click)."""
        deadline = time.monotonic() + timeout
        while True:
            status = self._door.current(job_name)
            if status is not None:
                return status
            if time.monotonic() > deadline:
                raise Conflict("a request with this Idempotency-Key is still being processed; retry")
            time.sleep(0.05)


PER_RUN_METADATA = ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields", "selfLink")
"""What the API server writes into a Job's metadata for one Job: never part of another run's manifest."""
PER_RUN_ANNOTATIONS = (LEGACY_TASK_ID_ANNOTATION,)
"""What an executor writes into a run's stored manifest for that run alone (the HTTP runner's task id)."""


def _unknown(job_name: str) -> JobStatus:
    raise JobNotFound(f"no job named {job_name}")


def rerun_source(manifest: dict[str, Any]) -> dict[str, Any]:
    """A copy of a stored manifest to render a rerun from: without what belonged to the old run alone.

    Its progress URL and token (a rerun gets its own, or none), and what an executor or the API server wrote
    for it (:data:`PER_RUN_ANNOTATIONS`, :data:`PER_RUN_METADATA`, ``status``): a rerun of an HTTP-runner run
    that kept the old task id would, after a crash before its own was written, follow the old finished task.
    """
    manifest = copy.deepcopy(manifest)
    manifest.pop("status", None)
    metadata = manifest.get("metadata") or {}
    for name in PER_RUN_METADATA:
        metadata.pop(name, None)
    annotations = metadata.get("annotations") or {}
    for name in PER_RUN_ANNOTATIONS:
        annotations.pop(name, None)
    if "annotations" in metadata and not annotations:
        del metadata["annotations"]
    pod = manifest["spec"]["template"]["spec"]
    for container in [*pod.get("initContainers", []), *pod["containers"]]:
        container["env"] = [
            item for item in container.get("env", []) if item.get("name") not in (PROGRESS_URL_ENV, PROGRESS_TOKEN_ENV)
        ]
    return manifest
