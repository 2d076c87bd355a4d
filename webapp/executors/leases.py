"""Run leases: which process executes which legacy run.

A runner claims each run it executes in the run store and keeps the lease
fresh. A process that stops hands its runs back; one that dies lets its leases
expire, or a process that can prove it dead takes them at once. Either way
another process adopts the runs — never two at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

from webapp.errors import RunStoreUnavailable
from webapp.identity import process_owner
from webapp.runstore import RunStore
from webapp.status import JobStatus, utcnow

logger = logging.getLogger(__name__)

LEASE_SECONDS = 30.0
LAUNCH_SECONDS = 15.0
"""A run still at its first status this young is being launched by some process: not an orphan."""


def being_launched(status: JobStatus) -> bool:
    return status.seq == 1 and (utcnow() - status.created_at).total_seconds() < LAUNCH_SECONDS


class RunLeases:
    def __init__(
        self,
        *,
        store: RunStore,
        held: Callable[[], Iterable[str]],
        adopt: Callable[[], None],
        name: str,
        lease_seconds: float = LEASE_SECONDS,
    ) -> None:
        """``held`` names the runs this process executes now; ``adopt`` takes over orphaned ones."""
        self.owner = process_owner()
        self._store = store
        self._held = held
        self._adopt = adopt
        self._name = name
        self._lease_seconds = lease_seconds
        self._stopping = threading.Event()

    def claim(self, job_name: str, *, replacing: str | None = None) -> bool:
        """Take or renew the run's lease; ``replacing`` names an owner known to be dead, whose lease is taken now."""
        return self._store.claim_run(job_name, owner=self.owner, lease_seconds=self._lease_seconds, replacing=replacing)

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
            try:
                for job_name in list(self._held()):
                    self.claim(job_name)
                self._adopt()
            except RunStoreUnavailable as error:
                logger.warning("lease.renewal_failed", extra={"runner": self._name, "error": error.message})
            except Exception:
                logger.exception("lease.renewal_failed", extra={"runner": self._name})
