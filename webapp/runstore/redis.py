"""The Redis run store: one store shared by several jobpulse instances.

Same contract as the SQLite store (:class:`~webapp.runstore.RunStore`), kept
in Redis so that every instance sees every run, idempotency key, lease,
comparison and pending webhook. Every check-then-write (the ``seq`` guard,
leases, the webhook outbox) is one Lua script or one ``SET NX``, so two
instances never both win. Times that decide ownership (leases, when a webhook
is due) are the Redis server's clock, the one clock all instances share.

Keys (all under ``jobpulse:``)::

    run:<job>                 hash: body, seq, terminal, mode, created_at, updated_at,
                              manifest, owner, lease_until, client, waiting, admitter, admit_until,
                              log_tail, log_claim_until (the finished run's output, kept with it)
    runs:by-created           zset of job names by created_at   (recent)
    runs:unfinished           zset of job names by created_at   (unfinished, count; waiting ones too)
    runs:waiting              zset of the unfinished runs waiting for admission, by created_at
    runs:unfinished:client:<address>
                              the same, of the runs one client launched (its fair share)
    runs:finished             zset of job names by updated_at   (purge)
    runs:owner:<owner>        set of job names leased by owner  (release_runs)
    idempotency:<key>         JSON {job_name, fingerprint, created_at}, SET NX with a TTL
    idempotency-keys          zset of keys by created_at        (purge)
    comparison:<run id>       JSON comparison, SET NX
    comparisons               zset of pipeline run ids by compared_at
    webhook:<job>             hash: body, attempts, next_attempt_at, owner, lease_until,
                              last_error, delivered
    webhooks:due              zset of undelivered job names by next_attempt_at (claim)
    webhooks:delivered        zset of delivered job names by next_attempt_at   (purge)
    audit:last-id             counter: the id of the last admin action recorded
    audit:actions             hash: id -> JSON admin action
    audit:by-id               zset of action ids by id           (actions, newest first)
    audit:by-time             zset of action ids by time         (purge)

Connections follow redis-py's advice for long-lived clients: connect and
read timeouts, a periodic health check, TCP keepalive and a few retries with
exponential backoff. Nothing is connected in the constructor, so the app
starts while Redis is down; every call then raises
:class:`RunStoreUnavailable` (HTTP 503) until Redis answers again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import AuthenticationError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from webapp.comparison import Comparison
from webapp.errors import RunStoreUnavailable
from webapp.runstore import (
    DELIVERED,
    GIVEN_UP,
    RECENT_SCAN_LIMIT,
    AdminAction,
    IdempotencyClaim,
    PendingWebhook,
    WebhookDelivery,
    awaits_admission,
)
from webapp.status import JobStatus, Phase

KEY_PREFIX = "jobpulse:"
DEFAULT_RETENTION_SECONDS = 86_400.0
"""How long idempotency keys and lease bookkeeping live at most (``STATUS_RETENTION_SECONDS``' default)."""

SOCKET_TIMEOUT = 5.0
SOCKET_CONNECT_TIMEOUT = 2.0
HEALTH_CHECK_INTERVAL = 15
RETRIES = 3
_PURGE_BATCH = 500


def connect(url: str, *, retries: int = RETRIES, client_name: str = "jobpulse") -> redis.Redis:
    """A lazily connecting client with the timeouts, health checks and retries a long-lived process needs."""
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=SOCKET_CONNECT_TIMEOUT,
        socket_keepalive=True,
        health_check_interval=HEALTH_CHECK_INTERVAL,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries),
        client_name=client_name,
    )


def describe_redis_error(error: RedisError) -> str:
    """Words for ``/readyz`` and 503 answers, which anyone may read: never Redis's host, port or socket path.

    The client's own message names the address ("Error 111 connecting to
    10.0.0.5:6379"); only the logs carry it.
    """
    if isinstance(error, RedisTimeoutError):
        return "Redis unreachable: timed out"
    if isinstance(error, AuthenticationError):
        return "Redis unreachable: authentication failed"
    if isinstance(error, RedisConnectionError):
        return "Redis unreachable: cannot connect"
    return f"Redis error: {type(error).__name__}"


def _strings(values: Any) -> list[str]:
    """Members as ``str`` (the client decodes responses; its type hints cannot know that)."""
    return [str(value) for value in values]


# The Lua scripts. Each runs atomically on the server; ``redis.call('TIME')``
# gives the one clock every instance shares.

_NOW = """
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function fmt(x) return string.format('%.6f', x) end
"""

# KEYS: run, by-created, unfinished, finished, waiting
# ARGV: job_name, seq, terminal (0|1), mode, created_at, updated_at, body, manifest ('' = keep),
#       client ('' = none; recorded on insert), prefix of the per-client unfinished zsets,
#       waits for admission (0|1; recorded on insert)
_SAVE = """
local AMENDABLE = {reruns = true, seq = true, updated_at = true}
local function same(a, b)
  if a == cjson.null then a = nil end
  if b == cjson.null then b = nil end
  if type(a) ~= 'table' or type(b) ~= 'table' then return a == b end
  for key, value in pairs(a) do if not same(value, b[key]) then return false end end
  for key, value in pairs(b) do if a[key] == nil and not same(nil, value) then return false end end
  return true
end
local function amends(new, final)
  for key, value in pairs(new) do
    if not AMENDABLE[key] and not same(value, final[key]) then return false end
  end
  for key, value in pairs(final) do
    if not AMENDABLE[key] and new[key] == nil and not same(nil, value) then return false end
  end
  return true
end
local current = redis.call('HMGET', KEYS[1], 'seq', 'terminal', 'body')
local exists = current[1] ~= false
if exists and tonumber(ARGV[2]) <= tonumber(current[1]) then
  return 0
end
if exists and current[2] == '1' then
  -- a finished run takes only itself with new links to its reruns (JobStatus.amends, the hub's rule)
  if ARGV[3] ~= '1' or not amends(cjson.decode(ARGV[7]), cjson.decode(current[3])) then return 0 end
end
redis.call('HSET', KEYS[1], 'seq', ARGV[2], 'terminal', ARGV[3], 'updated_at', ARGV[6], 'body', ARGV[7])
if ARGV[8] ~= '' then redis.call('HSET', KEYS[1], 'manifest', ARGV[8]) end
local created = ARGV[5]
if exists then
  created = redis.call('HGET', KEYS[1], 'created_at')
else
  redis.call('HSET', KEYS[1], 'mode', ARGV[4], 'created_at', ARGV[5], 'owner', '', 'lease_until', '0')
  if ARGV[9] ~= '' then redis.call('HSET', KEYS[1], 'client', ARGV[9]) end
  redis.call('ZADD', KEYS[2], ARGV[5], ARGV[1])
  if ARGV[11] == '1' and ARGV[3] ~= '1' then
    redis.call('HSET', KEYS[1], 'waiting', '1')
    redis.call('ZADD', KEYS[5], ARGV[5], ARGV[1])
  end
end
local client = redis.call('HGET', KEYS[1], 'client')
if ARGV[3] == '1' then
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('ZREM', KEYS[5], ARGV[1])
  redis.call('HSET', KEYS[1], 'waiting', '0')
  redis.call('ZADD', KEYS[4], ARGV[6], ARGV[1])
  if client then redis.call('ZREM', ARGV[10] .. client, ARGV[1]) end
else
  redis.call('ZADD', KEYS[3], created, ARGV[1])
  if client then redis.call('ZADD', ARGV[10] .. client, created, ARGV[1]) end
end
return 1
"""

# KEYS: run   ARGV: owner, lease_seconds
_CLAIM_ADMISSION = (
    _NOW
    + """
local run = redis.call('HMGET', KEYS[1], 'terminal', 'waiting', 'admitter', 'admit_until')
if run[1] ~= '0' or run[2] ~= '1' then return 0 end
local t = now()
local holder = run[3] or ''
if holder ~= '' and holder ~= ARGV[1] and tonumber(run[4] or '0') >= t then return 0 end
redis.call('HSET', KEYS[1], 'admitter', ARGV[1], 'admit_until', fmt(t + tonumber(ARGV[2])))
return 1
"""
)

# KEYS: run, waiting   ARGV: job_name
_ADMIT_RUN = """
if redis.call('HGET', KEYS[1], 'waiting') ~= '1' then return 0 end
redis.call('HSET', KEYS[1], 'waiting', '0')
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""

# KEYS: run, waiting   ARGV: job_name
_RETURN_TO_LINE = """
if redis.call('HGET', KEYS[1], 'terminal') ~= '0' then return 0 end
redis.call('HSET', KEYS[1], 'waiting', '1', 'admitter', '', 'admit_until', '0')
redis.call('ZADD', KEYS[2], redis.call('HGET', KEYS[1], 'created_at'), ARGV[1])
return 1
"""

# KEYS: run, owner set   ARGV: job_name, owner, lease_seconds, owner-set ttl, dead owner to replace ('' = none)
_CLAIM_RUN = (
    _NOW
    + """
local run = redis.call('HMGET', KEYS[1], 'terminal', 'owner', 'lease_until')
if run[1] == false or run[1] == '1' then return 0 end
local t = now()
local holder = run[2] or ''
if holder ~= '' and holder ~= ARGV[2] and holder ~= ARGV[5] and tonumber(run[3] or '0') >= t then return 0 end
redis.call('HSET', KEYS[1], 'owner', ARGV[2], 'lease_until', fmt(t + tonumber(ARGV[3])))
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return 1
"""
)

# KEYS: owner set   ARGV: run key prefix, owner
_RELEASE_RUNS = """
for _, job in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local key = ARGV[1] .. job
  if redis.call('HGET', key, 'owner') == ARGV[2] then
    redis.call('HSET', key, 'owner', '', 'lease_until', '0')
  end
end
redis.call('DEL', KEYS[1])
return 1
"""

# KEYS: idempotency key   ARGV: replaced job_name, new value, ttl
_REPLACE_IDEMPOTENCY_KEY = """
local held = redis.call('GET', KEYS[1])
if held and cjson.decode(held)['job_name'] == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  return 1
end
return 0
"""

# KEYS: idempotency key   ARGV: job_name
_RELEASE_IDEMPOTENCY_KEY = """
local held = redis.call('GET', KEYS[1])
if held and cjson.decode(held)['job_name'] == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""

# KEYS: comparison, comparisons   ARGV: pipeline_run_id, compared_at, body
# KEYS: run   ARGV: lease seconds
_CLAIM_LOG_TAIL = (
    _NOW
    + """
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HEXISTS', KEYS[1], 'log_tail') == 1 then return 0 end
local t = now()
if tonumber(redis.call('HGET', KEYS[1], 'log_claim_until') or '0') >= t then return 0 end
redis.call('HSET', KEYS[1], 'log_claim_until', fmt(t + tonumber(ARGV[1])))
return 1
"""
)

# KEYS: run   ARGV: text
_SAVE_LOG_TAIL = """
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HEXISTS', KEYS[1], 'log_tail') == 1 then return 0 end
redis.call('HSET', KEYS[1], 'log_tail', ARGV[1])
return 1
"""

_RECORD_COMPARISON = """
if redis.call('SET', KEYS[1], ARGV[3], 'NX') then
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
  return 1
end
return 0
"""

# KEYS: webhook, due   ARGV: job_name, body
_ENQUEUE_WEBHOOK = (
    _NOW
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local t = fmt(now())
redis.call('HSET', KEYS[1], 'body', ARGV[2], 'attempts', '0', 'next_attempt_at', t,
           'owner', '', 'lease_until', '0', 'last_error', '', 'delivered', '0')
redis.call('ZADD', KEYS[2], t, ARGV[1])
return 1
"""
)

# KEYS: due   ARGV: webhook key prefix, owner, lease_seconds, limit
# Returns a flat list: job_name, body, attempts, job_name, body, attempts, ...
_CLAIM_WEBHOOKS = (
    _NOW
    + """
local t = now()
local limit = tonumber(ARGV[4])
local claimed = {}
if limit <= 0 then return claimed end
-- page through what is due (a sender claims one at a time: never the whole backlog per claim)
local offset = 0
while true do
  local jobs = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', fmt(t), 'LIMIT', offset, 100)
  if #jobs == 0 then return claimed end
  local removed = 0
  for _, job in ipairs(jobs) do
    local key = ARGV[1] .. job
    local hook = redis.call('HMGET', key, 'body', 'attempts', 'owner', 'lease_until', 'delivered')
    if hook[1] == false or (hook[5] or '0') ~= '0' then
      redis.call('ZREM', KEYS[1], job)
      removed = removed + 1
    else
      local holder = hook[3] or ''
      if holder == '' or holder == ARGV[2] or tonumber(hook[4] or '0') < t then
        redis.call('HSET', key, 'owner', ARGV[2], 'lease_until', fmt(t + tonumber(ARGV[3])))
        table.insert(claimed, job)
        table.insert(claimed, hook[1])
        table.insert(claimed, hook[2])
        if #claimed >= limit * 3 then return claimed end
      end
    end
  end
  offset = offset + #jobs - removed  -- (what this page removed no longer comes before the next one)
end
"""
)

# KEYS: webhook, due, delivered   ARGV: job_name, done mark (DELIVERED / GIVEN_UP), the last error when given up
_COMPLETE_WEBHOOK = """
local due = redis.call('HGET', KEYS[1], 'next_attempt_at')
if not due then return 0 end
redis.call('HSET', KEYS[1], 'delivered', ARGV[2], 'owner', '')
if ARGV[3] ~= '' then
  redis.call('HINCRBY', KEYS[1], 'attempts', 1)
  redis.call('HSET', KEYS[1], 'last_error', ARGV[3])
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], due, ARGV[1])
return 1
"""

# KEYS: webhook, due, delivered   ARGV: job_name, delay, error
# A delivered webhook stays delivered: only its purge time moves.
_RESCHEDULE_WEBHOOK = (
    _NOW
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local due = fmt(now() + tonumber(ARGV[2]))
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'next_attempt_at', due, 'owner', '', 'lease_until', '0', 'last_error', ARGV[3])
if (redis.call('HGET', KEYS[1], 'delivered') or '0') ~= '0' then
  redis.call('ZADD', KEYS[3], due, ARGV[1])
else
  redis.call('ZADD', KEYS[2], due, ARGV[1])
end
return 1
"""
)


# KEYS: last-id, actions, by-id, by-time   ARGV: at, body (JSON, without its id)
_RECORD_ACTION = """
local id = redis.call('INCR', KEYS[1])
redis.call('HSET', KEYS[2], id, ARGV[2])
redis.call('ZADD', KEYS[3], id, id)
redis.call('ZADD', KEYS[4], ARGV[1], id)
return id
"""


class RedisRunStore:
    """A :class:`~webapp.runstore.RunStore` in Redis, shared by every instance that uses the same URL."""

    def __init__(self, url: str, *, retention_seconds: float = DEFAULT_RETENTION_SECONDS) -> None:
        self._redis = connect(url)
        self._prefix = KEY_PREFIX
        self._ttl = max(1, int(retention_seconds))
        self._save = self._redis.register_script(_SAVE)
        self._claim_run = self._redis.register_script(_CLAIM_RUN)
        self._claim_admission = self._redis.register_script(_CLAIM_ADMISSION)
        self._admit_run = self._redis.register_script(_ADMIT_RUN)
        self._return_to_line = self._redis.register_script(_RETURN_TO_LINE)
        self._release_runs = self._redis.register_script(_RELEASE_RUNS)
        self._release_key = self._redis.register_script(_RELEASE_IDEMPOTENCY_KEY)
        self._replace_key = self._redis.register_script(_REPLACE_IDEMPOTENCY_KEY)
        self._record_comparison = self._redis.register_script(_RECORD_COMPARISON)
        self._claim_log_tail = self._redis.register_script(_CLAIM_LOG_TAIL)
        self._save_log_tail = self._redis.register_script(_SAVE_LOG_TAIL)
        self._enqueue_webhook = self._redis.register_script(_ENQUEUE_WEBHOOK)
        self._claim_webhooks = self._redis.register_script(_CLAIM_WEBHOOKS)
        self._complete_webhook = self._redis.register_script(_COMPLETE_WEBHOOK)
        self._reschedule_webhook = self._redis.register_script(_RESCHEDULE_WEBHOOK)
        self._record_action = self._redis.register_script(_RECORD_ACTION)

    # -- keys ------------------------------------------------------------------

    def _run_key(self, job_name: str) -> str:
        return f"{self._prefix}run:{job_name}"

    @property
    def _by_created(self) -> str:
        return f"{self._prefix}runs:by-created"

    @property
    def _unfinished(self) -> str:
        return f"{self._prefix}runs:unfinished"

    def _unfinished_of(self, client: str) -> str:
        return f"{self._prefix}runs:unfinished:client:{client}"

    @property
    def _waiting(self) -> str:
        return f"{self._prefix}runs:waiting"

    @property
    def _finished(self) -> str:
        return f"{self._prefix}runs:finished"

    def _owner_key(self, owner: str) -> str:
        return f"{self._prefix}runs:owner:{owner}"

    def _idempotency_key(self, key: str) -> str:
        return f"{self._prefix}idempotency:{key}"

    @property
    def _idempotency_index(self) -> str:
        return f"{self._prefix}idempotency-keys"

    def _comparison_key(self, pipeline_run_id: str) -> str:
        return f"{self._prefix}comparison:{pipeline_run_id}"

    @property
    def _comparison_index(self) -> str:
        return f"{self._prefix}comparisons"

    def _webhook_key(self, job_name: str) -> str:
        return f"{self._prefix}webhook:{job_name}"

    @property
    def _webhooks_due(self) -> str:
        return f"{self._prefix}webhooks:due"

    @property
    def _webhooks_delivered(self) -> str:
        return f"{self._prefix}webhooks:delivered"

    def _audit_key(self, name: str) -> str:
        return f"{self._prefix}audit:{name}"

    @contextmanager
    def _reaching_redis(self) -> Iterator[None]:
        """Turn the client's errors into ours: the API answers 503, nothing half-done is claimed."""
        try:
            yield
        except RedisError as error:
            raise RunStoreUnavailable(describe_redis_error(error)) from error

    def _bodies(self, job_names: list[str]) -> list[JobStatus]:
        if not job_names:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for name in job_names:
            pipe.hget(self._run_key(name), "body")
        return [JobStatus.from_json(body) for body in pipe.execute() if body]

    # -- runs ------------------------------------------------------------------

    def save(self, status: JobStatus, *, manifest: dict[str, Any] | None = None, client: str | None = None) -> bool:
        """Insert or update a run; an older ``seq`` never overwrites a newer one, a terminal run is final (but for its
        links to its reruns: the same outcome with a newer ``seq``)."""
        with self._reaching_redis():
            taken = self._save(
                keys=[
                    self._run_key(status.job_name),
                    self._by_created,
                    self._unfinished,
                    self._finished,
                    self._waiting,
                ],
                args=[
                    status.job_name,
                    status.seq,
                    int(status.terminal),
                    status.mode,
                    repr(status.created_at.timestamp()),
                    repr(status.updated_at.timestamp()),
                    status.stored_json,
                    json.dumps(manifest) if manifest is not None else "",
                    client or "",
                    self._unfinished_of(""),
                    int(awaits_admission(status)),
                ],
            )
        return bool(taken == 1)

    def get(self, job_name: str) -> JobStatus | None:
        with self._reaching_redis():
            body = self._redis.hget(self._run_key(job_name), "body")
        return JobStatus.from_json(body) if body else None

    def recent(self, limit: int, *, statuses: Collection[Phase] = (), specs: Collection[str] = ()) -> list[JobStatus]:
        """Newest first; filtered over a bounded scan: the newest :data:`RECENT_SCAN_LIMIT` runs at most.

        Runs are indexed by creation time only, so a filter reads them page by page, newest first, until
        ``limit`` match or the scan limit is reached.
        """
        if limit <= 0:
            return []
        wanted_statuses = frozenset(Phase(s) for s in statuses)
        wanted_specs = frozenset(specs)
        with self._reaching_redis():
            if not wanted_statuses and not wanted_specs:
                return self._bodies(_strings(self._redis.zrevrange(self._by_created, 0, limit - 1)))
            found: list[JobStatus] = []
            page = max(limit, 200)
            for start in range(0, RECENT_SCAN_LIMIT, page):
                names = _strings(
                    self._redis.zrevrange(self._by_created, start, min(start + page, RECENT_SCAN_LIMIT) - 1)
                )
                found.extend(
                    run
                    for run in self._bodies(names)
                    if (not wanted_statuses or run.status in wanted_statuses)
                    and (not wanted_specs or run.spec in wanted_specs)
                )
                if len(found) >= limit or len(names) < page:
                    break
            return found[:limit]

    def unfinished(self, *, mode: str | None = None) -> list[JobStatus]:
        """Runs handed to their executor and not yet terminal, oldest first (optionally of one mode)."""
        with self._reaching_redis():
            pipe = self._redis.pipeline(transaction=True)
            pipe.zrange(self._unfinished, 0, -1)
            pipe.zrange(self._waiting, 0, -1)
            unfinished, waiting = pipe.execute()
            waits = set(_strings(waiting))
            runs = self._bodies([name for name in _strings(unfinished) if name not in waits])
        return [run for run in runs if not run.terminal and (mode is None or run.mode == mode)]

    def waiting(self) -> list[JobStatus]:
        """Runs waiting for admission, oldest first."""
        with self._reaching_redis():
            runs = self._bodies(_strings(self._redis.zrange(self._waiting, 0, -1)))
        return [run for run in runs if not run.terminal]

    def count_waiting(self) -> int:
        with self._reaching_redis():
            return int(self._redis.zcard(self._waiting))

    def claim_admission(self, job_name: str, *, owner: str, lease_seconds: float) -> bool:
        """Take charge of admitting a waiting run unless another live admitter holds it (Redis's clock)."""
        with self._reaching_redis():
            claimed = self._claim_admission(keys=[self._run_key(job_name)], args=[owner, lease_seconds])
        return bool(claimed)

    def admit_run(self, job_name: str) -> bool:
        """The run no longer waits for admission (one script: only one caller is told ``True``)."""
        with self._reaching_redis():
            admitted = self._admit_run(keys=[self._run_key(job_name), self._waiting], args=[job_name])
        return bool(admitted)

    def return_to_line(self, job_name: str) -> bool:
        """The run waits for admission again, claimed by nobody (one script)."""
        with self._reaching_redis():
            returned = self._return_to_line(keys=[self._run_key(job_name), self._waiting], args=[job_name])
        return bool(returned)

    def count_unfinished(self, *, client: str | None = None) -> int:
        with self._reaching_redis():
            return int(self._redis.zcard(self._unfinished if client is None else self._unfinished_of(client)))

    def manifest(self, job_name: str) -> dict[str, Any] | None:
        with self._reaching_redis():
            text = self._redis.hget(self._run_key(job_name), "manifest")
        if not text:
            return None
        manifest: dict[str, Any] = json.loads(text)
        return manifest

    def delete(self, job_name: str) -> None:
        with self._reaching_redis():
            client = self._redis.hget(self._run_key(job_name), "client")
            pipe = self._redis.pipeline(transaction=True)
            pipe.delete(self._run_key(job_name))
            for index in (self._by_created, self._unfinished, self._finished, self._waiting):
                pipe.zrem(index, job_name)
            if client:
                pipe.zrem(self._unfinished_of(str(client)), job_name)
            pipe.execute()

    # -- idempotency keys ------------------------------------------------------

    def claim_idempotency_key(
        self, key: str, *, fingerprint: str, job_name: str, replacing: str | None = None
    ) -> IdempotencyClaim:
        """Atomically bind ``key`` to ``job_name`` unless it is already bound (``SET NX``, across instances).

        ``replacing``: take the key if it is still bound to that job (compare and set, in Redis).
        """
        now = time.time()
        value = json.dumps({"job_name": job_name, "fingerprint": fingerprint, "created_at": now})
        redis_key = self._idempotency_key(key)
        with self._reaching_redis():
            if self._redis.set(redis_key, value, nx=True, ex=self._ttl) or (
                replacing is not None and self._replace_key(keys=[redis_key], args=[replacing, value, self._ttl])
            ):
                self._redis.zadd(self._idempotency_index, {key: now})
                return IdempotencyClaim(won=True, job_name=job_name, fingerprint=fingerprint, claimed_at=now)
            held = self._redis.get(redis_key)
        if held is None:  # released or expired between our SET and GET: try once more
            return self.claim_idempotency_key(key, fingerprint=fingerprint, job_name=job_name)
        bound = json.loads(held)
        return IdempotencyClaim(
            won=False,
            job_name=bound["job_name"],
            fingerprint=bound["fingerprint"],
            claimed_at=float(bound.get("created_at", now)),
        )

    def release_idempotency_key(self, key: str, *, job_name: str) -> None:
        """Undo a claim whose launch failed, only if the key is still bound to ``job_name``."""
        with self._reaching_redis():
            if self._release_key(keys=[self._idempotency_key(key)], args=[job_name]):
                self._redis.zrem(self._idempotency_index, key)

    # -- leases ----------------------------------------------------------------

    def claim_run(self, job_name: str, *, owner: str, lease_seconds: float, replacing: str | None = None) -> bool:
        """Take charge of executing a run unless another live owner holds its lease (or ``replacing``, dead, does)."""
        with self._reaching_redis():
            claimed = self._claim_run(
                keys=[self._run_key(job_name), self._owner_key(owner)],
                args=[job_name, owner, lease_seconds, self._ttl, replacing or ""],
            )
        return bool(claimed)

    def release_runs(self, *, owner: str) -> None:
        """Give up every lease ``owner`` holds (graceful shutdown)."""
        with self._reaching_redis():
            self._release_runs(keys=[self._owner_key(owner)], args=[self._run_key(""), owner])

    # -- retention -------------------------------------------------------------

    def purge(self, *, before: datetime) -> int:
        """Forget finished runs last updated before ``before``; return how many.

        Idempotency keys, comparisons and delivered webhooks older than
        ``before`` go too (idempotency keys also expire by themselves).
        """
        cutoff = before.timestamp()
        with self._reaching_redis():
            purged = self._purge_older(
                self._finished, cutoff, self._run_key, also_from=(self._by_created, self._unfinished)
            )
            self._purge_older(self._idempotency_index, cutoff, self._idempotency_key)
            self._purge_older(self._comparison_index, cutoff, self._comparison_key)
            self._purge_older(self._webhooks_delivered, cutoff, self._webhook_key)
            self._purge_actions(cutoff)
        return purged

    def _purge_actions(self, cutoff: float) -> None:
        by_time = self._audit_key("by-time")
        while ids := _strings(self._redis.zrangebyscore(by_time, "-inf", f"({cutoff!r}", start=0, num=_PURGE_BATCH)):
            pipe = self._redis.pipeline(transaction=True)
            pipe.hdel(self._audit_key("actions"), *ids)
            pipe.zrem(self._audit_key("by-id"), *ids)
            pipe.zrem(by_time, *ids)
            pipe.execute()

    def _purge_older(
        self, index: str, cutoff: float, key_of: Callable[[str], str], *, also_from: tuple[str, ...] = ()
    ) -> int:
        """Delete the key of every member of ``index`` scored below ``cutoff``; return how many existed."""
        deleted = 0
        while members := _strings(self._redis.zrangebyscore(index, "-inf", f"({cutoff!r}", start=0, num=_PURGE_BATCH)):
            pipe = self._redis.pipeline(transaction=True)
            pipe.delete(*(key_of(member) for member in members))
            for other in (index, *also_from):
                pipe.zrem(other, *members)
            deleted += int(pipe.execute()[0])
        return deleted

    # -- log tails -------------------------------------------------------------

    def claim_log_tail(self, job_name: str, *, lease_seconds: float) -> bool:
        """Take charge of saving the run's tail (a lease in its hash, on the Redis server's clock)."""
        with self._reaching_redis():
            claimed = self._claim_log_tail(keys=[self._run_key(job_name)], args=[lease_seconds])
        return bool(claimed)

    def save_log_tail(self, job_name: str, text: str) -> bool:
        """Keep the tail in the run's hash, so it is purged and deleted with the run; first writer wins."""
        with self._reaching_redis():
            saved = self._save_log_tail(keys=[self._run_key(job_name)], args=[text])
        return bool(saved)

    def log_tail(self, job_name: str) -> str | None:
        with self._reaching_redis():
            text = self._redis.hget(self._run_key(job_name), "log_tail")
        return None if text is None else str(text)

    # -- dual-mode comparisons -------------------------------------------------

    def record_comparison(self, comparison: Comparison) -> bool:
        """Record a dual-mode comparison once per pipeline run; ``False`` if one was already recorded."""
        with self._reaching_redis():
            recorded = self._record_comparison(
                keys=[self._comparison_key(comparison.pipeline_run_id), self._comparison_index],
                args=[
                    comparison.pipeline_run_id,
                    repr(comparison.compared_at.timestamp()),
                    json.dumps(comparison.to_dict()),
                ],
            )
        return bool(recorded)

    def comparisons(self) -> list[Comparison]:
        """Every comparison still within retention, newest first."""
        with self._reaching_redis():
            run_ids = _strings(self._redis.zrevrange(self._comparison_index, 0, -1))
            bodies = self._redis.mget([self._comparison_key(run_id) for run_id in run_ids]) if run_ids else []
        return [Comparison.from_dict(json.loads(body)) for body in bodies if body]

    # -- the webhook outbox ----------------------------------------------------

    def enqueue_webhook(self, job_name: str, body: str) -> bool:
        """Put a run's completion webhook in the outbox once; ``False`` if it is already there."""
        with self._reaching_redis():
            queued = self._enqueue_webhook(
                keys=[self._webhook_key(job_name), self._webhooks_due], args=[job_name, body]
            )
        return bool(queued)

    def claim_webhooks(self, *, owner: str, lease_seconds: float, limit: int) -> list[PendingWebhook]:
        """Due webhooks that no other live sender holds, leased to ``owner`` (one script: never two owners)."""
        with self._reaching_redis():
            flat = self._claim_webhooks(
                keys=[self._webhooks_due], args=[self._webhook_key(""), owner, lease_seconds, limit]
            )
        return [
            PendingWebhook(job_name=flat[i], body=flat[i + 1], attempts=int(flat[i + 2]))
            for i in range(0, len(flat), 3)
        ]

    def complete_webhook(self, job_name: str, *, gave_up: str | None = None) -> None:
        """Delivered, or given up: never claimed again, and kept (until purged) so it is never re-enqueued."""
        done, error = (DELIVERED, "") if gave_up is None else (GIVEN_UP, gave_up[:500] or "gave up")
        with self._reaching_redis():
            self._complete_webhook(
                keys=[self._webhook_key(job_name), self._webhooks_due, self._webhooks_delivered],
                args=[job_name, done, error],
            )

    def reschedule_webhook(self, job_name: str, *, delay: float, error: str) -> None:
        """Delivery failed: try again after ``delay`` seconds."""
        with self._reaching_redis():
            self._reschedule_webhook(
                keys=[self._webhook_key(job_name), self._webhooks_due, self._webhooks_delivered],
                args=[job_name, delay, error[:500]],
            )

    def webhook_delivery(self, job_name: str) -> WebhookDelivery | None:
        """Where the run's webhook stands, from its hash; ``None`` when it has none."""
        with self._reaching_redis():
            delivered, attempts, last_error = self._redis.hmget(
                self._webhook_key(job_name), ["delivered", "attempts", "last_error"]
            )
        if delivered is None:
            return None
        return WebhookDelivery.of_row(
            done=int(delivered or 0), attempts=int(attempts or 0), last_error=str(last_error or "") or None
        )

    # -- the audit trail -------------------------------------------------------

    def record_action(self, action: AdminAction) -> int:
        """Keep ``action`` under the next id (one script: ids increase across instances)."""
        body = action.to_dict()
        del body["id"]
        with self._reaching_redis():
            recorded = self._record_action(
                keys=[
                    self._audit_key("last-id"),
                    self._audit_key("actions"),
                    self._audit_key("by-id"),
                    self._audit_key("by-time"),
                ],
                args=[repr(action.at.timestamp()), json.dumps(body)],
            )
        return int(recorded)

    def actions(self, limit: int, before: int | None = None) -> list[AdminAction]:
        """At most ``limit`` actions, newest first (before the action ``before``, when given)."""
        if limit <= 0:
            return []
        newest = f"({before}" if before is not None else "+inf"
        with self._reaching_redis():
            ids = _strings(self._redis.zrevrangebyscore(self._audit_key("by-id"), newest, "-inf", start=0, num=limit))
            bodies = self._redis.hmget(self._audit_key("actions"), ids) if ids else []
        return [
            AdminAction.from_dict({**json.loads(body), "id": int(id_)})
            for id_, body in zip(ids, bodies, strict=True)
            if body
        ]

    # -- connection ------------------------------------------------------------

    def ping(self) -> None:
        """Raise :class:`RunStoreUnavailable` if Redis cannot be reached."""
        with self._reaching_redis():
            self._redis.ping()

    def close(self) -> None:
        self._redis.close()
