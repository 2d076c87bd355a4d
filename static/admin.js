/*
 * jobpulse operator console: recent runs live, one run's details, actions, the audit trail.
 *
 * The token: typed into the login form, kept in sessionStorage (this tab
 * only) and sent as `Authorization: Bearer` on every request; never in a URL,
 * a cookie or localStorage. The WebSocket cannot carry the header, so its
 * first message is {"token": ...}. Any 401 (or WebSocket close 4401) signs
 * out with a message.
 *
 * The list follows /ws/runs, else /sse/runs (read with fetch() so the header
 * goes with it), else polls /api/runs every 2 s, as the donation page does:
 * a transport that fails before its first message, or sends nothing within
 * 3 s, is dropped for the next; one that drops mid-stream is retried after
 * a random pause within a growing window (up to 1 s, 2 s, 4 s, … 10 s: "full
 * jitter"), and after 3 failed tries the next one is used. A server going
 * away (WebSocket close 1001, or the event stream's end) is retried after 0.5
 * to 2.5 s at random, so a stopping server's consoles come back spread out.
 * ?transport=ws|sse|poll forces one. Every message is a whole status with a
 * per-job seq; an older seq is ignored. Changes are applied once per
 * animation frame, and at most MAX_ROWS rows are in the DOM.
 */
(() => {
  'use strict';

  const TOKEN_KEY = 'jobpulse.operatorToken';
  const TERMINAL = new Set(['Succeeded', 'Failed', 'Cancelled']);
  const TRANSPORT_ORDER = ['ws', 'sse', 'poll'];
  const TRANSPORT_LABELS = { ws: 'WebSocket', sse: 'Server-Sent Events', poll: 'Polling', none: 'none' };
  const OPEN_TIMEOUT_MS = 3000;
  const RETRY_WINDOW_MS = 1000; // the first retry's window; doubles per failed try
  const RETRY_MAX_MS = 10000;
  const GOING_AWAY_WINDOW_MS = [500, 2500]; // as the server's per-stream SSE retry: (webapp/wire.py)
  const RETRIES_BEFORE_NEXT = 3;
  const POLL_MS = 2000;
  const LIST_LIMIT = 200;
  const MAX_ROWS = 500;
  const MAX_SSE_BUFFER = 1 << 20;
  const LOG_TAIL_FIRST = 500;
  const LOG_TAILS = [2000, 5000, 10000];
  const LOG_DOM_LINES = 2000;
  const CLOCK_MS = 5000;

  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  const forced = TRANSPORT_ORDER.includes(params.get('transport')) ? params.get('transport') : null;

  const state = {
    token: null,
    operator: null,
    runs: new Map(), // job_name -> status
    rows: new Map(), // job_name -> <tr>
    pending: new Map(), // job_name -> status, applied on the next frame
    replaceAll: null, // a whole list waiting for the next frame
    frame: 0,
    transport: 'none',
    follower: null,
    detail: null, // { name, status, opener }
    logs: null, // { controller, lines, cap, tail }
  };
  window.jobpulseConsole = {
    get transport() { return state.transport; },
    get rowCount() { return $('runs-body').children.length; },
  };

  // ------------------------------------------------------------ the API --

  class SignedOut extends Error {}

  async function api(path, { method = 'GET', signal } = {}) {
    const response = await fetch(path, {
      method,
      signal,
      headers: { Authorization: `Bearer ${state.token}`, Accept: 'application/json' },
      credentials: 'omit',
      cache: 'no-store',
    });
    if (response.status === 401) {
      signOut('Your token was refused. Sign in again.');
      throw new SignedOut();
    }
    let body = null;
    if ((response.headers.get('Content-Type') || '').includes('application/json')) {
      try { body = await response.json(); } catch (err) { body = null; }
    }
    return { response, body };
  }

  function errorText(response, body) {
    if (body && typeof body.message === 'string') return `${body.message} (${response.status} ${body.error || ''})`.trim();
    return `The server answered ${response.status}.`;
  }

  // -------------------------------------------------------------- login --

  async function signIn(token, { typed }) {
    state.token = token;
    let answer;
    try {
      answer = await api('/api/whoami');
    } catch (err) {
      if (err instanceof SignedOut) {
        if (typed) showLoginError('That token is not an operator\'s token.');
        return;
      }
      state.token = null;
      showLoginError('Could not reach the server. Try again.');
      return;
    }
    const { response, body } = answer;
    if (response.status === 403) {
      state.token = null;
      showLoginError('The admin API is disabled on this server (no ADMIN_TOKENS).');
      return;
    }
    if (!response.ok) {
      state.token = null;
      showLoginError(errorText(response, body));
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    state.operator = body && typeof body.operator === 'string' ? body.operator : null;
    showConsole();
  }

  function showLoginError(text) {
    const error = $('login-error');
    error.textContent = text;
    error.hidden = false;
  }

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = null;
    state.operator = null;
    stopFollowing();
    closeDetail({ restoreFocus: false });
    state.runs.clear();
    state.rows.clear();
    state.pending.clear();
    $('runs-body').replaceChildren();
    $('audit-body').replaceChildren();
    document.body.dataset.signedIn = 'false';
    $('console').hidden = true;
    $('who').hidden = true;
    $('login').hidden = false;
    $('token').value = '';
    if (message) showLoginError(message);
    else $('login-error').hidden = true;
    $('token').focus();
  }

  function showConsole() {
    $('login').hidden = true;
    $('login-error').hidden = true;
    $('token').value = '';
    $('console').hidden = false;
    $('who').hidden = false;
    $('operator-name').textContent = state.operator || 'an operator';
    document.body.dataset.signedIn = 'true';
    showSection('runs');
    startFollowing();
  }

  // --------------------------------------------------------- the filters --

  function filters() {
    const statuses = Array.from(document.querySelectorAll('#filters input[name="status"]:checked'), (box) => box.value);
    return { statuses, spec: $('spec-filter').value, search: $('search').value.trim().toLowerCase() };
  }

  function streamQuery() {
    const { statuses, spec } = filters();
    const query = new URLSearchParams({ limit: String(LIST_LIMIT) });
    if (statuses.length) query.set('status', statuses.join(','));
    if (spec) query.set('spec', spec);
    return query.toString();
  }

  function matches(status, wanted) {
    if (wanted.statuses.length && !wanted.statuses.includes(status.status)) return false;
    if (wanted.spec && status.spec !== wanted.spec) return false;
    if (wanted.search) {
      const name = (status.job_name || '').toLowerCase();
      const run = (status.pipeline_run_id || '').toLowerCase();
      if (!name.includes(wanted.search) && !run.includes(wanted.search)) return false;
    }
    return true;
  }

  function noteSpec(spec) {
    if (!spec) return;
    const select = $('spec-filter');
    if (Array.from(select.options).some((option) => option.value === spec)) return;
    const option = document.createElement('option');
    option.value = spec;
    option.textContent = spec;
    select.append(option);
  }

  // ------------------------------------------------------------ the list --

  function receiveList(runs) {
    state.replaceAll = runs;
    state.pending.clear();
    scheduleFrame();
  }

  function receiveStatus(status) {
    if (!status || typeof status.job_name !== 'string') return;
    state.pending.set(status.job_name, status);
    scheduleFrame();
  }

  function scheduleFrame() {
    if (!state.frame) state.frame = requestAnimationFrame(applyChanges);
  }

  function isNewer(status, shown) {
    return !shown || typeof status.seq !== 'number' || status.seq >= shown.seq;
  }

  function applyChanges() {
    state.frame = 0;
    if (state.replaceAll) {
      const fresh = new Map();
      for (const status of state.replaceAll) {
        if (status && typeof status.job_name === 'string') {
          const shown = state.runs.get(status.job_name);
          fresh.set(status.job_name, isNewer(status, shown) ? status : shown);
        }
      }
      state.runs = fresh;
      state.replaceAll = null;
    }
    for (const [name, status] of state.pending) {
      if (isNewer(status, state.runs.get(name))) state.runs.set(name, status);
      if (state.detail && state.detail.name === name) updateDetailStatus(state.runs.get(name));
    }
    state.pending.clear();
    render();
  }

  function render() {
    const wanted = filters();
    const shown = [];
    for (const status of state.runs.values()) {
      noteSpec(status.spec);
      if (matches(status, wanted)) shown.push(status);
    }
    shown.sort((a, b) => (b.created_at || '').localeCompare(a.created_at || ''));
    // the list kept in memory is bounded too: what the DOM shows, no more
    const kept = shown.slice(0, MAX_ROWS);
    if (state.runs.size > MAX_ROWS * 2) {
      const keep = new Set(kept.map((status) => status.job_name));
      for (const name of state.runs.keys()) if (!keep.has(name)) state.runs.delete(name);
    }
    const body = $('runs-body');
    const wantedRows = kept.map((status) => rowFor(status));
    const wantedSet = new Set(wantedRows);
    for (const row of Array.from(body.children)) if (!wantedSet.has(row)) row.remove();
    wantedRows.forEach((row, index) => {
      if (body.children[index] !== row) body.insertBefore(row, body.children[index] || null);
    });
    for (const [name, row] of state.rows) if (!row.isConnected) state.rows.delete(name);
    summarize(kept.length, shown.length);
  }

  let lastSummary = '';
  function summarize(count, total) {
    const text = total > count
      ? `Showing the newest ${count} of ${total} runs.`
      : `${count} ${count === 1 ? 'run' : 'runs'} shown.`;
    // a live region that speaks only when the count changes, not on every update
    if (text !== lastSummary) {
      lastSummary = text;
      $('runs-summary').textContent = text;
    }
  }

  function cell(row, index) { return row.children[index]; }

  function rowFor(status) {
    let row = state.rows.get(status.job_name);
    if (!row) {
      row = document.createElement('tr');
      const open = document.createElement('button');
      open.type = 'button';
      open.className = 'link';
      open.textContent = status.job_name;
      open.addEventListener('click', () => openDetail(status.job_name, open));
      const first = document.createElement('th');
      first.scope = 'row';
      first.append(open);
      row.append(first);
      for (let i = 0; i < 7; i += 1) row.append(document.createElement('td'));
      row.dataset.job = status.job_name;
      state.rows.set(status.job_name, row);
    }
    if (row.dataset.seq !== String(status.seq) || !row.dataset.seq) fillRow(row, status);
    return row;
  }

  function fillRow(row, status) {
    row.dataset.seq = String(status.seq);
    row.dataset.status = status.status;
    const badge = document.createElement('span');
    badge.className = `badge status-${String(status.status).toLowerCase()}`;
    badge.textContent = status.status;
    cell(row, 1).replaceChildren(badge);
    cell(row, 2).textContent = status.spec || '';
    cell(row, 3).textContent = status.mode || '';
    cell(row, 4).textContent = status.reason || '';
    cell(row, 5).replaceChildren(...progressOf(status));
    fillTimes(row, status);
  }

  function fillTimes(row, status) {
    cell(row, 6).textContent = age(status.created_at);
    cell(row, 7).textContent = duration(status);
  }

  function progressOf(status) {
    const progress = status.progress;
    if (!progress) return [document.createTextNode(TERMINAL.has(status.status) ? '' : '—')];
    const bar = document.createElement('progress');
    const words = progress.total
      ? `${progress.done} of ${progress.total}${progress.text ? `: ${progress.text}` : ''}`
      : `${progress.done}${progress.text ? `: ${progress.text}` : ''}`;
    if (progress.total) {
      bar.max = progress.total;
      bar.value = Math.min(progress.done, progress.total);
    }
    bar.setAttribute('aria-label', `Progress of ${status.job_name}`);
    bar.setAttribute('aria-valuetext', words);
    const text = document.createElement('span');
    text.className = 'progress-words';
    text.textContent = words;
    return [bar, text];
  }

  function seconds(from, to) {
    const start = Date.parse(from);
    const end = to ? Date.parse(to) : Date.now();
    if (Number.isNaN(start) || Number.isNaN(end)) return null;
    return Math.max(0, (end - start) / 1000);
  }

  function words(total) {
    if (total === null) return '';
    if (total < 60) return `${Math.round(total)} s`;
    if (total < 3600) return `${Math.floor(total / 60)} min ${Math.round(total % 60)} s`;
    if (total < 86400) return `${Math.floor(total / 3600)} h ${Math.floor((total % 3600) / 60)} min`;
    return `${Math.floor(total / 86400)} d ${Math.floor((total % 86400) / 3600)} h`;
  }

  function age(createdAt) {
    const total = seconds(createdAt, null);
    return total === null ? '' : `${words(total)} ago`;
  }

  function duration(status) {
    if (!status.started_at) return '';
    return words(seconds(status.started_at, status.finished_at));
  }

  setInterval(() => {
    for (const row of $('runs-body').children) {
      const status = state.runs.get(row.dataset.job);
      if (status) fillTimes(row, status);
    }
  }, CLOCK_MS);

  // -------------------------------------------------------- transports --

  function setTransport(name, phase) {
    state.transport = name;
    document.body.dataset.transport = name;
    $('transport').dataset.state = phase;
    $('transport-name').textContent = phase === 'live' ? TRANSPORT_LABELS[name] : `${TRANSPORT_LABELS[name]} (connecting)`;
  }

  // Random within the window, so that the consoles of one server do not all come back in the same instant.
  function jittered(attempt, goingAway) {
    if (goingAway) {
      const [low, high] = GOING_AWAY_WINDOW_MS;
      return low + Math.random() * (high - low);
    }
    return Math.random() * Math.min(RETRY_MAX_MS, RETRY_WINDOW_MS * 2 ** attempt);
  }

  // Follows one transport after another; each attempt gets callbacks and returns a stop function.
  class Follower {
    constructor() {
      this.stopped = false;
      this.index = forced ? TRANSPORT_ORDER.indexOf(forced) : 0;
      this.failures = 0;
      this.rounds = 0;
      this.stopCurrent = null;
      this.timer = 0;
      this.start();
    }

    start() {
      if (this.stopped) return;
      const name = TRANSPORT_ORDER[this.index];
      setTransport(name, 'connecting');
      let heard = false;
      let done = false;
      const openTimer = setTimeout(() => { if (!heard) finish(false); }, OPEN_TIMEOUT_MS);
      const finish = (afterMessages, goingAway = false) => {
        if (done || this.stopped) return;
        done = true;
        clearTimeout(openTimer);
        if (this.stopCurrent) this.stopCurrent();
        this.stopCurrent = null;
        this.next(afterMessages, goingAway);
      };
      const onMessage = () => {
        if (!heard) {
          heard = true;
          clearTimeout(openTimer);
          this.failures = 0;
          this.rounds = 0;
          setTransport(name, 'live');
        }
      };
      const opener = { ws: followWebSocket, sse: followEventStream, poll: followPolling }[name];
      this.stopCurrent = opener({ onMessage, onEnd: (goingAway) => finish(heard, heard && goingAway === true) });
    }

    next(afterMessages, goingAway) {
      if (forced) {
        this.retryLater(this.failures++, goingAway);
        return;
      }
      if (afterMessages && this.failures < RETRIES_BEFORE_NEXT) {
        this.retryLater(this.failures++, goingAway);
        return;
      }
      this.failures = 0;
      this.index += 1;
      if (this.index >= TRANSPORT_ORDER.length) {
        this.index = 0;
        this.retryLater(this.rounds++);
        return;
      }
      this.start();
    }

    retryLater(attempt, goingAway = false) {
      setTransport(TRANSPORT_ORDER[this.index], 'connecting');
      this.timer = setTimeout(() => this.start(), jittered(attempt, goingAway));
    }

    stop() {
      this.stopped = true;
      clearTimeout(this.timer);
      if (this.stopCurrent) this.stopCurrent();
      this.stopCurrent = null;
    }
  }

  function startFollowing() {
    stopFollowing();
    state.follower = new Follower();
  }

  function stopFollowing() {
    if (state.follower) state.follower.stop();
    state.follower = null;
    setTransport('none', 'none');
  }

  function handleMessage(message, onMessage) {
    if (!message || typeof message !== 'object') return;
    if (message.type === 'runs' && Array.isArray(message.runs)) {
      onMessage();
      receiveList(message.runs);
    } else if (message.type === 'status' && message.status) {
      onMessage();
      receiveStatus(message.status);
    }
  }

  function followWebSocket({ onMessage, onEnd }) {
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    let socket;
    try {
      socket = new WebSocket(`${scheme}//${location.host}/ws/runs?${streamQuery()}`);
    } catch (err) {
      setTimeout(onEnd, 0);
      return () => {};
    }
    socket.addEventListener('open', () => socket.send(JSON.stringify({ token: state.token })));
    socket.addEventListener('message', (event) => {
      let message;
      try { message = JSON.parse(event.data); } catch (err) { return; }
      handleMessage(message, onMessage);
    });
    socket.addEventListener('close', (event) => {
      if (event.code === 4401) signOut('Your token was refused. Sign in again.');
      else if (event.code === 4403) signOut('The admin API is disabled on this server (no ADMIN_TOKENS).');
      else onEnd(event.code === 1001);
    });
    return () => { socket.close(1000); };
  }

  // A small text/event-stream reader: `event:` and `data:` lines, a blank line ends an event, `:` is a comment.
  function eventStreamParser(onEvent) {
    let buffer = '';
    return (text) => {
      buffer += text;
      if (buffer.length > MAX_SSE_BUFFER) throw new Error('event too large');
      const blocks = buffer.split(/\r?\n\r?\n/);
      buffer = blocks.pop();
      for (const block of blocks) {
        let name = 'message';
        const data = [];
        for (const line of block.split(/\r?\n/)) {
          if (line.startsWith(':')) continue;
          const colon = line.indexOf(':');
          const field = colon < 0 ? line : line.slice(0, colon);
          const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
          if (field === 'event') name = value;
          else if (field === 'data') data.push(value);
        }
        if (data.length) onEvent(name, data.join('\n'));
      }
    };
  }

  function followEventStream({ onMessage, onEnd }) {
    const controller = new AbortController();
    (async () => {
      try {
        const response = await fetch(`/sse/runs?${streamQuery()}`, {
          headers: { Authorization: `Bearer ${state.token}`, Accept: 'text/event-stream' },
          credentials: 'omit',
          cache: 'no-store',
          signal: controller.signal,
        });
        if (response.status === 401) {
          signOut('Your token was refused. Sign in again.');
          return;
        }
        if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
        const parse = eventStreamParser((name, data) => {
          let body;
          try { body = JSON.parse(data); } catch (err) { return; }
          if (name === 'runs') handleMessage({ type: 'runs', runs: body.runs }, onMessage);
          else if (name === 'status') handleMessage({ type: 'status', status: body }, onMessage);
        });
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          parse(value);
        }
        onEnd(true); // the server ended the stream: it is going away (or must list afresh)
      } catch (err) {
        if (!controller.signal.aborted) onEnd();
      }
    })();
    return () => controller.abort();
  }

  function followPolling({ onMessage, onEnd }) {
    const controller = new AbortController();
    let timer = 0;
    const poll = async () => {
      try {
        const { response, body } = await api(`/api/runs?${streamQuery()}`, { signal: controller.signal });
        if (!response.ok || !body || !Array.isArray(body.runs)) throw new Error(`HTTP ${response.status}`);
        handleMessage({ type: 'runs', runs: body.runs }, onMessage);
        timer = setTimeout(poll, POLL_MS);
      } catch (err) {
        if (!controller.signal.aborted && !(err instanceof SignedOut)) onEnd();
      }
    };
    poll();
    return () => { controller.abort(); clearTimeout(timer); };
  }

  // ---------------------------------------------------------- the detail --

  async function openDetail(name, opener) {
    stopLogs();
    state.detail = { name, status: null, opener: opener || document.activeElement };
    const section = $('detail');
    $('detail-name').textContent = name;
    $('detail-message').textContent = '';
    $('detail-error').hidden = true;
    for (const id of ['detail-facts', 'detail-history', 'detail-comparison']) $(id).replaceChildren();
    $('detail-webhook').textContent = 'Loading…';
    $('detail-manifest').textContent = '';
    $('detail-logs').textContent = '';
    $('detail-links').hidden = true;
    section.hidden = false;
    section.scrollIntoView({ block: 'start' });
    $('detail-heading').focus();
    let answer;
    try {
      answer = await api(`/api/jobs/${encodeURIComponent(name)}/details`);
    } catch (err) {
      if (!(err instanceof SignedOut)) showDetailError('Could not reach the server.');
      return;
    }
    if (!state.detail || state.detail.name !== name) return;
    const { response, body } = answer;
    if (!response.ok || !body) {
      showDetailError(errorText(response, body));
      return;
    }
    updateDetailStatus(body.status);
    showWebhook(body.webhook);
    showComparison(body.comparison);
    $('detail-manifest').textContent = body.manifest ? JSON.stringify(body.manifest, null, 2) : 'No manifest is kept for this run.';
    startLogs(LOG_TAIL_FIRST);
  }

  function showDetailError(text) {
    const error = $('detail-error');
    error.textContent = text;
    error.hidden = false;
  }

  function closeDetail({ restoreFocus = true } = {}) {
    if (!state.detail) return;
    const { opener, name } = state.detail;
    stopLogs();
    state.detail = null;
    $('detail').hidden = true;
    if (!restoreFocus) return;
    const row = state.rows.get(name);
    const target = row && row.isConnected ? row.querySelector('button') : opener;
    if (target && target.isConnected) target.focus();
  }

  function fact(list, term, value) {
    const dt = document.createElement('dt');
    dt.textContent = term;
    const dd = document.createElement('dd');
    if (value instanceof Node) dd.append(value);
    else dd.textContent = value === null || value === undefined || value === '' ? '—' : String(value);
    list.append(dt, dd);
  }

  function runLink(name) {
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'link';
    button.textContent = name;
    button.addEventListener('click', () => openDetail(name, button));
    return button;
  }

  function updateDetailStatus(status) {
    if (!state.detail || !status || status.job_name !== state.detail.name) return;
    const shown = state.detail.status;
    if (shown && typeof status.seq === 'number' && status.seq < shown.seq) return;
    const wasTerminal = shown && TERMINAL.has(shown.status);
    state.detail.status = status;
    const facts = $('detail-facts');
    facts.replaceChildren();
    fact(facts, 'Status', status.status);
    fact(facts, 'Reason', status.reason);
    fact(facts, 'Message', status.message);
    fact(facts, 'Spec', status.spec);
    fact(facts, 'Mode', status.mode);
    fact(facts, 'Pipeline run', status.pipeline_run_id);
    fact(facts, 'Progress', status.progress ? progressOf(status)[1] : null);
    fact(facts, 'Attempt', status.attempt);
    fact(facts, 'Created', status.created_at);
    fact(facts, 'Started', status.started_at);
    fact(facts, 'Finished', status.finished_at);
    fact(facts, 'Duration', duration(status));

    const history = $('detail-history');
    history.replaceChildren(...(status.history || []).map((step) => {
      const item = document.createElement('li');
      const when = document.createElement('time');
      when.dateTime = step.at || '';
      when.textContent = step.at || '';
      item.append(`${step.status} `, when);
      return item;
    }));

    const links = $('detail-links');
    const parts = [];
    if (status.rerun_of) parts.push('A rerun of ', runLink(status.rerun_of), '. ');
    if (Array.isArray(status.reruns) && status.reruns.length) {
      parts.push('Rerun as ');
      status.reruns.forEach((name, index) => {
        if (index) parts.push(', ');
        parts.push(runLink(name));
      });
      parts.push('.');
    }
    links.replaceChildren(...parts);
    links.hidden = parts.length === 0;

    const terminal = TERMINAL.has(status.status);
    const kube = status.mode === 'k8s';
    const suspended = status.status === 'Suspended';
    const action = (name) => document.querySelector(`#detail-actions [data-action="${name}"]`);
    action('cancel').hidden = terminal;
    action('rerun').hidden = !terminal;
    action('suspend').hidden = !kube || terminal || suspended;
    action('resume').hidden = !kube || terminal || !suspended;
    // a follow ends with the task by itself; one that broke off is read again, whole, once the run is over
    if (shown && !wasTerminal && terminal && state.logs && state.logs.interrupted) startLogs(state.logs.tail);
  }

  function showWebhook(webhook) {
    const line = $('detail-webhook');
    if (!webhook) {
      line.textContent = 'No completion webhook for this run.';
      return;
    }
    const words = { pending: 'Pending', failing: 'Failing, tried again later', delivered: 'Delivered', given_up: 'Given up' };
    const tries = `${webhook.attempts} failed ${webhook.attempts === 1 ? 'attempt' : 'attempts'}`;
    const said = words[webhook.state] || webhook.state;
    line.textContent = `${said} (${tries})${webhook.last_error ? `; last error: ${webhook.last_error}` : ''}`;
  }

  function showComparison(comparison) {
    const box = $('detail-comparison');
    if (!comparison) {
      box.textContent = 'None: this run was not compared in dual mode.';
      return;
    }
    const list = document.createElement('dl');
    list.className = 'facts';
    fact(list, 'Matched', comparison.matched ? 'yes' : 'no');
    fact(list, 'Legacy', `${comparison.legacy_job}: ${comparison.legacy_status}${comparison.legacy_reason ? ` (${comparison.legacy_reason})` : ''}`);
    fact(list, 'Kubernetes', `${comparison.k8s_job}: ${comparison.k8s_status}${comparison.k8s_reason ? ` (${comparison.k8s_reason})` : ''}`);
    fact(list, 'Legacy duration', comparison.legacy_seconds === null ? null : words(comparison.legacy_seconds));
    fact(list, 'Kubernetes duration', comparison.k8s_seconds === null ? null : words(comparison.k8s_seconds));
    box.replaceChildren(list);
  }

  // ------------------------------------------------------------ the logs --

  function stopLogs() {
    if (state.logs) state.logs.controller.abort();
    state.logs = null;
  }

  function startLogs(tail) {
    stopLogs();
    if (!state.detail) return;
    const name = state.detail.name;
    const running = !(state.detail.status && TERMINAL.has(state.detail.status.status));
    const logs = {
      controller: new AbortController(),
      text: '',
      tail,
      cap: Math.max(LOG_DOM_LINES, tail),
      following: running,
      interrupted: false,
      frame: 0,
    };
    state.logs = logs;
    $('logs-earlier').hidden = tail >= LOG_TAILS[LOG_TAILS.length - 1];
    $('logs-state').textContent = running ? 'following as it is written' : '';
    const query = running ? `follow=1&tail=${tail}` : `tail=${tail}`;
    const show = () => {
      logs.frame = 0;
      if (state.logs !== logs) return;
      $('detail-logs').textContent = logs.text || 'No output.';
    };
    const append = (chunk) => {
      logs.text += chunk;
      let lines = logs.text.split('\n');
      if (lines.length > logs.cap + 1) {
        lines = lines.slice(lines.length - logs.cap - 1);
        logs.text = lines.join('\n');
      }
      if (!logs.frame) logs.frame = requestAnimationFrame(show);
    };
    (async () => {
      try {
        const response = await fetch(`/api/jobs/${encodeURIComponent(name)}/logs?${query}`, {
          headers: { Authorization: `Bearer ${state.token}`, Accept: 'text/plain' },
          credentials: 'omit',
          cache: 'no-store',
          signal: logs.controller.signal,
        });
        if (response.status === 401) {
          signOut('Your token was refused. Sign in again.');
          return;
        }
        if (!response.ok || !response.body) {
          let body = null;
          try { body = await response.json(); } catch (err) { body = null; }
          if (state.logs === logs) $('logs-state').textContent = `Logs unavailable: ${errorText(response, body)}`;
          return;
        }
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          append(value);
        }
        if (state.logs === logs) {
          logs.following = false;
          $('logs-state').textContent = running ? 'the task ended' : '';
          show();
        }
      } catch (err) {
        if (state.logs === logs && !logs.controller.signal.aborted) {
          logs.following = false;
          logs.interrupted = true;
          $('logs-state').textContent = 'The log stream was interrupted.';
        }
      }
    })();
  }

  function loadEarlier() {
    if (!state.logs) return;
    const bigger = LOG_TAILS.find((tail) => tail > state.logs.tail);
    if (bigger) startLogs(bigger);
  }

  // --------------------------------------------------------- the actions --

  const ACTIONS = {
    cancel: { method: 'DELETE', path: (name) => `/api/jobs/${encodeURIComponent(name)}`, ask: 'Cancel run', done: 'Cancelled.' },
    rerun: { method: 'POST', path: (name) => `/api/jobs/${encodeURIComponent(name)}/rerun`, ask: 'Start a rerun of', done: 'Rerun started.' },
    suspend: { method: 'POST', path: (name) => `/api/jobs/${encodeURIComponent(name)}/suspend`, ask: 'Suspend run', done: 'Suspended.' },
    resume: { method: 'POST', path: (name) => `/api/jobs/${encodeURIComponent(name)}/resume`, ask: 'Resume run', done: 'Resumed.' },
  };

  function confirmAction(text) {
    const dialog = $('confirm');
    $('confirm-text').textContent = text;
    dialog.returnValue = '';
    return new Promise((resolve) => {
      dialog.addEventListener('close', () => resolve(dialog.returnValue === 'confirm'), { once: true });
      dialog.showModal();
      $('confirm-no').focus();
    });
  }

  async function runAction(kind, button) {
    if (!state.detail) return;
    const name = state.detail.name;
    const action = ACTIONS[kind];
    const sure = await confirmAction(`${action.ask} ${name}?`);
    button.focus();
    if (!sure || !state.detail || state.detail.name !== name) return;
    $('detail-error').hidden = true;
    let answer;
    try {
      answer = await api(action.path(name), { method: action.method });
    } catch (err) {
      if (!(err instanceof SignedOut)) showDetailError('Could not reach the server.');
      return;
    }
    const { response, body } = answer;
    if (!response.ok) {
      showDetailError(errorText(response, body));
      return;
    }
    if (kind === 'rerun' && body && body.job_name) {
      receiveStatus(body);
      openDetail(body.job_name, button); // clears the detail's message at once: say it after
    } else if (body && body.job_name === name) {
      receiveStatus(body);
    }
    $('detail-message').textContent = action.done;
  }

  // ------------------------------------------------------------ the audit --

  async function loadAudit() {
    $('audit-error').hidden = true;
    let answer;
    try {
      answer = await api('/api/audit?limit=100');
    } catch (err) {
      if (!(err instanceof SignedOut)) {
        $('audit-error').textContent = 'Could not reach the server.';
        $('audit-error').hidden = false;
      }
      return;
    }
    const { response, body } = answer;
    if (!response.ok || !body || !Array.isArray(body.actions)) {
      $('audit-error').textContent = errorText(response, body);
      $('audit-error').hidden = false;
      return;
    }
    $('audit-body').replaceChildren(...body.actions.map((action) => {
      const row = document.createElement('tr');
      const outcome = action.outcome || {};
      for (const value of [action.at, action.actor, action.action, action.target,
        `${outcome.status}${outcome.error ? ` ${outcome.error}` : ''}`]) {
        const td = document.createElement('td');
        td.textContent = value === undefined || value === null ? '' : String(value);
        row.append(td);
      }
      return row;
    }));
  }

  function showSection(name) {
    const audit = name === 'audit';
    $('runs').hidden = audit;
    $('audit').hidden = !audit;
    if (audit) closeDetail({ restoreFocus: false });
    const [current, other] = audit ? ['tab-audit', 'tab-runs'] : ['tab-runs', 'tab-audit'];
    $(current).setAttribute('aria-current', 'page');
    $(other).removeAttribute('aria-current');
    if (audit) loadAudit();
  }

  // ------------------------------------------------------------- wiring --

  $('login-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const token = $('token').value.trim();
    if (!token) {
      showLoginError('Enter your operator token.');
      $('token').focus();
      return;
    }
    $('login-error').hidden = true;
    signIn(token, { typed: true });
  });
  $('sign-out').addEventListener('click', () => signOut(null));
  $('tab-runs').addEventListener('click', () => showSection('runs'));
  $('tab-audit').addEventListener('click', () => showSection('audit'));
  $('audit-refresh').addEventListener('click', loadAudit);
  $('detail-close').addEventListener('click', () => closeDetail());
  $('logs-earlier').addEventListener('click', loadEarlier);
  for (const button of document.querySelectorAll('#detail-actions [data-action]')) {
    button.addEventListener('click', () => runAction(button.dataset.action, button));
  }
  $('filters').addEventListener('submit', (event) => event.preventDefault());
  $('filters').addEventListener('change', (event) => {
    if (event.target.id === 'search') return;
    render();
    if (state.token) startFollowing(); // the streams filter on the server: reconnect with the new query
  });
  $('search').addEventListener('input', () => render());
  document.addEventListener('keydown', (event) => {
    if (event.key === 'Escape' && state.detail && !$('confirm').open) {
      event.preventDefault();
      closeDetail();
    }
  });

  const kept = sessionStorage.getItem(TOKEN_KEY);
  if (kept) signIn(kept, { typed: false });
  else $('token').focus();
})();
