"""The running parts of one jobpulse process, built from the settings and wired together.

One :class:`Runtime` per process (per app): the status hub, the run store,
the door every status change goes through (:mod:`webapp.door`), the
executors of the configured mode, the launcher and run control, the
admitter of runs waiting for capacity (:mod:`webapp.admission`), the gate of
the tasks' progress reports (:mod:`webapp.progress_reports`), the keeper of
finished runs' output (:mod:`webapp.log_tails`), the shared live follows of
running runs' output (:mod:`webapp.log_follow`), and a housekeeping loop
that applies ``STATUS_RETENTION_SECONDS``. :func:`build_runtime` is the one
place where the parts are wired together, hub listeners included.

A status change the run store refuses (disk full, Redis down) is not lost:
the hub keeps serving it, it waits in the door's backlog that is written
again every ``STORE_RETRY_SECONDS`` until the store takes it, and the process
is not ready meanwhile.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from typing import Protocol

from webapp import metrics
from webapp.admission import Admitter
from webapp.door import StatusDoor
from webapp.dual import DualComparator
from webapp.errors import RunStoreUnavailable
from webapp.executors import Executor
from webapp.executors.http_runner import HttpRunner
from webapp.executors.local import LocalRunner, find_python
from webapp.hub import StatusHub
from webapp.jobspecs import Jobspec, load_jobspecs
from webapp.launcher import Launcher
from webapp.log_follow import LogFollowers
from webapp.log_tails import LogTailKeeper
from webapp.progress_reports import ProgressCoalescer, ProgressTokens
from webapp.run_control import RunControl
from webapp.runstore import RunStore
from webapp.runstore.sqlite import SQLiteRunStore
from webapp.settings import ConfigError, Settings
from webapp.status import JobStatus, Transition, utcnow
from webapp.webhooks import WebhookSender

logger = logging.getLogger(__name__)

HOUSEKEEPING_SECONDS = 60.0
FORGET_FINISHED_AFTER = timedelta(minutes=10)
STORE_RETRY_SECONDS = 1.0
"""How often status changes the run store refused are written again."""


class Service(Protocol):
    """A background part besides the executors (the Redis status channel, the webhook sender)."""

    name: str

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def unready_reason(self) -> str | None: ...


class Runtime:
    def __init__(
        self,
        *,
        settings: Settings,
        specs: dict[str, Jobspec],
        door: StatusDoor,
        executors: dict[str, Executor],
        services: list[Service] | None = None,
    ) -> None:
        self.settings = settings
        self.specs = specs
        self.door = door
        self.hub: StatusHub = door.hub
        self.store: RunStore = door.store
        self.executors = executors
        self.services = services or []
        self.launcher = Launcher(settings=settings, specs=specs, executors=executors, door=door)
        self.log_followers = LogFollowers()
        self.runs = RunControl(settings=settings, executors=executors, door=door, followers=self.log_followers)
        self.admitter = Admitter(door=door, launcher=self.launcher, max_active=settings.max_active_jobs)
        self.progress = ProgressCoalescer(door=door)
        self.progress_tokens = ProgressTokens(store=door.store)
        self._stopping = threading.Event()
        self._started = False

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        for service in self.services:
            service.start()
        for executor in self.executors.values():
            executor.start()
        if self._runs_may_wait():
            self.admitter.start()
        self.progress.start()
        threading.Thread(target=self._housekeeping, name="housekeeping", daemon=True).start()
        threading.Thread(target=self._heartbeat, name="stream-heartbeat", daemon=True).start()
        threading.Thread(target=self._retry_unsaved, name="run-store-retry", daemon=True).start()

    def stop(self, *, close_streams_over: float = 0.0) -> None:
        """End streams (WebSocket 1001) and stop executors. Idempotent.

        ``close_streams_over``: seconds to spread the streams' ends over
        (:meth:`StatusHub.close`), so their clients do not all reconnect to
        another process in the same instant; the executors keep feeding the
        streams still open meanwhile, and stop after.

        Status changes the store refused are written before the executors hand
        their runs back: a run handed back is adopted by another process from
        what the store says, so the store must already know which runs finished.
        """
        if self._stopping.is_set():
            return
        self._stopping.set()
        self.admitter.stop()  # before the executors: a run admitted now would be refused by a stopping executor
        self.progress.stop()  # held progress is written first, while the runs it belongs to still stream
        self.hub.close(over=close_streams_over)
        self.log_followers.stop()  # log follows end with the status streams, before their executors stop
        self.door.save_unsaved()
        parts: list[Executor | Service] = [*self.executors.values(), *self.services]
        for part in parts:
            try:
                part.stop()
            except Exception:  # one part failing to stop (Redis down) must not keep the others running
                logger.exception("runtime.stop_failed", extra={"part": type(part).__name__})
        self.door.save_unsaved()
        self.door.report_unsaved_at_exit()

    def _runs_may_wait(self) -> bool:
        """Whether runs wait for capacity: ``MAX_QUEUED_JOBS`` is set, or runs still wait from when it was."""
        if self.settings.max_queued_jobs:
            return True
        try:
            return self.store.count_waiting() > 0
        except RunStoreUnavailable:
            return True  # cannot tell: an admitter with nothing to admit costs one read every few seconds

    def unready_reasons(self) -> list[str]:
        """Why the process should not be sent new work now (``/readyz``): none when ready.

        A stopping process is not ready from the first instant of :meth:`stop`, while it spreads
        its streams' ends: a load balancer that asks then sends new connections elsewhere instead
        of to streams about to be closed.
        """
        reasons = ["stopping: the process is shutting down"] if self._stopping.is_set() else []
        reasons += [
            f"{mode}: {reason}"
            for mode, executor in self.executors.items()
            if (reason := executor.unready_reason()) is not None
        ]
        reasons += [
            f"{service.name}: {reason}" for service in self.services if (reason := service.unready_reason()) is not None
        ]
        store_problems = []
        try:
            self.store.ping()
        except Exception as error:
            store_problems.append(str(error))
        if unsaved := self.door.unsaved_reason():
            store_problems.append(unsaved)
        if store_problems:
            reasons.append(f"run store: {'; '.join(store_problems)}")
        return reasons

    @staticmethod
    def count_change(status: JobStatus, previous: JobStatus | None) -> None:
        """Hub listener: count and log every change of phase (metrics and the ``job.status`` log line).

        Counted from ``history``: a hub may hear of a run first at its second phase (the launch's
        ``Queued`` is published once the executor has the run, which may have moved it on already).
        """
        if previous.status == status.status if previous is not None else status.amended:
            return  # (an amendment heard without what came before it changed no phase either)
        seen = len(previous.history) if previous is not None else 0
        for transition in status.history[seen:] or (Transition(status.status, status.updated_at),):
            metrics.TRANSITIONS.labels(mode=status.mode, status=transition.status.value).inc()
        logger.info(
            "job.status",
            extra={
                "job_name": status.job_name,
                "mode": status.mode,
                "pipeline_run_id": status.pipeline_run_id,
                "status": status.status.value,
                "reason": status.reason,
            },
        )

    def _retry_unsaved(self) -> None:
        while not self._stopping.wait(STORE_RETRY_SECONDS):
            try:
                self.door.save_unsaved()
            except Exception:
                logger.exception("store.retry_failed")

    def _heartbeat(self) -> None:
        """Every ``SSE_HEARTBEAT_SECONDS``, wake every stream to send its keep-alive: one timer, not one per stream."""
        while not self._stopping.wait(self.settings.sse_heartbeat_seconds):
            self.hub.nudge_all()

    def _housekeeping(self) -> None:
        while not self._stopping.wait(HOUSEKEEPING_SECONDS):
            try:
                self._keep_house()
            except RunStoreUnavailable as error:  # the store says why (disk full, Redis down): no traceback
                logger.warning("housekeeping.failed", extra={"error": error.message})
            except Exception:
                logger.exception("housekeeping.failed")

    def _keep_house(self) -> None:
        """Forget finished runs nobody watches (not those whose final status is still unsaved); purge old ones."""
        now = utcnow()
        for status in self.hub.known_jobs():
            if (
                status.terminal
                and now - status.updated_at > FORGET_FINISHED_AFTER
                and not self.door.holds_unsaved(status.job_name)
            ):
                self.hub.forget(status.job_name)
        purged = self.store.purge(before=now - timedelta(seconds=self.settings.status_retention_seconds))
        if purged:
            logger.info("runs.purged", extra={"count": purged})


def build_runtime(settings: Settings) -> Runtime:
    """Load the jobspecs and build every part the settings ask for (not started yet)."""
    specs = load_jobspecs(settings.jobspecs_dir)
    if settings.donation_jobspec not in specs:
        raise ConfigError(
            f"DONATION_JOBSPEC: no jobspec named {settings.donation_jobspec!r} in {settings.jobspecs_dir}"
        )
    hub = StatusHub()
    services: list[Service] = []
    store: RunStore
    channel = None
    if settings.redis_url:
        from webapp.redis_relay import RedisStatusChannel
        from webapp.runstore.redis import RedisRunStore

        redis_store = RedisRunStore(settings.redis_url, retention_seconds=settings.status_retention_seconds)
        channel = RedisStatusChannel(hub=hub, url=settings.redis_url, store=redis_store)
        services.append(channel)
        store = redis_store
    else:
        try:
            store = SQLiteRunStore(settings.database_path)
        except RunStoreUnavailable as error:
            raise ConfigError(
                f"DATABASE_PATH: cannot use {settings.database_path} as the run store: {error.message}"
            ) from error
    door = StatusDoor(hub=hub, store=store, relay=channel.announce if channel is not None else None)
    executors: dict[str, Executor] = {}
    legacy: HttpRunner | LocalRunner | None = None
    if settings.legacy_enabled and settings.legacy_runner == "http":
        assert settings.legacy_runner_url is not None  # required by the settings' validation
        legacy = HttpRunner(door=door, base_url=settings.legacy_runner_url)
    elif settings.legacy_enabled:
        legacy = LocalRunner(
            door=door,
            log_dir=settings.database_path.parent / "logs",
            max_concurrency=settings.legacy_max_concurrency,
            python=find_python(settings.legacy_python),
        )
    if legacy is not None:
        hub.add_listener(legacy.on_status)  # a cancel heard from another instance stops the run here too
        executors["legacy"] = legacy
    if settings.k8s_enabled:
        from webapp.executors.k8s import KubernetesExecutor, connect  # the client is heavy: only when used

        api, namespace = connect(settings)
        executors["k8s"] = KubernetesExecutor(door=door, api=api, namespace=namespace)
    hub.add_listener(Runtime.count_change)
    if settings.execution_mode == "dual":
        hub.add_listener(DualComparator(door=door).on_status)
    if settings.completion_webhook_url and settings.webhook_secret:
        webhooks = WebhookSender(store=store, url=settings.completion_webhook_url, secret=settings.webhook_secret)
        hub.add_listener(webhooks.on_status)
        services.append(webhooks)
    log_tails = None
    if settings.log_tail_bytes:
        log_tails = LogTailKeeper(store=store, sources=executors, max_bytes=settings.log_tail_bytes)
        hub.add_listener(log_tails.on_status)  # a run finished: keep the last part of its output in the store
        services.append(log_tails)
    runtime = Runtime(settings=settings, specs=specs, door=door, executors=executors, services=services)
    if log_tails is not None:  # a follow that saw its run end hands what it read over: kept if the pod is gone
        runtime.log_followers.hand_output_to(log_tails.take_followed)
    hub.add_listener(runtime.admitter.on_status)  # a run finished or left the line: admit the next one
    hub.add_listener(runtime.launcher.link_rerun)  # a rerun whose old run does not list it yet: link it
    return runtime
