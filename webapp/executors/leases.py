"""Run leases: which process executes which legacy run.

A runner claims each run it executes in the run store and keeps the lease
fresh. A process that stops hands its runs back; one that dies lets its leases
expire, or a process that can prove it dead takes them at once. Either way
another process adopts the runs — never two at once: a runner that finds a
run held by another process, or that could not renew its lease for as long
as a lease lasts, is told to let the run go (``lost``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from webapp.errors import RunStoreUnavailable
from webapp.identity import process_owner
from webapp.runstore import Leases, just_admitted, launch_began
from webapp.status import JobStatus, utcnow

logger = logging.getLogger(__name__)

LEASE_SECONDS = 30.0
LAUNCH_SECONDS = 15.0
"""A run still at its first status (or just admitted from the line) this young is being launched: not an orphan."""


def being_launched(status: JobStatus) -> bool:
    """Whether some process is handing the run to its executor now (:func:`~webapp.runstore.launch_began`).

    A run at its first status, or one just admitted from the line for capacity, for :data:`LAUNCH_SECONDS`.
    """
    if status.seq != 1 and not just_admitted(status):
        return False
    return (utcnow() - launch_began(status)).total_seconds() < LAUNCH_SECONDS


class RunLeases:
    def __init__(
        self,
        *,
        store: Leases,
        held: Callable[[], Iterable[str]],
        adopt: Callable[[], None],
        name: str,
        lost: Callable[[str], None] = lambda job_name: None,
        lease_seconds: float = LEASE_SECONDS,
    ) -> None:
        """``held`` names the runs this process executes now; ``adopt`` takes over orphaned ones; ``lost`` stops one."""
        self.owner = process_owner()
        self._store = store
        self._held = held
        self._adopt = adopt
        self._lost = lost
        self._renewed: dict[str, float] = {}
        self._name = name
        self._lease_seconds = lease_seconds
        self._stopping = threading.Event()

    def claim(self, job_name: str, *, replacing: str | None = None) -> bool:
        """Take or renew the run's lease; ``replacing`` names an owner known to be dead, whose lease is taken now."""
        claimed = self._store.claim_run(
            job_name, owner=self.owner, lease_seconds=self._lease_seconds, replacing=replacing
        )
        if claimed:
            self._renewed[job_name] = time.monotonic()
        return claimed

    def adopt_now(self) -> None:
        """Adopt orphaned runs at once; if the run store is down, the renewal loop tries again."""
        try:
            self._adopt()
        except RunStoreUnavailable as error:  # the store says why (disk full, Redis down); no traceback needed
            logger.warning("lease.adopt_failed", extra={"runner": self._name, "error": error.message})
        except Exception:
            logger.exception("lease.adopt_failed", extra={"runner": self._name})

    def start(self) -> None:
        threading.Thread(target=self._renew, name=self._name, daemon=True).start()

    def stop(self) -> None:
        """Stop renewing and hand every run back to the run store (if it can be reached)."""
        self._stopping.set()
        try:
            self._store.release_runs(owner=self.owner)
        except RunStoreUnavailable as error:
            logger.warning("lease.release_failed", extra={"runner": self._name, "error": error.message})
        except Exception:
            logger.exception("lease.release_failed", extra={"runner": self._name})

    def _renew(self) -> None:
        while not self._stopping.wait(self._lease_seconds / 3):
            self._renew_held()
            self.adopt_now()

    def _renew_held(self) -> None:
        """Renew each held run's lease; let a run go once another process holds it, or the lease has run out."""
        held = list(self._held())
        for finished in self._renewed.keys() - held:
            del self._renewed[finished]
        for job_name in held:
            try:
                if self.claim(job_name):
                    continue
                logger.warning("lease.lost", extra={"runner": self._name, "job_name": job_name})
            except RunStoreUnavailable as error:
                logger.warning("lease.renewal_failed", extra={"runner": self._name, "error": error.message})
                renewed = self._renewed.setdefault(job_name, time.monotonic())
                if time.monotonic() - renewed < self._lease_seconds:
                    continue
                logger.warning("lease.expired", extra={"runner": self._name, "job_name": job_name})
            except Exception:
                logger.exception("lease.renewal_failed", extra={"runner": self._name})
                continue
            self._renewed.pop(job_name, None)
            self._lost(job_name)
