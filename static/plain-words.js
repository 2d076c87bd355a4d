/*
 * jobpulse donation page: the donor's words for a status.
 *
 * The API keeps the raw `reason` for operators (BackoffLimitExceeded,
 * WaitingForSlot, ImagePullBackOff, ...); a donor reads a plain sentence
 * instead. Pure functions, no DOM: app.js shows what they return.
 *
 * The reasons come from the status mapping (webapp/k8s_status.py: Job
 * conditions and pod waiting reasons), the legacy runners
 * (webapp/executors/local.py, http_runner.py, legacy.py), the Events watch
 * (FailedCreate) and the door (Cancelled). A reason not listed here gets a
 * sentence for its status, never the raw word.
 */
(() => {
  'use strict';

  const TRYING_AGAIN = 'Something went wrong on the last try. We will try again in a moment.';
  const SOFTWARE = 'We are having trouble getting the software that prepares your receipt. We keep trying.';
  const SETUP = 'A setup problem on our side is holding it up. We keep trying.';
  const NEEDS_ROOM = 'We are waiting for a free machine to prepare your receipt. This can take a little while when we are busy.';
  const PAUSED = 'Preparing your receipt is paused for now. It continues as soon as it is resumed.';

  // reason -> sentence, or {status -> sentence} when the same reason means different things.
  const SENTENCES = {
    // waiting to start
    WaitingForSlot: 'Other donations are being processed right now. Yours starts as soon as there is room.',
    QueuedByLegacyRunner: 'Your donation is in line and starts shortly.',
    WaitingForRunStore: 'We are waiting until we can safely record your donation before starting. This usually clears up in a moment.',
    Unschedulable: NEEDS_ROOM,
    SchedulingGated: NEEDS_ROOM,
    FailedCreate: 'A limit or rule on our side stops it from starting for now. Our team can see why.',
    FailedScheduling: NEEDS_ROOM,
    ImagePullBackOff: SOFTWARE,
    ErrImagePull: SOFTWARE,
    ErrImageNeverPull: SOFTWARE,
    InvalidImageName: SOFTWARE,
    CreateContainerConfigError: SETUP,
    CreateContainerError: SETUP,
    RunContainerError: SETUP,
    CrashLoopBackOff: 'It stopped unexpectedly and is being restarted.',
    BackOff: TRYING_AGAIN,
    RetryBackoff: TRYING_AGAIN,
    Suspended: PAUSED,
    JobSuspended: PAUSED,
    JobResumed: 'It was paused and carries on now.',
    Interrupted: 'Our server restarted while your receipt was being prepared. It starts again by itself.',
    Resumed: 'Our server restarted; your donation is being picked up again.',
    RunnerUnreachable: 'We cannot reach the service that prepares your receipt right now. We keep trying.',
    RunnerError: {
      Failed: 'It stopped because of a problem on our side.',
      default: 'The service that prepares your receipt is having trouble. We keep trying.',
    },
    // almost done
    SuccessCriteriaMet: 'Every step is done; we are finishing up.',
    CompletionsReached: 'Every step is done.',
    SuccessPolicy: 'Every step is done.',
    FailureTarget: 'Something went wrong; we are stopping the remaining work.',
    // finished without success
    BackoffLimitExceeded: 'We could not prepare your receipt and have stopped trying.',
    DeadlineExceeded: 'Preparing your receipt took longer than allowed, so it was stopped.',
    PodFailurePolicy: 'It stopped because of an error that trying again cannot fix.',
    MaxFailedIndexesExceeded: 'Too many parts of it failed, so it was stopped.',
    FailedIndexes: 'Some parts of it failed.',
    AttemptLost: 'It was interrupted in a way we could not check, so we did not run it again: it never runs twice.',
    TaskLost: 'We lost track of it on our side.',
    TaskFailed: 'We could not prepare your receipt.',
    StartError: 'It could not start because of a problem on our side.',
    Cancelling: 'Our team is cancelling it.',
    Cancelled: 'It was cancelled by our team.',
    Deleted: 'It was stopped before it finished.',
  };

  // For a reason not in SENTENCES (or a message without a reason): what the status itself says.
  const BY_STATUS = {
    Queued: 'Your donation is in line and starts shortly.',
    Pending: 'Your receipt is about to be prepared.',
    Running: 'Your receipt is being prepared.',
    Suspended: PAUSED,
    Succeeded: 'Your receipt is ready.',
    Failed: 'Something went wrong on our side, and we could not prepare your receipt.',
    Cancelled: 'It was stopped before it finished.',
  };
  const UNKNOWN = 'There is a hold-up on our side. It carries on by itself.';

  // The plain sentence for a status's reason; '' when there is nothing to explain.
  function reasonSentence(status) {
    const reason = status.reason == null ? '' : String(status.reason).trim();
    const hasMessage = status.message != null && String(status.message).trim() !== '';
    if (!reason && !hasMessage) return '';
    const known = Object.prototype.hasOwnProperty.call(SENTENCES, reason) ? SENTENCES[reason] : null;
    if (typeof known === 'string') return known;
    if (known) return known[status.status] || known.default;
    return BY_STATUS[status.status] || UNKNOWN;
  }

  // "You are number 2 in line." while Queued with a place; '' otherwise.
  function queueSentence(status) {
    const place = status.queue_position;
    if (status.status !== 'Queued' || !Number.isInteger(place) || place < 1) return '';
    return place === 1 ? 'You are next in line.' : `You are number ${place} in line.`;
  }

  // What the donor reads under "Details": the reason's sentence, then the place in line.
  function explain(status) {
    return [reasonSentence(status), queueSentence(status)].filter(Boolean).join(' ');
  }

  // What support reads: the raw reason and message, e.g. "BackoffLimitExceeded: exit code 3 (...)".
  function rawReason(status) {
    const parts = [status.reason, status.message].filter((x) => x != null && String(x).trim() !== '').map(String);
    if (parts.length === 2 && parts[0] === parts[1]) parts.pop();
    return parts.join(': ');
  }

  // 72 -> "1 min 12 s"; 3725 -> "1 h 2 min"; whole seconds, never negative.
  function duration(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    if (s < 60) return `${s} s`;
    const minutes = Math.floor(s / 60);
    if (minutes < 60) return `${minutes} min ${s % 60} s`;
    return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
  }

  function timeOf(value) {
    if (!value) return NaN;
    const at = Date.parse(value);
    return Number.isNaN(at) ? NaN : at;
  }

  // How long the donor has waited or the task has run, at `now` (ms since the epoch):
  // {text, seconds, ticking}; null without a usable start time.
  function elapsed(status, terminal, now) {
    const started = timeOf(status.started_at);
    const created = timeOf(status.created_at);
    if (terminal) {
      const from = Number.isNaN(started) ? created : started;
      let until = timeOf(status.finished_at);
      if (Number.isNaN(until)) until = timeOf(status.updated_at);
      if (Number.isNaN(from) || Number.isNaN(until)) return null;
      const seconds = Math.max(0, (until - from) / 1000);
      return { text: `Finished in ${duration(seconds)}`, seconds, ticking: false };
    }
    const running = status.status === 'Running';
    const preferred = running ? started : created; // a run from its start, a wait from the donation
    const from = Number.isNaN(preferred) ? (running ? created : started) : preferred;
    if (Number.isNaN(from)) return null;
    const seconds = Math.max(0, (now - from) / 1000);
    return { text: `${running ? 'Running' : 'Waiting'} for ${duration(seconds)}`, seconds, ticking: true };
  }

  const knownReasons = Object.freeze(Object.keys(SENTENCES));

  window.jobpulseWords = Object.freeze({ knownReasons, reasonSentence, queueSentence, explain, rawReason, duration, elapsed });
})();
