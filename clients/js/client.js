// matchstream-client: follows one MatchStream match live from a browser or Node (SPEC 5 and 12).
// It owns the connection only: WebSocket with Server-Sent Events as the fallback, resuming with
// `from=<last seq>` after a drop (at once, then with backoff and jitter), following a `bye`'s
// `retry_after_ms` and `try`, stopping on `match_over`, `cancelled` and `not_found`, and handing
// each v2 frame to the caller exactly once and in seq order. What a frame means (the match, its
// events in words) is the caller's. An ES module with no dependencies; types in client.d.ts.

/** The `bye` reasons after which coming back is pointless: the watch ends. */
export const FINAL_REASONS = Object.freeze(['match_over', 'cancelled', 'not_found']);

const DEFAULTS = Object.freeze({
  // After a drop the first attempt is at once; each failure after it doubles the wait from
  // `backoffMs` up to `maxBackoffMs`, and the wait is drawn from its upper half (jitter), so
  // that a crowd dropped at once does not come back at once.
  backoffMs: 250,
  maxBackoffMs: 10000,
});

/**
 * Follows match `matchId` on the node at `server` (its http(s) base URL, e.g.
 * `location.origin`). See client.d.ts for the options and README.md for the behaviour.
 */
export function watch(server, matchId, options = {}) {
  return new Watch(server, matchId, options);
}

class Watch {
  constructor(server, matchId, options) {
    if (typeof matchId !== 'string' || matchId === '') {
      throw new TypeError('watch(server, matchId): matchId must be a match id string');
    }
    const base = new URL(String(server), typeof location !== 'undefined' ? location.href : undefined);
    if (base.protocol !== 'http:' && base.protocol !== 'https:') {
      throw new TypeError(`watch(server, ...): server must be an http(s) URL, not ${server}`);
    }
    this.matchId = matchId;
    this._base = base;
    this._opts = options;
    this._backoffMs = options.backoffMs ?? DEFAULTS.backoffMs;
    this._maxBackoffMs = options.maxBackoffMs ?? DEFAULTS.maxBackoffMs;
    const forced = options.transport === 'ws' || options.transport === 'sse' ? options.transport : null;
    this._forced = forced;
    const WS = options.WebSocket ?? globalThis.WebSocket;
    this._fetch = options.fetch ?? globalThis.fetch;
    this._connectors = options.connectors ?? {
      ws: (url, on) => connectWebSocket(WS, this._fetch, url, on),
      sse: (url, on) => connectEventStream(this._fetch, url, on),
    };
    // No WebSocket in this runtime (Node 20 without a flag): Server-Sent Events only.
    const hasWs = Boolean(options.connectors || WS);
    /** The transport of the current (or next) connection: `ws` or `sse`. */
    this.transport = forced ?? (hasWs ? 'ws' : 'sse');
    this._wsWorked = false;
    /** The last seq handed over (an event's, or a snapshot's); null before the first. */
    this.lastSeq = Number.isInteger(options.from) && options.from >= 0 ? options.from : null;
    /** Connections that opened so far. */
    this.connects = 0;
    /** `connecting`, `live`, `reconnecting`, `ended` (a final bye) or `closed` (close()). */
    this.state = null; // set to `connecting` by the first attempt, below
    /** Another node's `host:port` a `bye` named to `try`; null: the node at `server`. */
    this.host = null;
    this._conn = null;
    this._timer = null;
    this._failures = 0;
    this._online = () => {
      if (this._timer !== null && this.state === 'reconnecting') this._connectNow();
    };
    if (typeof addEventListener === 'function') addEventListener('online', this._online);
    this._connectNow();
  }

  /** Ends the watch: the connection is closed, no handler is called again. */
  close() {
    if (this.state === 'closed') return;
    if (this.state === 'ended') {
      this.state = 'closed'; // nothing left to end, and nothing more to tell
      return;
    }
    this._finish('closed');
  }

  // ---- Connecting ----

  _address(kind) {
    // A `try` names a node's own HTTP port: no proxy's path prefix there.
    const origin = `${this._base.protocol}//${this.host || this._base.host}`;
    const prefix = this.host ? '' : this._base.pathname.replace(/\/+$/, '');
    let url = `${origin}${prefix}/1/match/${encodeURIComponent(this.matchId)}/${kind === 'ws' ? 'ws' : 'stream'}`;
    if (this.lastSeq !== null) url += `?from=${this.lastSeq}`;
    if (kind === 'ws') url = url.replace(/^http/, 'ws');
    return url;
  }

  _connectNow() {
    clearTimeout(this._timer);
    this._timer = null;
    if (this._done()) return;
    this._stop();
    const kind = this.transport;
    const url = this._address(kind);
    const conn = { kind, opened: false, handle: null };
    this._conn = conn;
    this._setState(this.connects === 0 ? 'connecting' : 'reconnecting');
    if (this._done()) return; // closed by the onState handler
    const mine = () => this._conn === conn;
    const on = {
      open: () => {
        if (!mine()) return;
        conn.opened = true;
        this.connects += 1;
        if (kind === 'ws') this._wsWorked = true;
        this._setState('live');
      },
      frame: (text) => {
        if (mine()) this._frame(text);
      },
      // The node says there is no such match (a 404 before any stream).
      notFound: () => {
        if (mine()) this._bye({ kind: 'bye', reason: 'not_found' });
      },
      closed: () => {
        if (!mine()) return;
        this._conn = null;
        this._dropped(conn);
      },
    };
    try {
      conn.handle = this._connectors[kind](url, on);
    } catch (_) {
      if (mine()) {
        this._conn = null;
        this._dropped(conn);
      }
    }
  }

  _stop() {
    const conn = this._conn;
    this._conn = null;
    if (conn && conn.handle) conn.handle.close();
  }

  _schedule(delay) {
    clearTimeout(this._timer);
    this._timer = null;
    if (delay <= 0) {
      this._connectNow();
      return;
    }
    this._timer = setTimeout(() => this._connectNow(), delay);
  }

  // The wait before the next attempt after a failure: the first after a working connection is
  // at once, then doubling with jitter.
  _backoff() {
    const n = this._failures;
    this._failures += 1;
    if (n === 0) return 0;
    const ceiling = Math.min(this._maxBackoffMs, this._backoffMs * 2 ** Math.min(n - 1, 16));
    return ceiling / 2 + Math.random() * (ceiling / 2);
  }

  // A connection ended without a bye (the node went away, the network dropped, it never opened).
  _dropped(conn) {
    if (this._done()) return;
    this._setState('reconnecting');
    if (!conn.opened) {
      // The node a bye sent us to does not answer: back to the one at `server`.
      if (this.host) {
        this.host = null;
        this._schedule(this._backoff());
        return;
      }
      if (!this._forced && conn.kind === 'ws' && !this._wsWorked) {
        // No WebSocket gets through from here (a proxy?): Server-Sent Events at once.
        this.transport = 'sse';
        this._schedule(0);
        return;
      }
      if (!this._forced && conn.kind === 'sse' && !this._wsWorked && this._hasWs()) {
        // Neither worked yet: the node may be down rather than WebSocket blocked.
        this.transport = 'ws';
      }
    }
    this._schedule(this._backoff());
  }

  _hasWs() {
    return Boolean(this._opts.connectors || this._opts.WebSocket || globalThis.WebSocket);
  }

  // ---- Frames ----

  _frame(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch (_) {
      return; // not a v2 frame: nothing a handler could use
    }
    if (!frame || typeof frame !== 'object') return;
    if (frame.kind === 'bye') {
      this._bye(frame);
      return;
    }
    if (typeof frame.seq !== 'number') return;
    if (frame.kind === 'status') {
      // The match as the node has it, and a new starting point: the events after it follow.
      // One older than what was handed over already is the store's truth after a rewind (the
      // node lost events it had sent, and says so with `shutdown`): the events after it are
      // new ones, never duplicates. The backoff is not reset here: a node that sends its
      // snapshot and drops is come back to ever more slowly; an event resets it.
      this.lastSeq = frame.seq;
      this._call('onStatus', frame);
      return;
    }
    if (this.lastSeq !== null && frame.seq <= this.lastSeq) return; // seen already
    if (this.lastSeq !== null && frame.seq > this.lastSeq + 1) {
      // A gap: never skipped. Come back from the last seq handed over (the failures are not
      // reset: a node that keeps skipping is come back to more slowly).
      const conn = this._conn;
      this._stop();
      if (conn) this._dropped({ kind: conn.kind, opened: true });
      return;
    }
    this._failures = 0;
    this.lastSeq = frame.seq;
    this._call('onEvent', frame);
  }

  _bye(frame) {
    this._stop();
    this._call('onBye', frame);
    if (this._done()) return; // closed by the handler
    if (FINAL_REASONS.includes(frame.reason)) {
      this._finish('ended', frame);
      return;
    }
    // shutdown, full, too_slow...: where the node says (`try`: another node's host:port), when
    // it says (`retry_after_ms`), else at once, then backing off.
    if (typeof frame.try === 'string' && frame.try !== '') this.host = frame.try;
    this._setState('reconnecting', frame);
    // A bye counts as a failure either way: a node that keeps saying it (a full node whose `try`
    // does not answer either) is come back to ever more slowly, never in a tight loop.
    const backoff = this._backoff();
    const wait = typeof frame.retry_after_ms === 'number' && frame.retry_after_ms >= 0
      ? frame.retry_after_ms
      : backoff;
    this._schedule(wait);
  }

  // ---- The caller ----

  _done() {
    return this.state === 'closed' || this.state === 'ended';
  }

  _finish(state, frame) {
    clearTimeout(this._timer);
    this._timer = null;
    this._stop();
    if (typeof removeEventListener === 'function') removeEventListener('online', this._online);
    this._setState(state, frame);
  }

  _setState(state, bye) {
    if (state === this.state && !bye && state !== 'live') return;
    this.state = state;
    const info = {
      transport: this.transport,
      connects: this.connects,
      host: this.host,
      lastSeq: this.lastSeq,
    };
    if (bye) info.bye = bye;
    this._call('onState', state, info);
  }

  // A handler that throws does not stop the watch: the error is reported as uncaught.
  _call(name, ...args) {
    const handler = this._opts[name];
    if (typeof handler !== 'function') return;
    try {
      handler(...args);
    } catch (e) {
      setTimeout(() => {
        throw e;
      }, 0);
    }
  }
}

// ---- Transports: each calls on.open() once it carries frames, on.frame(text) per v2 frame,
// on.notFound() for a 404, and on.closed() once when it ends; close() ends it silently. ----

function connectWebSocket(WS, fetchFn, url, on) {
  if (!WS) throw new Error('no WebSocket in this runtime');
  const ws = new WS(url);
  let closed = false;
  let opened = false;
  const end = () => {
    if (closed) return;
    closed = true;
    if (opened || !fetchFn) {
      on.closed();
      return;
    }
    // A refused upgrade looks like any failure here: ask whether the match exists.
    const match = url.replace(/^ws/, 'http').replace(/\/ws(\?.*)?$/, '');
    fetchFn(match, { headers: { Accept: 'application/json' }, cache: 'no-store' })
      .then((r) => (r.status === 404 ? on.notFound() : on.closed()), () => on.closed());
  };
  ws.onopen = () => {
    opened = true;
    on.open();
  };
  ws.onmessage = (e) => {
    if (typeof e.data === 'string') on.frame(e.data);
  };
  // Browsers fire a close after an error; Node 20's WebSocket does not after a refused upgrade.
  ws.onerror = () => {
    end();
    try {
      ws.close();
    } catch (_) {
      /* not open */
    }
  };
  ws.onclose = end;
  return {
    close() {
      closed = true;
      try {
        ws.close(1000);
      } catch (_) {
        /* already closing */
      }
    },
  };
}

/** The longest SSE line the reader holds while waiting for its end (characters). */
const MAX_LINE = 1 << 20;

// Server-Sent Events read with fetch (in browsers and in Node, which has no EventSource): the
// library resumes with its own `from`, and sees a 404 as a 404.
function connectEventStream(fetchFn, url, on) {
  if (!fetchFn) throw new Error('no fetch in this runtime');
  const abort = new AbortController();
  let closed = false;
  const end = () => {
    if (closed) return;
    closed = true;
    on.closed();
  };
  (async () => {
    const response = await fetchFn(url, {
      headers: { Accept: 'text/event-stream' },
      cache: 'no-store',
      signal: abort.signal,
    });
    if (response.status === 404) {
      closed = true;
      on.notFound();
      return;
    }
    if (!response.ok || !response.body) {
      end();
      return;
    }
    on.open();
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    let data = [];
    for (;;) {
      const { done, value } = await reader.read();
      if (done || closed) break;
      buffer += decoder.decode(value, { stream: true });
      let at;
      while ((at = buffer.search(/\r\n|\r|\n/)) >= 0) {
        // A CR at the end may be half of a CRLF: wait for the next piece.
        if (at === buffer.length - 1 && buffer[at] === '\r') break;
        const line = buffer.slice(0, at);
        buffer = buffer.slice(at + (buffer.startsWith('\r\n', at) ? 2 : 1));
        if (line === '') {
          if (data.length > 0) on.frame(data.join('\n'));
          data = [];
        } else if (line.startsWith('data:')) {
          data.push(line.slice(line.startsWith('data: ') ? 6 : 5));
        }
        // `id:`, `event:` and `: ping` comments: the JSON says it all.
        if (closed) return;
      }
      // A frame is at most a few KiB: a line that never ends is not a node speaking (checked
      // on what is left once the whole lines are taken, so one large read loses nothing).
      if (buffer.length > MAX_LINE) {
        abort.abort();
        break;
      }
    }
    end();
  })().catch(end);
  return {
    close() {
      closed = true;
      abort.abort();
    },
  };
}
