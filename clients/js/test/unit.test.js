// The library against a fake transport: the test plays the node (opens, frames, byes, drops)
// and checks what the handlers get, which URLs the library connects to, and when (mock timers).
import { test, mock } from 'node:test';
import assert from 'node:assert/strict';

import { watch, FINAL_REASONS } from '../client.js';

const SERVER = 'http://node-a:8888';
const ID = 'elp-tig-2011-09-10';

// A fake node: every connection the library opens, which the test drives by hand.
function fakeNode() {
  const conns = [];
  const connector = (kind) => (url, on) => {
    const conn = {
      kind,
      url,
      on,
      closedByClient: false,
      close() {
        conn.closedByClient = true;
      },
      open() {
        on.open();
        return conn;
      },
      send(frame) {
        on.frame(typeof frame === 'string' ? frame : JSON.stringify(frame));
        return conn;
      },
      drop() {
        on.closed();
      },
    };
    conns.push(conn);
    return conn;
  };
  return { conns, connectors: { ws: connector('ws'), sse: connector('sse') }, last: () => conns[conns.length - 1] };
}

// A watch on a fake node, recording everything its handlers get.
function start(options = {}) {
  const node = fakeNode();
  const got = [];
  const states = [];
  const w = watch(SERVER, ID, {
    connectors: node.connectors,
    onStatus: (f) => got.push(['status', f.seq]),
    onEvent: (f) => got.push(['event', f.seq, f.kind]),
    onBye: (f) => got.push(['bye', f.reason]),
    onState: (s, info) => states.push([s, info.transport, info.connects]),
    ...options,
  });
  return { w, node, got, states };
}

const status = (seq) => ({ seq, kind: 'status', data: { id: ID, seq } });
const event = (seq, kind = 'comment') => ({ seq, ts: 1316094531000 + seq, kind, data: { text: `c${seq}` } });

function withTimers(fn) {
  return async (t) => {
    t.mock.timers.enable({ apis: ['setTimeout'] });
    mock.method(Math, 'random', () => 0.5);
    try {
      await fn(t);
    } finally {
      mock.restoreAll();
    }
  };
}

test('first connection: a WebSocket without from, then the snapshot and each event in order', () => {
  const { w, node, got, states } = start();
  assert.equal(node.conns.length, 1);
  assert.equal(node.last().url, `ws://node-a:8888/1/match/${ID}/ws`);
  node.last().open().send(status(2)).send(event(3, 'goal')).send(event(4));
  assert.deepEqual(got, [['status', 2], ['event', 3, 'goal'], ['event', 4, 'comment']]);
  assert.deepEqual(states, [['connecting', 'ws', 0], ['live', 'ws', 1]]);
  assert.equal(w.lastSeq, 4);
  w.close();
});

test('an https server is followed over wss, with its path prefix', () => {
  const node = fakeNode();
  const w = watch('https://live.example.com/football/', 'a-b-2020-01-01', { connectors: node.connectors });
  assert.equal(node.last().url, 'wss://live.example.com/football/1/match/a-b-2020-01-01/ws');
  w.close();
  assert.throws(() => watch('ftp://x', ID), TypeError);
  assert.throws(() => watch(SERVER, ''), TypeError);
});

for (const reason of FINAL_REASONS) {
  test(`bye ${reason} ends the watch: no reconnection, ever`, withTimers((t) => {
    const { w, node, got, states } = start();
    node.last().open().send(status(5)).send({ kind: 'bye', reason, retry_after_ms: 10 });
    assert.equal(node.last().closedByClient, true);
    node.last().drop(); // the server's close after its bye
    t.mock.timers.tick(60000);
    assert.equal(node.conns.length, 1, 'never connects again');
    assert.deepEqual(got, [['status', 5], ['bye', reason]]);
    assert.equal(w.state, 'ended');
    assert.deepEqual(states.at(-1), ['ended', 'ws', 1]);
    w.close();
    assert.equal(states.length, 3, 'nothing more to tell after the end');
  }));
}

test('a 404 (no such match) is a not_found bye and ends the watch', withTimers((t) => {
  const { w, node, got } = start({ transport: 'sse' });
  node.last().on.notFound();
  t.mock.timers.tick(60000);
  assert.deepEqual(got, [['bye', 'not_found']]);
  assert.equal(w.state, 'ended');
  assert.equal(node.conns.length, 1);
}));

test('bye shutdown: back after retry_after_ms, to the node named by try, from the last seq', withTimers((t) => {
  const { w, node, got } = start();
  node.last().open().send(status(7)).send(event(8));
  node.last().send({ kind: 'bye', reason: 'shutdown', retry_after_ms: 1500, try: 'node-b:8890' });
  node.last().drop();
  t.mock.timers.tick(1499);
  assert.equal(node.conns.length, 1, 'not before retry_after_ms');
  t.mock.timers.tick(1);
  assert.equal(node.conns.length, 2);
  assert.equal(node.last().url, `ws://node-b:8890/1/match/${ID}/ws?from=8`);
  node.last().open().send(event(9));
  assert.deepEqual(got, [['status', 7], ['event', 8, 'comment'], ['bye', 'shutdown'], ['event', 9, 'comment']]);
  assert.equal(w.host, 'node-b:8890');
  w.close();
}));

test('bye full with try: to that node at once; if it does not answer, back to server', withTimers((t) => {
  const { w, node } = start();
  node.last().open().send(status(3)).send({ kind: 'bye', reason: 'full', try: 'node-c:9000' });
  assert.equal(node.conns.length, 2, 'at once');
  assert.equal(node.last().url, `ws://node-c:9000/1/match/${ID}/ws?from=3`);
  node.last().drop(); // never opened
  t.mock.timers.tick(188); // 3/4 of the first backoff, 187.5 ms (Math.random is 0.5)
  assert.equal(node.conns.length, 3);
  assert.equal(node.last().url, `ws://node-a:8888/1/match/${ID}/ws?from=3`);
  assert.equal(w.host, null);
  w.close();
}));

test('a full node whose try never answers is not hammered: the waits grow', withTimers((t) => {
  const { w, node } = start({ backoffMs: 100, maxBackoffMs: 1000 });
  node.last().open().send(status(3));
  const waits = [];
  for (let i = 0; i < 4; i++) {
    const before = node.conns.length;
    node.last().open().send({ kind: 'bye', reason: 'full', try: 'node-c:9000' });
    while (node.conns.length === before) {
      t.mock.timers.tick(1);
    }
    assert.equal(node.last().url, `ws://node-c:9000/1/match/${ID}/ws?from=3`);
    node.last().drop(); // never opened
    let waited = 0;
    while (node.conns.length === before + 1) {
      t.mock.timers.tick(1);
      waited += 1;
    }
    waits.push(waited);
  }
  assert.deepEqual(waits, [75, 300, 750, 750]);
  w.close();
}));

for (const reason of ['full', 'too_slow', 'bad_request']) {
  test(`bye ${reason} without try: back to the same node, at once then backing off`, withTimers((t) => {
    const { w, node } = start();
    node.last().open().send(status(1)).send({ kind: 'bye', reason });
    assert.equal(node.conns.length, 2, 'the first time at once');
    assert.equal(node.last().url, `ws://node-a:8888/1/match/${ID}/ws?from=1`);
    node.last().open().send({ kind: 'bye', reason });
    assert.equal(node.conns.length, 2, 'the second time, later');
    t.mock.timers.tick(250);
    assert.equal(node.conns.length, 3);
    w.close();
  }));
}

test('a drop resumes with from at once, then backs off with jitter up to the maximum', withTimers((t) => {
  const { w, node, got } = start({ backoffMs: 100, maxBackoffMs: 1000 });
  node.last().open().send(status(4)).send(event(5));
  node.last().drop();
  assert.equal(node.conns.length, 2, 'at once');
  assert.equal(node.last().url, `ws://node-a:8888/1/match/${ID}/ws?from=5`);
  assert.equal(w.state, 'reconnecting');
  // The node is down: each attempt fails, the waits grow (Math.random is 0.5: 3/4 of each ceiling).
  const waits = [];
  for (let i = 0; i < 6; i++) {
    const before = node.conns.length;
    node.last().drop();
    let waited = 0;
    while (node.conns.length === before) {
      t.mock.timers.tick(1);
      waited += 1;
    }
    waits.push(waited);
  }
  assert.deepEqual(waits, [75, 150, 300, 600, 750, 750]);
  // Every attempt, WebSocket (it worked before) and from the last event.
  assert.ok(node.conns.slice(1).every((c) => c.url === `ws://node-a:8888/1/match/${ID}/ws?from=5`));
  node.last().open().send(event(6));
  assert.deepEqual(got.map((g) => g[1]), [4, 5, 6]);
  // Back live: the next drop is retried at once again.
  node.last().drop();
  assert.equal(node.last().url, `ws://node-a:8888/1/match/${ID}/ws?from=6`);
  w.close();
}));

test('duplicates are dropped and a gap is resumed from the last seq, never skipped', () => {
  const { w, node, got } = start();
  node.last().open().send(status(10)).send(event(9)).send(event(10)).send(event(11)).send(event(11));
  // 12 and 13 lost on the way: 14 is not handed over; the library comes back from 11.
  node.last().send(event(14));
  assert.equal(node.conns[0].closedByClient, true);
  assert.equal(node.conns.length, 2);
  assert.equal(node.last().url, `ws://node-a:8888/1/match/${ID}/ws?from=11`);
  node.last().open().send(event(12)).send(event(13)).send(event(14)).send(event(13));
  assert.deepEqual(got, [['status', 10], ['event', 11, 'comment'], ['event', 12, 'comment'], ['event', 13, 'comment'], ['event', 14, 'comment']]);
  w.close();
});

test('every snapshot is handed over and starts the count anew, one behind too (a rewind: the events after it are new)', () => {
  const { w, node, got } = start();
  node.last().open().send(status(3)).send(event(4));
  node.last().drop();
  node.last().open().send(status(9)).send(event(10));
  node.last().drop();
  node.last().open().send(status(8)).send(event(9)).send(event(10)).send(event(11));
  assert.deepEqual(got, [['status', 3], ['event', 4, 'comment'], ['status', 9], ['event', 10, 'comment'],
    ['status', 8], ['event', 9, 'comment'], ['event', 10, 'comment'], ['event', 11, 'comment']]);
  w.close();
});

test('from: starts after events the caller holds, and frames that are not v2 are ignored', () => {
  const { w, node, got } = start({ from: 20 });
  assert.equal(node.last().url, `ws://node-a:8888/1/match/${ID}/ws?from=20`);
  node.last().open().send('not json').send('[1]').send(event(20)).send(event(21));
  assert.deepEqual(got, [['event', 21, 'comment']]);
  w.close();
});

test('a WebSocket that never opens: Server-Sent Events at once; forced ws stays on ws', withTimers((t) => {
  const auto = start();
  auto.node.last().drop();
  assert.equal(auto.node.last().kind, 'sse');
  assert.equal(auto.node.last().url, `http://node-a:8888/1/match/${ID}/stream`);
  auto.node.last().open().send(status(2));
  auto.node.last().drop();
  assert.equal(auto.node.last().kind, 'sse', 'SSE works, WebSocket never did: stays on SSE');
  assert.equal(auto.node.last().url, `http://node-a:8888/1/match/${ID}/stream?from=2`);
  auto.w.close();

  const forced = start({ transport: 'ws' });
  forced.node.last().drop();
  t.mock.timers.tick(60000);
  assert.ok(forced.node.conns.every((c) => c.kind === 'ws'));
  forced.w.close();

  const sse = start({ transport: 'sse' });
  assert.equal(sse.node.last().kind, 'sse');
  sse.w.close();
}));

test('close(): the connection closes, no handler is called and nothing reconnects', withTimers((t) => {
  const { w, node, got, states } = start();
  const conn = node.last().open().send(status(1));
  w.close();
  assert.equal(conn.closedByClient, true);
  conn.send(event(2)).send({ kind: 'bye', reason: 'shutdown', retry_after_ms: 1 });
  conn.drop();
  t.mock.timers.tick(60000);
  assert.equal(node.conns.length, 1);
  assert.deepEqual(got, [['status', 1]]);
  assert.equal(w.state, 'closed');
  assert.deepEqual(states.at(-1), ['closed', 'ws', 1]);
  w.close(); // twice is harmless
}));

test('close() while waiting to reconnect cancels the wait', withTimers((t) => {
  const { w, node } = start();
  node.last().open().send(status(1)).send({ kind: 'bye', reason: 'shutdown', retry_after_ms: 500 });
  w.close();
  t.mock.timers.tick(60000);
  assert.equal(node.conns.length, 1);
}));

test('a handler may close the watch from inside', () => {
  const node = fakeNode();
  const got = [];
  const w = watch(SERVER, ID, {
    connectors: node.connectors,
    onEvent: (f) => {
      got.push(f.seq);
      if (f.seq === 2) w.close();
    },
  });
  node.last().open().send(status(0)).send(event(1)).send(event(2)).send(event(3));
  assert.deepEqual(got, [1, 2]);
  assert.equal(node.conns.length, 1);
});

// The real Server-Sent Events reader, fed a stream cut at awkward places.
function fakeFetch(answers) {
  const urls = [];
  const fetch = async (url, init) => {
    urls.push(url);
    const answer = answers.shift();
    if (!answer) return new Promise(() => {});
    if (answer.status !== 200) {
      return { status: answer.status, ok: false, body: null, json: async () => ({ error: 'x' }) };
    }
    const body = new ReadableStream({
      start(controller) {
        const bytes = new TextEncoder().encode(answer.body);
        for (const cut of answer.cuts(bytes.length)) controller.enqueue(bytes.slice(cut[0], cut[1]));
        if (answer.end) controller.close();
        init.signal.addEventListener('abort', () => controller.error(new Error('aborted')));
      },
    });
    return { status: 200, ok: true, body };
  };
  return { fetch, urls };
}

const sse = (frame) => `${frame.seq !== undefined && frame.kind !== 'bye' ? `id: ${frame.seq}\n` : ''}event: ${frame.kind}\ndata: ${JSON.stringify(frame)}\n\n`;

test('the SSE reader: frames split anywhere, CRLF, pings; a 404 is not_found', async () => {
  const text = `: ping\n\n${sse(status(1))}${sse(event(2, 'goal'))}`.replace(/\n/g, '\r\n') + sse(event(3)) + sse({ kind: 'bye', reason: 'match_over' });
  const oneByteEach = (n) => Array.from({ length: n }, (_, i) => [i, i + 1]);
  const { fetch, urls } = fakeFetch([{ status: 200, body: text, cuts: oneByteEach, end: true }]);
  const got = [];
  await new Promise((resolve) => {
    watch(SERVER, ID, {
      transport: 'sse',
      fetch,
      onStatus: (f) => got.push(f),
      onEvent: (f) => got.push(f),
      onBye: (f) => {
        got.push(f);
        resolve();
      },
    });
  });
  assert.equal(urls[0], `http://node-a:8888/1/match/${ID}/stream`);
  assert.deepEqual(got, [status(1), event(2, 'goal'), event(3), { kind: 'bye', reason: 'match_over' }]);

  const missing = fakeFetch([{ status: 404 }]);
  const bye = await new Promise((resolve) => {
    watch(SERVER, ID, { transport: 'sse', fetch: missing.fetch, onBye: resolve });
  });
  assert.deepEqual(bye, { kind: 'bye', reason: 'not_found' });
});

test('the SSE reader: a stream that ends without a bye is resumed from the last seq', async () => {
  const whole = (n) => [[0, n]];
  const { fetch, urls } = fakeFetch([
    { status: 200, body: sse(status(4)) + sse(event(5)), cuts: whole, end: true },
    { status: 200, body: sse(event(5)) + sse(event(6)), cuts: whole, end: false },
  ]);
  const got = [];
  let w;
  await new Promise((resolve) => {
    w = watch(SERVER, ID, {
      transport: 'sse',
      fetch,
      onStatus: (f) => got.push(f.seq),
      onEvent: (f) => {
        got.push(f.seq);
        if (f.seq === 6) resolve();
      },
    });
  });
  w.close();
  assert.deepEqual(urls, [`http://node-a:8888/1/match/${ID}/stream`, `http://node-a:8888/1/match/${ID}/stream?from=5`]);
  assert.deepEqual(got, [4, 5, 6]);
});

test('a node that sends its snapshot and drops is come back to ever more slowly, never in a tight loop', withTimers((t) => {
  const { w, node } = start({ transport: 'sse' });
  for (let i = 0; i < 6; i++) {
    node.last().open().send(status(1)).drop();
    t.mock.timers.tick(1);
  }
  // The first drops retry at once or soon; six snapshots and drops in 6 ms of a tight loop
  // would have opened 7 connections.
  assert.ok(node.conns.length < 7, `${node.conns.length} connections in 6 ms`);
  t.mock.timers.tick(60000);
  w.close();
}));

test('close() from onState while connecting opens nothing more', () => {
  const node = fakeNode();
  let w = null;
  w = watch(SERVER, ID, {
    connectors: node.connectors,
    transport: 'sse',
    onState: (s) => {
      if (s === 'reconnecting' && w) w.close();
    },
  });
  node.last().open().send(status(1)).send(event(2)).drop();
  assert.equal(w.state, 'closed');
  assert.equal(node.conns.length, 1, 'no connection opened after close()');
});
