// The live page (SPEC 5): the list of matches at `/`, one match followed live at `/?mid=<id>`.
// Plain JavaScript, no framework and no build step; everything it reads comes from this host:
// the read API (SPEC 3) once, then the v2 frames through the client library (`/client.js`,
// clients/js in the repository: WebSocket, else Server-Sent Events, resume, byes), which owns
// the connection. The match is kept as SPEC 1 says and every event is shown once.
// An ES module (it imports the library); the node names the import by its hash when serving.
import { watch } from '/client.js';

(function () {
  const {
    PERIOD_NAMES, isLive, teamColour, fromMatch, apply, describe, minuteOf, clockText,
    dateText,
  } = window.MatchStreamModel;

  // The bye that ended the match's stream, in words.
  const FINAL_BYES = { match_over: 'Ended', cancelled: 'Cancelled', not_found: 'Not found' };
  const HISTORY_PAGE = 1000;
  const LIST_REFRESH_MS = 15000;

  // ---- DOM helpers: text only ever goes in as text (names come from watchers) ----

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === 'class') el.className = value;
      else if (key === 'text') el.textContent = value;
      else el.setAttribute(key, value === true ? '' : String(value));
    }
    for (const child of children.flat()) {
      if (child !== null && child !== undefined && child !== false) el.append(child);
    }
    return el;
  }

  // Icons: fixed markup of this file, never data.
  const ICONS = {
    ball: '<svg viewBox="0 0 20 20"><circle cx="10" cy="10" r="8.5" fill="#fff" stroke="currentColor" stroke-width="1.5"/><path d="M10 6l3.3 2.4-1.3 3.9H8L6.7 8.4z" fill="currentColor"/><path d="M10 1.5V6M13.3 8.4l4.2-1.4M12 12.3l2.6 3.6M8 12.3l-2.6 3.6M6.7 8.4L2.5 7" stroke="currentColor" stroke-width="1.2"/></svg>',
    swap: '<svg viewBox="0 0 20 20" fill="none" stroke-width="2" stroke-linecap="round" stroke-linejoin="round"><path d="M4 7h11l-3-3" stroke="#1a7f37"/><path d="M16 13H5l3 3" stroke="#c62828"/></svg>',
    whistle: '<svg viewBox="0 0 20 20" fill="currentColor"><path d="M7.5 6H18v3.2l-5 1.3A5.5 5.5 0 1 1 7.5 6zm0 3a2.5 2.5 0 1 0 0 5 2.5 2.5 0 0 0 0-5z"/><rect x="9" y="3" width="2" height="3" rx="1"/></svg>',
    flag: '<svg viewBox="0 0 20 20" fill="none" stroke="currentColor" stroke-width="1.6" stroke-linecap="round"><path d="M5 18V2"/><path d="M5 3h10l-2.5 3.5L15 10H5" fill="#f4b400" stroke="#8a6500"/></svg>',
    boot: '<svg viewBox="0 0 20 20" fill="currentColor"><path d="M4 3h5v6.5c2.5.6 5.2 1.4 7.3 2.6 1.2.7 1.7 1.6 1.7 2.9v.5c0 .8-.7 1.5-1.5 1.5h-13C2.7 17 2 16.3 2 15.5V5a2 2 0 0 1 2-2z"/></svg>',
    glove: '<svg viewBox="0 0 20 20" fill="currentColor"><path d="M6 18v-4L3.5 10.5a1.3 1.3 0 0 1 2-1.6L7 10.5V3.5a1.2 1.2 0 0 1 2.4 0V8h.2V2.5a1.2 1.2 0 0 1 2.4 0V8h.2V3.2a1.2 1.2 0 0 1 2.4 0V8h.2V5a1.2 1.2 0 0 1 2.4 0v7c0 2.3-1.2 4-3 5v1z"/></svg>',
    target: '<svg viewBox="0 0 20 20" fill="none" stroke="currentColor" stroke-width="1.6"><circle cx="10" cy="10" r="7.5"/><circle cx="10" cy="10" r="3.5"/><circle cx="10" cy="10" r="0.8" fill="currentColor"/></svg>',
    speech: '<svg viewBox="0 0 20 20" fill="currentColor"><path d="M3 3h14a1 1 0 0 1 1 1v9a1 1 0 0 1-1 1H9l-4 3.5V14H3a1 1 0 0 1-1-1V4a1 1 0 0 1 1-1z"/></svg>',
    dot: '<svg viewBox="0 0 20 20" fill="currentColor"><circle cx="10" cy="10" r="3.5"/></svg>',
  };
  const KIND_ICON = {
    start: 'whistle', stop: 'whistle', halftime_start: 'whistle', halftime_stop: 'whistle',
    extratime: 'whistle', penalties: 'target', shot: 'boot', save: 'glove', goal: 'ball',
    corner: 'flag', goalkick: 'boot', offside: 'flag', foul: 'whistle', penalty: 'target',
    freekick: 'boot', substitution: 'swap', throwin: 'dot', comment: 'speech',
  };

  function icon(name) {
    const span = h('span', { class: 'icon', 'aria-hidden': 'true' });
    span.innerHTML = ICONS[name] || ICONS.dot;
    return span;
  }

  function cardIcon(colour) {
    return h('span', { class: `icon card-icon ${colour}`, 'aria-hidden': 'true' });
  }

  // ---- Reading the API ----

  class HttpError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  // Always revalidated (the API answers 304 for what did not change), never a stale copy.
  async function getJSON(path) {
    const response = await fetch(path, { cache: 'no-cache', headers: { Accept: 'application/json' } });
    if (!response.ok) {
      let message = `${response.status}`;
      try {
        message = (await response.json()).error || message;
      } catch (_) { /* not JSON: the status says enough */ }
      throw new HttpError(response.status, message);
    }
    return response.json();
  }

  async function mapLimited(items, limit, fn) {
    const out = new Array(items.length);
    let next = 0;
    const worker = async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i]);
      }
    };
    await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
    return out;
  }

  const matchPath = (id) => `/1/match/${encodeURIComponent(id)}`;
  const main = () => document.getElementById('main');

  function badge(side, extra) {
    const b = h('span', { class: `badge ${extra || ''}`.trim(), 'aria-hidden': 'true' },
      (side.id || '?').slice(0, 3).toUpperCase());
    b.style.setProperty('--team', teamColour(side.id || ''));
    return b;
  }

  // ---- The list of matches ----

  function listCard(m) {
    const live = isLive(m.period);
    const started = m.period !== 'not_started';
    let status;
    if (live) {
      status = h('span', { class: 'tag live' }, h('span', { class: 'live-dot', 'aria-hidden': 'true' }),
        `Live · ${PERIOD_NAMES[m.period] || m.period}`);
    } else if (m.period === 'ended') {
      status = h('span', { class: 'tag' }, 'Full time');
    } else {
      status = h('span', { class: 'tag soon' }, 'Not started');
    }
    const score = started
      ? h('span', { class: 'card-score' }, `${m.home.score}`, h('span', { class: 'dash' }, '–'), `${m.visit.score}`)
      : h('span', { class: 'card-score vs' }, 'vs');
    const meta = [dateText(m.date), m.stadium].filter(Boolean).join(' · ');
    return h('li', {},
      h('a', { class: `match-card${live ? ' is-live' : ''}`, href: `/?mid=${encodeURIComponent(m.id)}`, 'data-mid': m.id },
        h('span', { class: 'card-teams' },
          h('span', { class: 'card-side home' }, badge(m.home, 'small'), h('span', { class: 'team-name' }, m.home.name || m.home.id)),
          score,
          h('span', { class: 'card-side visit' }, h('span', { class: 'team-name' }, m.visit.name || m.visit.id), badge(m.visit, 'small'))),
        h('span', { class: 'card-meta' }, status, meta ? h('span', {}, meta) : null)));
  }

  function renderList(matches, failed) {
    const groups = [
      ['Live now', matches.filter((m) => isLive(m.period))
        .sort((a, b) => (b.periodStart || 0) - (a.periodStart || 0))],
      ['Coming up', matches.filter((m) => m.period === 'not_started')
        .sort((a, b) => a.date.localeCompare(b.date) || a.id.localeCompare(b.id))],
      ['Finished', matches.filter((m) => m.period === 'ended')
        .sort((a, b) => b.date.localeCompare(a.date) || a.id.localeCompare(b.id))],
    ];
    const section = h('section', { class: 'list', 'aria-labelledby': 'list-title' },
      h('h1', { id: 'list-title' }, 'Matches'),
      h('p', { class: 'lead' }, 'Pick a match to follow it live: score, line-ups and every event as it happens.'));
    if (failed) {
      section.append(h('p', { class: 'notice', role: 'alert' }, `Could not load the matches (${failed}). Retrying…`));
    } else if (matches.length === 0) {
      section.append(h('p', { class: 'notice' }, 'No matches yet. They appear here as soon as a watcher creates one.'));
    }
    groups.forEach(([title, list], i) => {
      if (list.length === 0) return;
      const id = `group-${i}`;
      section.append(h('section', { class: 'group', 'aria-labelledby': id },
        h('h2', { id }, title, h('span', { class: 'count' }, ` (${list.length})`)),
        h('ul', { class: 'cards', role: 'list' }, list.map(listCard))));
    });
    const root = main();
    root.replaceChildren(section);
  }

  async function showList() {
    document.title = 'MatchStream: live football';
    let shown = '';
    const refresh = async () => {
      let matches = [];
      let failed = null;
      try {
        const ids = await getJSON('/1/matches');
        const all = await mapLimited(ids, 6, (id) => getJSON(matchPath(id)).catch(() => null));
        matches = all.filter(Boolean).map(fromMatch);
      } catch (e) {
        failed = e.message;
      }
      const key = JSON.stringify([matches, failed]);
      // Unchanged: leave the DOM (and the reader's focus) alone.
      if (key !== shown) {
        const focused = document.activeElement && document.activeElement.dataset
          ? document.activeElement.dataset.mid : null;
        renderList(matches, failed);
        shown = key;
        if (focused) {
          const again = main().querySelector(`a[data-mid="${CSS.escape(focused)}"]`);
          if (again) again.focus();
        }
      }
      setTimeout(refresh, failed ? 3000 : LIST_REFRESH_MS);
    };
    await refresh();
  }

  // ---- One match, live ----

  const view = {}; // the match view's elements
  let match = null; // the match as shown
  let lastSeq = 0; // the last event applied to `match`

  function renderSkeleton(id) {
    const title = h('h1', { class: 'fixture', id: 'fixture' },
      h('span', { class: 'side home' }, h('span', { class: 'badge-slot', id: 'home-badge' }), h('span', { class: 'team-name', id: 'home-name' })),
      h('span', { class: 'score', id: 'score' },
        h('span', { id: 'home-score' }, ''),
        h('span', { class: 'dash', id: 'score-dash', 'aria-hidden': 'true' }, '–'),
        h('span', { class: 'sr-only', id: 'score-said' }, ' to '),
        h('span', { id: 'visit-score' }, '')),
      h('span', { class: 'side visit' }, h('span', { class: 'badge-slot', id: 'visit-badge' }), h('span', { class: 'team-name', id: 'visit-name' })));
    const board = h('section', { class: 'scoreboard', 'aria-labelledby': 'fixture' },
      title,
      h('p', { class: 'period-line' },
        h('span', { class: 'period', id: 'period' }),
        h('time', { class: 'clock', id: 'clock', hidden: true })),
      h('p', { class: 'fixture-meta', id: 'fixture-meta' }));
    const feed = h('ol', { class: 'feed', id: 'feed', reversed: true, 'aria-live': 'polite', 'aria-relevant': 'additions', 'aria-busy': 'true' });
    const feedSection = h('section', { class: 'panel feed-panel', 'aria-labelledby': 'feed-title' },
      h('h2', { id: 'feed-title' }, 'Live commentary'),
      h('p', { class: 'empty', id: 'feed-empty' }, 'Nothing has happened yet.'),
      feed);
    const lineups = h('section', { class: 'panel lineups', 'aria-labelledby': 'lineups-title' },
      h('h2', { id: 'lineups-title' }, 'Line-ups'),
      h('div', { class: 'lineup-cols' },
        h('section', { class: 'lineup', 'aria-labelledby': 'home-lineup-title' },
          h('h3', { id: 'home-lineup-title' }), h('ul', { class: 'players', id: 'home-lineup' })),
        h('section', { class: 'lineup', 'aria-labelledby': 'visit-lineup-title' },
          h('h3', { id: 'visit-lineup-title' }), h('ul', { class: 'players', id: 'visit-lineup' }))),
      h('p', { class: 'empty', id: 'lineups-empty', hidden: true }, 'The line-ups are announced at kick-off.'));
    const back = h('p', { class: 'back' }, h('a', { href: '/' }, '← All matches'));
    main().replaceChildren(back, board, h('div', { class: 'match-grid' }, feedSection, lineups));
    for (const el of main().querySelectorAll('[id]')) view[el.id] = el;
    document.title = `${id}: MatchStream`;
  }

  // Marks shown beside a player in the line-ups (goals, cards), gathered from the feed.
  const marks = new Map(); // "team:number" -> ['goal', 'yellow', ...]

  function addMark(ev) {
    const d = ev.data || {};
    let key = null;
    let mark = null;
    if (ev.kind === 'goal' && d.player) {
      const own = d.player_team && d.player_team !== d.team;
      key = `${d.player_team || d.team}:${d.player.number}`;
      mark = own ? 'own' : 'goal';
    } else if (ev.kind === 'card' && d.player) {
      key = `${d.team}:${d.player.number}`;
      mark = d.card === 'red' ? 'red' : 'yellow';
    }
    if (!key) return false;
    if (!marks.has(key)) marks.set(key, []);
    marks.get(key).push(mark);
    return true;
  }

  function renderLineup(side, list, heading) {
    heading.replaceChildren(badge(side, 'tiny'), h('span', {}, side.name || side.id));
    list.replaceChildren(...side.players.map((p) => {
      const ms = marks.get(`${side.id}:${p.number}`) || [];
      const goals = ms.filter((m) => m === 'goal').length;
      const yellow = ms.includes('yellow');
      const said = [goals ? `${goals} goal${goals > 1 ? 's' : ''}` : '', yellow ? 'booked' : '']
        .filter(Boolean).join(', ');
      const num = h('span', { class: 'num', 'aria-hidden': 'true' }, String(p.number));
      num.style.setProperty('--team', teamColour(side.id));
      return h('li', { 'data-number': p.number },
        num,
        h('span', { class: 'player-name' }, h('span', { class: 'pname' }, p.name),
          h('span', { class: 'sr-only' }, `, number ${p.number}${said ? `, ${said}` : ''}`)),
        h('span', { class: 'player-marks', 'aria-hidden': 'true' },
          Array.from({ length: goals }, () => icon('ball')), yellow ? cardIcon('yellow') : null));
    }));
  }

  function renderMatch() {
    const m = match;
    for (const [key, side] of [['home', m.home], ['visit', m.visit]]) {
      view[`${key}-badge`].replaceChildren(badge(side));
      view[`${key}-name`].textContent = side.name || side.id;
      renderLineup(side, view[`${key}-lineup`], view[`${key}-lineup-title`]);
    }
    const started = m.period !== 'not_started';
    view['home-score'].textContent = started ? String(m.home.score) : '';
    view['visit-score'].textContent = started ? String(m.visit.score) : '';
    view.score.classList.toggle('not-started', !started);
    view['score-dash'].textContent = started ? '–' : 'v';
    view['score-said'].textContent = started ? ' to ' : ' versus ';
    view.period.textContent = started ? PERIOD_NAMES[m.period] || m.period : `Kick-off ${dateText(m.date)}`;
    view.period.dataset.period = m.period;
    view['fixture-meta'].textContent = [m.division, m.stadium, started ? dateText(m.date) : null]
      .filter(Boolean).join(' · ');
    view['lineups-empty'].hidden = m.home.players.length + m.visit.players.length > 0;
    document.title = `${m.home.name || m.home.id} ${started ? `${m.home.score}–${m.visit.score}` : 'v'} ${m.visit.name || m.visit.id}: MatchStream`;
    tick();
  }

  function tick() {
    if (!match) return;
    const text = clockText(match, Date.now());
    view.clock.hidden = !text;
    if (view.clock.textContent !== text) view.clock.textContent = text;
  }

  // ---- The feed: every event once, newest first ----

  const shown = new Map(); // seq -> { li, ev }
  // The match as of the feed's gapless run of events from seq 1: it dates each entry as it was.
  let replay = null;

  function feedEntry(ev, context, score) {
    const d = ev.data || {};
    const [minute, spoken] = minuteOf(context.period, context.periodStart, ev.ts);
    const red = ev.kind === 'card' && d.card === 'red';
    const kind = ev.kind === 'card' ? `card-${red ? 'red' : 'yellow'}` : ev.kind;
    return h('li', { class: `ev ev-${kind}`, 'data-seq': ev.seq, 'data-kind': ev.kind },
      h('span', { class: 'minute', 'aria-hidden': 'true' }, minute),
      ev.kind === 'card' ? cardIcon(red ? 'red' : 'yellow') : icon(KIND_ICON[ev.kind]),
      h('span', { class: 'what' },
        spoken ? h('span', { class: 'sr-only' }, `${spoken[0].toUpperCase()}${spoken.slice(1)}: `) : null,
        h('span', { class: 'text' }, describe(match, ev, context.period)),
        score ? h('span', { class: 'ev-score' }, score) : null));
  }

  // Shows an event once (by seq), in its place: newest first.
  function addToFeed(ev) {
    if (shown.has(ev.seq)) return;
    // The replay dates an event it reaches; one shown ahead of it (live before the history
    // arrived) was just applied to the live match, which dates it as well.
    let context = ev.seq === lastSeq ? match : null;
    if (replay && ev.seq === replay.seq + 1) {
      apply(replay, ev);
      context = replay;
    }
    context = context || match;
    const score = ev.kind === 'goal' ? `${context.home.score}–${context.visit.score}` : null;
    const li = feedEntry(ev, context, score);
    let next = null; // the entry just older than this one
    for (const [seq, entry] of shown) {
      if (seq < ev.seq && (!next || seq > Number(next.dataset.seq))) next = entry.li;
    }
    view.feed.insertBefore(li, next);
    shown.set(ev.seq, { li, ev });
    view['feed-empty'].hidden = true;
    while (replay && shown.has(replay.seq + 1)) apply(replay, shown.get(replay.seq + 1).ev);
    if (addMark(ev)) renderMatch();
  }

  // Fills the feed from the history up to the match's `lastSeq` (the first time, and whenever a
  // snapshot jumps ahead of it). One reader at a time; the run ends when the feed holds it all.
  let filling = null;
  function fillFeed() {
    if (filling) return filling;
    filling = (async () => {
      try {
        for (;;) {
          let after = 0;
          while (shown.has(after + 1)) after += 1;
          if (after >= lastSeq) break;
          const page = await getJSON(`${matchPath(match.id)}/history?after=${after}&limit=${HISTORY_PAGE}`);
          for (const e of page) {
            const ev = { seq: e.seq, ts: e.timestamp, kind: e.kind, data: e.data || {} };
            if (ev.seq > lastSeq) onEvent(ev);
            else addToFeed(ev);
          }
          if (page.length === 0) break;
        }
      } catch (e) {
        setTimeout(() => fillFeed(), 2000);
      } finally {
        filling = null;
        view.feed.setAttribute('aria-busy', 'false');
      }
    })();
    return filling;
  }

  // An event after `lastSeq`: applied to the match, then shown.
  function onEvent(ev) {
    if (ev.seq <= lastSeq) {
      addToFeed(ev); // already applied; shown unless it already is
      return;
    }
    const gap = ev.seq > lastSeq + 1;
    apply(match, ev);
    lastSeq = ev.seq;
    renderMatch();
    addToFeed(ev);
    if (gap) fillFeed();
  }

  // ---- The connection: the client library (/client.js) owns it ----

  // What the indicator says in each of the library's states; `ended` by the bye that ended it.
  const STATE_TEXT = { connecting: 'Connecting…', live: 'Live', reconnecting: 'Reconnecting…' };

  function setConn(state, text, info) {
    const el = document.getElementById('conn');
    el.hidden = false;
    el.dataset.state = state;
    if (info) {
      el.dataset.connects = String(info.connects);
      el.dataset.transport = info.transport;
    }
    el.querySelector('.conn-text').textContent = text;
  }

  // Follows the match live from the server's snapshot: the library hands over each frame once
  // and in order, resumes after drops and follows the node's byes; the page only shows them.
  function follow() {
    // `/?mid=<id>&transport=sse` starts on Server-Sent Events (for networks known to block
    // WebSockets, and to try that path on purpose).
    const sseOnly = new URLSearchParams(location.search).get('transport') === 'sse';
    watch(location.origin, match.id, {
      transport: sseOnly ? 'sse' : 'auto',
      onStatus(frame) {
        // A snapshot replaces the match wholesale, an older one too: after a rewind it is
        // what the store holds.
        if (frame.data) {
          match = fromMatch(frame.data);
          lastSeq = match.seq;
          renderMatch();
          fillFeed();
        }
      },
      onEvent(frame) {
        onEvent({ seq: frame.seq, ts: frame.ts, kind: frame.kind, data: frame.data || {} });
      },
      onState(state, info) {
        const text = state === 'ended' ? FINAL_BYES[info.bye && info.bye.reason] || 'Ended' : STATE_TEXT[state];
        if (text) setConn(state, text, info);
      },
    });
  }

  async function showMatch(id) {
    renderSkeleton(id);
    setConn('connecting', 'Connecting…');
    let first;
    for (;;) {
      try {
        first = await getJSON(matchPath(id));
        break;
      } catch (e) {
        if (e.status === 404) {
          setConn('ended', 'Not found');
          main().replaceChildren(h('section', { class: 'list' },
            h('h1', {}, 'No such match'),
            h('p', { class: 'notice' }, `There is no match ${id}. `, h('a', { href: '/' }, 'See all matches'), '.')));
          return;
        }
        setConn('reconnecting', 'Reconnecting…');
        await new Promise((r) => setTimeout(r, 1000 + Math.random() * 2000));
      }
    }
    match = fromMatch(first);
    lastSeq = match.seq;
    replay = fromMatch({ id: first.id, home: first.home, 'home-name': first['home-name'], visit: first.visit, 'visit-name': first['visit-name'] });
    renderMatch();
    setInterval(tick, 1000);
    await fillFeed();
    if (match.period === 'ended') {
      // Nothing more can happen: no stream to hold open.
      setConn('ended', 'Ended');
      return;
    }
    follow();
  }

  function start() {
    const mid = new URLSearchParams(location.search).get('mid');
    if (mid) showMatch(mid);
    else showList();
  }

  start();
}());
