// The live page's model of a match (SPEC 1), pure: a match object as the API sends it, the rules
// that change it event by event, and each event and moment of a match in words. No DOM, no
// network: app.js shows what this computes. Loaded before app.js, as `window.MatchStreamModel`.
'use strict';

window.MatchStreamModel = (function () {
  // Every kind of event (SPEC 1).
  const KINDS = [
    'start', 'stop', 'halftime_start', 'halftime_stop', 'extratime', 'penalties', 'shot', 'save',
    'goal', 'corner', 'goalkick', 'offside', 'foul', 'penalty', 'freekick', 'card',
    'substitution', 'throwin', 'comment',
  ];
  const PERIOD_NAMES = {
    not_started: 'Not started',
    first: '1st half',
    halftime: 'Half-time',
    last: '2nd half',
    first_extra: 'Extra time, 1st half',
    halftime_extra: 'Extra time, half-time',
    last_extra: 'Extra time, 2nd half',
    penalties: 'Penalty shoot-out',
    ended: 'Full time',
  };
  // Periods with a running clock: the match minute they begin at and their length in minutes.
  const RUNNING = { first: [0, 45], last: [45, 45], first_extra: [90, 15], last_extra: [105, 15] };
  const isLive = (period) => period !== 'not_started' && period !== 'ended';
  const byNumber = (a, b) => a.number - b.number;

  // ---- The match, as SPEC 1 says it changes ----

  // A team's colour from its id: a hue of its own, as light as white text on it allows (4.5:1).
  function teamColour(id) {
    let hash = 0;
    for (const ch of id) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
    const hue = hash % 360;
    const channel = (l, n) => {
      const k = (n + hue / 30) % 12;
      const a = 0.65 * Math.min(l, 1 - l);
      const v = l - a * Math.max(-1, Math.min(k - 3, 9 - k, 1));
      return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
    };
    let light = 0.45;
    for (; light > 0.2; light -= 0.01) {
      const lum = 0.2126 * channel(light, 0) + 0.7152 * channel(light, 8) + 0.0722 * channel(light, 4);
      if (1.05 / (lum + 0.05) >= 4.8) break;
    }
    return `hsl(${hue} 65% ${Math.round(light * 100)}%)`;
  }

  function sideFrom(id, name, players, score) {
    const list = Object.entries(players || {}).map(([n, who]) => ({ number: Number(n), name: who }));
    return { id, name: name || null, score: Number(score) || 0, players: list.sort(byNumber) };
  }

  // The match object of `GET /1/match/<id>` and of a `status` frame.
  function fromMatch(m) {
    return {
      id: m.id,
      seq: m.seq || 0,
      period: m.period || 'not_started',
      periodStart: typeof m.period_start === 'number' ? m.period_start : null,
      date: m.start_time || '',
      stadium: m.stadium || null,
      division: m.division || null,
      home: sideFrom(m.home, m['home-name'], m['home-players'], m['home-score']),
      visit: sideFrom(m.visit, m['visit-name'], m['visit-players'], m['visit-score']),
    };
  }

  function sideOf(match, team) {
    if (team === match.home.id) return match.home;
    if (team === match.visit.id) return match.visit;
    return null;
  }

  function moveTo(match, period, ts) {
    match.period = period;
    match.periodStart = ts;
  }

  // Applies one event (the server accepted it, so it applies) and counts it.
  function apply(match, ev) {
    const d = ev.data || {};
    const side = sideOf(match, d.team);
    switch (ev.kind) {
      case 'start':
        match.home.players = (d.home_players || []).map((p) => ({ ...p })).sort(byNumber);
        match.visit.players = (d.visit_players || []).map((p) => ({ ...p })).sort(byNumber);
        match.home.score = 0;
        match.visit.score = 0;
        moveTo(match, 'first', ev.ts);
        break;
      case 'halftime_start':
        moveTo(match, match.period === 'first_extra' ? 'halftime_extra' : 'halftime', ev.ts);
        break;
      case 'halftime_stop':
        moveTo(match, match.period === 'halftime_extra' ? 'last_extra' : 'last', ev.ts);
        break;
      case 'extratime':
        moveTo(match, 'first_extra', ev.ts);
        break;
      case 'penalties':
        moveTo(match, 'penalties', ev.ts);
        break;
      case 'stop':
        moveTo(match, 'ended', ev.ts);
        break;
      case 'goal':
        if (side) side.score += 1;
        break;
      case 'card':
        if (side && d.card === 'red' && d.player) {
          side.players = side.players.filter((p) => p.number !== d.player.number);
        }
        break;
      case 'substitution':
        if (side && d.player_in && d.player_out) {
          const at = side.players.findIndex((p) => p.number === d.player_out.number);
          if (at >= 0) side.players[at] = { ...d.player_in };
          side.players.sort(byNumber);
        }
        break;
      default:
        break;
    }
    match.seq = ev.seq;
  }

  function teamLabel(match, id) {
    const side = sideOf(match, id);
    return (side && side.name) || id || '';
  }

  const who = (p) => (p ? `${p.name} (${p.number})` : '');

  // One event in words, e.g. "Goal for tig: Luna (7)", "Red card: Albil (25), elp".
  function describe(match, ev, periodAfter) {
    const d = ev.data || {};
    const team = d.team ? teamLabel(match, d.team) : '';
    const player = who(d.player);
    const withTeam = (what, link) => {
      let s = team ? `${what} ${link} ${team}` : what;
      if (player) s += `: ${player}`;
      return s;
    };
    switch (ev.kind) {
      case 'start': return 'Kick-off';
      case 'stop': return 'Full time';
      case 'halftime_start':
        return periodAfter === 'halftime_extra' ? 'Half-time in extra time' : 'Half-time';
      case 'halftime_stop':
        return periodAfter === 'last_extra'
          ? 'Second half of extra time under way'
          : 'Second half under way';
      case 'extratime': return 'Extra time begins';
      case 'penalties': return 'Penalty shoot-out';
      case 'goal':
        if (d.player_team && d.player_team !== d.team && d.player) {
          return `Goal for ${team}: own goal by ${player}, ${teamLabel(match, d.player_team)}`;
        }
        return withTeam('Goal', 'for');
      case 'card': {
        const colour = d.card === 'red' ? 'Red' : 'Yellow';
        return `${colour} card: ${[player, team].filter(Boolean).join(', ')}`;
      }
      case 'substitution':
        return `Substitution for ${team}: ${who(d.player_in)} for ${who(d.player_out)}`;
      case 'shot': return withTeam('Shot', 'by');
      case 'save': return withTeam('Save', 'by');
      case 'foul': return withTeam('Foul', 'by');
      case 'offside': return withTeam('Offside', 'against');
      case 'corner': return withTeam('Corner', 'for');
      case 'goalkick': return withTeam('Goal kick', 'for');
      case 'penalty': return withTeam('Penalty', 'for');
      case 'freekick': return withTeam('Free kick', 'for');
      case 'throwin': return withTeam('Throw-in', 'for');
      case 'comment': {
        const about = [player, team].filter(Boolean).join(', ');
        return about ? `${d.text || ''} (${about})` : d.text || '';
      }
      default: return ev.kind;
    }
  }

  // Where in the match `ts` falls, football style: "23'", "45+2'", "HT", "FT".
  function minuteOf(period, periodStart, ts) {
    if (period === 'halftime' || period === 'halftime_extra') return ['HT', 'half-time'];
    if (period === 'penalties') return ['Pens', 'penalties'];
    if (period === 'ended') return ['FT', 'full time'];
    const running = RUNNING[period];
    if (!running || periodStart === null) return ['', ''];
    const [offset, length] = running;
    const minute = Math.floor(Math.max(0, ts - periodStart) / 60000) + 1;
    const text = minute > length ? `${offset + length}+${minute - length}'` : `${offset + minute}'`;
    return [text, `minute ${text.replace("'", '')}`];
  }

  function clockText(match, now) {
    const running = RUNNING[match.period];
    if (!running || match.periodStart === null) return '';
    const seconds = running[0] * 60 + Math.floor(Math.max(0, now - match.periodStart) / 1000);
    const mm = String(Math.floor(seconds / 60)).padStart(2, '0');
    return `${mm}:${String(seconds % 60).padStart(2, '0')}`;
  }

  function dateText(day) {
    const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(day || '');
    if (!m) return day || '';
    const date = new Date(Number(m[1]), Number(m[2]) - 1, Number(m[3]));
    return date.toLocaleDateString(undefined, {
      weekday: 'short', day: 'numeric', month: 'short', year: 'numeric',
    });
  }

  return Object.freeze({
    KINDS, PERIOD_NAMES, isLive, teamColour, fromMatch, apply, describe, minuteOf, clockText,
    dateText,
  });
}());
