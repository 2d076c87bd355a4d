/*
 * jobpulse donation page: posts the form as JSON, then follows the launched
 * task's status live.
 *
 * Fallback policy (see DESIGN.md, "The page"):
 *   - Transports are tried in order WebSocket -> Server-Sent Events -> polling.
 *   - A transport that delivers no message within 3 s, or fails before its
 *     first message, is abandoned at once for the next one.
 *   - One that drops mid-stream (after a message, before a terminal status)
 *     is retried after a random pause within a growing window (up to 1 s,
 *     2 s, 4 s: "full jitter"); after 3 failed tries, the next one. A server
 *     going away (WebSocket close 1001, or an event stream that ends without
 *     `event: end`) is retried after 0.5 to 2.5 s, at random: the clients of
 *     a stopping server reach the one that takes them over spread out, not
 *     all in one instant.
 *   - When the chain runs out (the server is unreachable), it starts again
 *     from the top after a pause (2 s, doubling to 10 s; each between half
 *     and the whole of it, at random).
 *   - ?transport=ws|sse|poll forces a single transport, retried forever.
 *   - Every message is the whole status; one with a lower seq than the one
 *     shown is ignored. A terminal status stops everything; so does a new
 *     donation.
 */
(() => {
  'use strict';

  const FIELDS = ['amount', 'currency', 'donor_name', 'donor_email', 'message'];
  const TERMINAL = new Set(['Succeeded', 'Failed', 'Cancelled']);
  const TRANSPORT_ORDER = ['ws', 'sse', 'poll'];
  const TRANSPORT_LABELS = { ws: 'WebSocket', sse: 'Server-Sent Events', poll: 'Polling' };
  const OPEN_TIMEOUT_MS = 3000;
  const RETRY_WINDOW_MS = 1000; // the first retry's window; doubles per failed try
  const RETRIES_BEFORE_NEXT = 3;
  const GOING_AWAY_WINDOW_MS = [500, 2500]; // as the server's per-stream SSE retry: (webapp/wire.py)
  const MAX_RETRY_DELAY_MS = 10000;
  const POLL_MIN_MS = 2000;
  const POLL_MAX_MS = 10000;
  const POLL_BACKOFF = 1.5;
  const SUBMIT_TIMEOUT_MS = 30000;

  const $ = (id) => document.getElementById(id);
  const words = window.jobpulseWords; // static/plain-words.js: reasons, place in line, durations

  // What the page currently shows; exposed read-only for debugging.
  const state = {
    status: null, // the last status object applied
    transport: 'none', // ws | sse | poll | none
    follower: null, // the TransportChain following the current job
  };
  window.jobpulse = {
    get status() { return state.status; },
    get transport() { return state.transport; },
  };

  // ---------------------------------------------------------------- form --

  let idempotencyKey = newIdempotencyKey();
  let keySentWith = null; // the fill the key went out with: a retry of it keeps the key, an edited fill is new
  let submitting = false;

  function newIdempotencyKey() {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  }

  function readForm() {
    const value = (id) => $(id).value.trim();
    const payload = {
      amount: value('amount'),
      currency: $('currency').value,
      donor_name: value('donor_name'),
      donor_email: value('donor_email'),
    };
    const message = value('message');
    if (message) payload.message = message;
    return payload;
  }

  // Only what is trivially right; the server's 400 is the source of truth.
  function checkForm(payload) {
    const errors = {};
    if (!payload.amount) errors.amount = ['Enter an amount.'];
    if (!payload.donor_name) errors.donor_name = ['Enter your name.'];
    if (!payload.donor_email) errors.donor_email = ['Enter your email address.'];
    return errors;
  }

  async function submitDonation(event) {
    event.preventDefault();
    if (submitting) return;
    clearErrors();

    const payload = readForm();
    const clientErrors = checkForm(payload);
    if (Object.keys(clientErrors).length) {
      showFieldErrors(clientErrors);
      return;
    }

    const fill = JSON.stringify(payload);
    if (keySentWith !== null && keySentWith !== fill) idempotencyKey = newIdempotencyKey();
    keySentWith = fill;

    setSubmitting(true);
    try {
      const response = await postDonation(payload, idempotencyKey);
      const body = await readJson(response);
      if ((response.status === 202 || response.status === 200) && body && body.job_name) {
        idempotencyKey = newIdempotencyKey(); // this fill launched its task
        keySentWith = null;
        followJob(body);
      } else {
        showResponseError(response, body);
      }
    } catch (err) {
      showFormError(err && err.name === 'AbortError'
        ? 'The server took too long to answer. Please try again.'
        : 'Could not reach the server. Check your connection and try again.');
    } finally {
      setSubmitting(false);
    }
  }

  async function postDonation(payload, key) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), SUBMIT_TIMEOUT_MS);
    try {
      return await fetch('/api/donations', {
        method: 'POST',
        headers: {
          'Content-Type': 'application/json',
          Accept: 'application/json',
          'Idempotency-Key': key,
        },
        body: JSON.stringify(payload),
        signal: controller.signal,
      });
    } finally {
      clearTimeout(timer);
    }
  }

  async function readJson(response) {
    try {
      return await response.json();
    } catch {
      return null;
    }
  }

  function setSubmitting(busy) {
    submitting = busy;
    const button = $('donate');
    button.disabled = busy;
    button.textContent = busy ? 'Sending…' : 'Donate';
    $('donation-form').setAttribute('aria-busy', String(busy));
  }

  function showResponseError(response, body) {
    const fields = body && body.fields;
    if (response.status === 400 && fields && typeof fields === 'object' && Object.keys(fields).length) {
      showFieldErrors(fields);
      return;
    }
    if (response.status === 429) {
      showFormError(`Too many donations from your connection. ${retryAfterText(response.headers.get('Retry-After'))}`);
    } else if (response.status === 503) {
      showFormError('Donations are temporarily unavailable. Please try again in a moment.');
    } else if (body && typeof body.message === 'string' && body.message) {
      showFormError(body.message);
    } else {
      showFormError(`Something went wrong (HTTP ${response.status}). Please try again.`);
    }
  }

  function retryAfterText(header) {
    if (!header) return 'Please try again later.';
    let seconds = Number(header);
    if (!Number.isFinite(seconds)) {
      const at = Date.parse(header);
      seconds = Number.isNaN(at) ? NaN : (at - Date.now()) / 1000;
    }
    if (!Number.isFinite(seconds)) return 'Please try again later.';
    seconds = Math.max(1, Math.ceil(seconds));
    if (seconds < 120) return `Please try again in ${seconds} second${seconds === 1 ? '' : 's'}.`;
    return `Please try again in ${Math.ceil(seconds / 60)} minutes.`;
  }

  // Marshmallow-style messages: a string, a list, or nested objects of them.
  function flattenMessages(value) {
    if (value == null) return [];
    if (typeof value === 'string') return [value];
    if (Array.isArray(value)) return value.flatMap(flattenMessages);
    if (typeof value === 'object') return Object.values(value).flatMap(flattenMessages);
    return [String(value)];
  }

  function showFieldErrors(fields) {
    let firstInvalid = null;
    const leftover = [];
    for (const [name, value] of Object.entries(fields)) {
      const messages = flattenMessages(value);
      if (FIELDS.includes(name)) {
        setFieldError(name, messages.join(' '));
      } else {
        leftover.push(...messages);
      }
    }
    for (const name of FIELDS) { // focus in page order, not in answer order
      if ($(name).getAttribute('aria-invalid') === 'true') {
        firstInvalid = $(name);
        break;
      }
    }
    if (leftover.length) showFormError(leftover.join(' '));
    if (firstInvalid) firstInvalid.focus();
  }

  function setFieldError(name, text) {
    const field = $(name);
    const slot = $(`${name}-error`);
    slot.textContent = text;
    slot.hidden = false;
    field.setAttribute('aria-invalid', 'true');
    setDescribedBy(field, slot.id, true);
  }

  function clearFieldError(name) {
    const field = $(name);
    const slot = $(`${name}-error`);
    slot.textContent = '';
    slot.hidden = true;
    field.removeAttribute('aria-invalid');
    setDescribedBy(field, slot.id, false);
  }

  function setDescribedBy(field, id, present) {
    const ids = (field.getAttribute('aria-describedby') || '').split(/\s+/).filter((x) => x && x !== id);
    if (present) ids.unshift(id); // the error is read before the hint
    if (ids.length) field.setAttribute('aria-describedby', ids.join(' '));
    else field.removeAttribute('aria-describedby');
  }

  function showFormError(text) {
    const slot = $('form-error');
    slot.textContent = text;
    slot.hidden = false;
    slot.scrollIntoView({ block: 'nearest' });
  }

  function clearErrors() {
    FIELDS.forEach(clearFieldError);
    const slot = $('form-error');
    slot.textContent = '';
    slot.hidden = true;
  }

  // -------------------------------------------------------- status panel --

  function followJob(launch) {
    if (state.follower) state.follower.stop();
    state.follower = null;
    state.status = null;
    setTransport('none', 'Connecting…');
    applyStatus(launch);

    const panel = $('status-panel');
    const reduceMotion = window.matchMedia('(prefers-reduced-motion: reduce)').matches;
    panel.scrollIntoView({ block: 'nearest', behavior: reduceMotion ? 'auto' : 'smooth' });

    if (launch.terminal || TERMINAL.has(launch.status)) {
      setTransport('none', 'Not needed (finished)', 'closed');
      return;
    }
    state.follower = new TransportChain(launch.job_name, launch.links || defaultLinks(launch.job_name), forcedTransport());
    state.follower.start();
  }

  // Apply one whole-status message; idempotent, ignores stale ones.
  function applyStatus(status) {
    if (!status || typeof status !== 'object' || !status.job_name) return false;
    const shown = state.status;
    if (shown) {
      if (status.job_name !== shown.job_name) return false;
      if (shown.terminal && !status.terminal) return false; // a finished task stays finished
      // seq grows per change on one server; another instance may count differently, so an
      // outcome is taken whatever its seq, and otherwise an older seq is ignored
      const stale = typeof status.seq === 'number' && typeof shown.seq === 'number' && status.seq < shown.seq;
      if (stale && !status.terminal) return false;
    }
    state.status = status;
    renderStatus(status);
    return true;
  }

  let shownStatusClass = null; // e.g. status-running, on #status-panel

  function renderStatus(status) {
    const panel = $('status-panel');
    const name = String(status.status || 'Unknown');
    const terminal = Boolean(status.terminal) || TERMINAL.has(name);

    panel.hidden = false;
    panel.dataset.status = name;
    const statusClass = `status-${name.toLowerCase()}`;
    if (shownStatusClass && shownStatusClass !== statusClass) panel.classList.remove(shownStatusClass);
    panel.classList.add(statusClass);
    shownStatusClass = statusClass;
    panel.classList.toggle('is-terminal', terminal);

    $('job-name').textContent = status.job_name;
    const badge = $('job-status');
    badge.textContent = name;
    badge.dataset.status = name;

    renderReason(status);
    renderProgress(status, terminal);
    renderElapsed();
    renderTimeline(status.history);
  }

  // The donor reads a plain sentence (and their place in line); the raw reason and message
  // stay for support, folded away in a <details> and in data-reason.
  function renderReason(status) {
    const explanation = words.explain(status);
    const raw = words.rawReason(status);
    const slot = $('job-reason');
    if (status.reason) slot.dataset.reason = String(status.reason);
    else delete slot.dataset.reason;
    setText($('job-explanation'), explanation);
    setText($('job-raw-reason'), raw);
    $('job-support').hidden = !raw;
    $('job-reason-row').hidden = !explanation;
  }

  // A real progress bar when the task reports progress: determinate with a total, else
  // indeterminate. Its row is laid out (invisible) from Running on, so the first report
  // moves nothing; only a change of step text is announced (the count is aria-live=off).
  function renderProgress(status, terminal) {
    const progress = status.progress && typeof status.progress === 'object' ? status.progress : null;
    const row = $('job-progress-row');
    row.hidden = !progress && (terminal || status.status !== 'Running');
    row.classList.toggle('is-reserved', !progress);
    if (!progress) return;

    const bar = $('job-progress');
    const done = Math.max(0, Math.floor(Number(progress.done) || 0));
    const total = Number.isInteger(progress.total) && progress.total > 0 ? progress.total : null;
    const text = progress.text == null ? '' : String(progress.text).trim();
    let count;
    if (total !== null) {
      bar.max = total;
      bar.value = Math.min(done, total);
      count = `${Math.min(done, total)} of ${total}`;
    } else {
      bar.removeAttribute('value'); // indeterminate
      bar.removeAttribute('max');
      count = done ? `${done} done` : '';
    }
    bar.dataset.state = total === null ? 'indeterminate' : 'determinate';
    bar.setAttribute('aria-valuetext', [count, text].filter(Boolean).join(': ') || 'In progress');
    setText($('progress-count'), count);
    setText($('progress-text'), text);
  }

  let elapsedTimer = null; // ticks the elapsed time once a second while not terminal

  function renderElapsed() {
    const status = state.status;
    const shown = status ? words.elapsed(status, Boolean(status.terminal) || TERMINAL.has(status.status), Date.now()) : null;
    const row = $('job-elapsed-row');
    row.hidden = !shown;
    const slot = $('job-elapsed');
    if (shown) {
      setText(slot, shown.text);
      slot.dataset.seconds = String(Math.floor(shown.seconds));
      slot.dataset.ticking = String(shown.ticking);
    }
    const ticking = Boolean(shown && shown.ticking);
    if (ticking && elapsedTimer === null) elapsedTimer = setInterval(renderElapsed, 1000);
    if (!ticking && elapsedTimer !== null) {
      clearInterval(elapsedTimer);
      elapsedTimer = null;
    }
  }

  // Write text only when it changes: a live region announces every write.
  function setText(element, text) {
    if (element.textContent !== text) element.textContent = text;
  }

  function renderTimeline(history) {
    const list = $('timeline');
    const entries = Array.isArray(history) ? history : [];
    const items = entries.map((entry, index) => {
      const li = document.createElement('li');
      const label = document.createElement('span');
      label.className = 'timeline-status';
      label.textContent = String(entry.status);
      li.dataset.status = String(entry.status);
      li.append(label);
      if (entry.at) {
        const time = document.createElement('time');
        time.dateTime = entry.at;
        time.textContent = formatTime(entry.at);
        li.append(' ', time);
      }
      if (index === entries.length - 1) li.setAttribute('aria-current', 'step');
      return li;
    });
    list.replaceChildren(...items);
  }

  function formatTime(value) {
    const date = new Date(value);
    if (Number.isNaN(date.getTime())) return String(value);
    return date.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
  }

  // kind: ws | sse | poll | none; text: what #transport says.
  function setTransport(kind, text, phase) {
    state.transport = kind;
    document.body.dataset.transport = kind;
    document.body.dataset.transportState = phase || (kind === 'none' ? 'connecting' : 'live');
    $('transport').textContent = text || TRANSPORT_LABELS[kind] || kind;
  }

  // The URLs DESIGN.md fixes, in case a launch answer carries no links.
  function defaultLinks(jobName) {
    const name = encodeURIComponent(jobName);
    return {
      status: `/api/task-status?job_name=${name}`,
      events: `/sse/task-status/${name}`,
      websocket: `/ws/task-status/${name}`,
    };
  }

  function forcedTransport() {
    const wanted = new URLSearchParams(location.search).get('transport');
    return TRANSPORT_ORDER.includes(wanted) ? wanted : null;
  }

  // ---------------------------------------------------------- transports --
  //
  // Each opener takes the job's links and handlers {onStatus, onClose,
  // onGone} and returns {close()}. onClose(reason) reports any end that the
  // opener did not ask for; the chain decides what happens next.

  function openWebSocket(links, handlers) {
    const scheme = location.protocol === 'https:' ? 'wss://' : 'ws://';
    let socket;
    try {
      socket = new WebSocket(scheme + location.host + links.websocket);
    } catch (err) {
      const timer = setTimeout(() => handlers.onClose('websocket unavailable'), 0);
      return { close() { clearTimeout(timer); } };
    }
    let closing = false;
    socket.onmessage = (event) => {
      const message = parseJson(event.data);
      if (!message) return;
      if (message.type === 'status') handlers.onStatus(message);
      // {"type":"error"} is followed by a 44xx close, handled below.
    };
    socket.onclose = (event) => {
      if (!closing) handlers.onClose(`websocket closed (${event.code})`, event.code === 1001);
    };
    return {
      close() {
        closing = true;
        socket.onmessage = null;
        socket.close(1000);
      },
    };
  }

  function openEventSource(links, handlers) {
    const source = new EventSource(links.events);
    let closed = false;
    let heard = false; // a stream that delivered a status and then ends without `event: end`: the server going away
    const shut = () => {
      closed = true;
      source.close();
    };
    source.addEventListener('status', (event) => {
      const status = parseJson(event.data);
      if (status && !closed) {
        heard = true;
        handlers.onStatus(status);
      }
    });
    source.addEventListener('end', () => {
      if (closed) return;
      shut();
      handlers.onClose('stream ended');
    });
    // EventSource would reconnect by itself; we apply our own policy.
    source.onerror = () => {
      if (closed) return;
      shut();
      handlers.onClose('event stream error', heard);
    };
    return { close: shut };
  }

  function startPolling(links, handlers) {
    let stopped = false;
    let timer = null;
    let controller = null;
    let delay = POLL_MIN_MS;
    let lastSeq = null;

    async function poll() {
      controller = new AbortController();
      let response;
      let body;
      try {
        response = await fetch(links.status, {
          cache: 'no-cache', // revalidate with the ETag: 304 costs little
          headers: { Accept: 'application/json' },
          signal: controller.signal,
        });
        body = response.ok ? await response.json() : null;
      } catch (err) {
        if (!stopped) handlers.onClose('poll failed');
        return;
      }
      if (stopped) return;
      if (response.status === 404 || response.status === 400) {
        handlers.onGone();
        return;
      }
      if (!response.ok || !body) {
        handlers.onClose(`poll answered ${response.status}`);
        return;
      }
      if (body.seq === lastSeq) {
        delay = Math.min(delay * POLL_BACKOFF, POLL_MAX_MS);
      } else {
        delay = POLL_MIN_MS;
        lastSeq = body.seq;
      }
      handlers.onStatus(body);
      if (!stopped) timer = setTimeout(poll, delay);
    }

    poll();
    return {
      close() {
        stopped = true;
        clearTimeout(timer);
        if (controller) controller.abort();
      },
    };
  }

  const OPENERS = { ws: openWebSocket, sse: openEventSource, poll: startPolling };

  function parseJson(text) {
    try {
      return JSON.parse(text);
    } catch {
      return null;
    }
  }

  class TransportChain {
    constructor(jobName, links, forced) {
      this.jobName = jobName;
      this.links = links;
      this.order = forced ? [forced] : TRANSPORT_ORDER.filter((kind) => this.hasLink(kind));
      this.forced = Boolean(forced);
      this.index = 0;
      this.tries = 0; // failed reconnects since the last message
      this.cycles = 0; // times the whole chain ran out
      this.hadMessage = false; // the current transport delivered something
      this.connection = null;
      this.timer = null;
      this.stopped = false;
    }

    hasLink(kind) {
      const key = { ws: 'websocket', sse: 'events', poll: 'status' }[kind];
      return Boolean(this.links[key]);
    }

    get kind() {
      return this.order[this.index];
    }

    start() {
      if (!this.order.length) {
        setTransport('none', 'Unavailable', 'closed');
        return;
      }
      this.connect();
    }

    connect() {
      if (this.stopped) return;
      const kind = this.kind;
      let gotMessage = false;
      let done = false;
      const fail = (reason, goingAway = false) => {
        if (done || this.stopped) return;
        done = true;
        clearTimeout(this.timer);
        this.closeConnection();
        this.onFailure(kind, reason, goingAway);
      };
      const handlers = {
        onStatus: (status) => {
          if (done || this.stopped || status.job_name !== this.jobName) return;
          if (!gotMessage) {
            gotMessage = true;
            this.hadMessage = true;
            clearTimeout(this.timer);
            setTransport(kind);
          }
          this.tries = 0;
          this.cycles = 0;
          applyStatus(status);
          if (status.terminal || TERMINAL.has(status.status)) this.finish();
        },
        onClose: fail,
        onGone: () => {
          if (done || this.stopped) return;
          done = true;
          this.stop();
          setTransport('none', 'Unavailable: this task is no longer known', 'closed');
        },
      };
      this.connection = OPENERS[kind](this.links, handlers);
      this.timer = setTimeout(() => fail('no message within 3 s'), OPEN_TIMEOUT_MS);
    }

    onFailure(kind, reason, goingAway) {
      if (console && console.debug) console.debug(`jobpulse: ${kind} failed: ${reason}`);
      const last = this.index >= this.order.length - 1;
      let delay;
      if (this.forced || (this.hadMessage && this.tries < RETRIES_BEFORE_NEXT)) {
        delay = this.retryDelay(this.tries++, goingAway); // dropped mid-stream: retry it
      } else if (!last) {
        this.advance(this.index + 1);
        delay = 0;
      } else {
        this.advance(0); // nothing left: start over after a pause
        const pause = Math.min(2000 * 2 ** this.cycles++, MAX_RETRY_DELAY_MS);
        delay = pause / 2 + Math.random() * (pause / 2);
      }
      const label = delay ? 'Reconnecting…' : 'Connecting…';
      setTransport('none', label, 'reconnecting');
      this.timer = setTimeout(() => this.connect(), delay);
    }

    // Random within the window, so that the clients of one server do not all come back in the same instant.
    retryDelay(tries, goingAway) {
      if (goingAway) {
        const [low, high] = GOING_AWAY_WINDOW_MS;
        return low + Math.random() * (high - low);
      }
      return Math.random() * Math.min(RETRY_WINDOW_MS * 2 ** tries, MAX_RETRY_DELAY_MS);
    }

    advance(index) {
      this.index = index;
      this.tries = 0;
      this.hadMessage = false;
    }

    closeConnection() {
      if (this.connection) this.connection.close();
      this.connection = null;
    }

    // A terminal status: keep showing which transport delivered it.
    finish() {
      const kind = this.kind;
      this.stop();
      setTransport(kind, TRANSPORT_LABELS[kind], 'closed');
    }

    stop() {
      this.stopped = true;
      clearTimeout(this.timer);
      this.closeConnection();
    }
  }

  // ----------------------------------------------------------------- init --

  function init() {
    $('donation-form').addEventListener('submit', submitDonation);
    setTransport('none', 'Not connected', 'idle');
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
