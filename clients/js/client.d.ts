// Types of matchstream-client (client.js): the v2 frames of SPEC 4 and 5 and the watch() API.

/** A player as the frames carry one. */
export interface Player {
  number: number;
  name: string;
}

/** The match object of `GET /1/match/<id>`, as a `status` frame carries it. */
export interface Match {
  id: string;
  home: string;
  visit: string;
  "home-name"?: string;
  "visit-name"?: string;
  division?: string;
  stadium?: string;
  /** Shirt number -> name, the players on the pitch. */
  "home-players": Record<string, string>;
  "visit-players": Record<string, string>;
  "home-score": number;
  "visit-score": number;
  period:
    | "not_started" | "first" | "halftime" | "last" | "first_extra" | "halftime_extra"
    | "last_extra" | "penalties" | "ended";
  /** When the current period began, Unix ms. */
  period_start?: number | null;
  start_time: string;
  /** Events applied so far. */
  seq: number;
  [key: string]: unknown;
}

/** The kinds of event (SPEC 1). */
export type EventKind =
  | "start" | "stop" | "halftime_start" | "halftime_stop" | "extratime" | "penalties" | "shot"
  | "save" | "goal" | "corner" | "goalkick" | "offside" | "foul" | "penalty" | "freekick"
  | "card" | "substitution" | "throwin" | "comment";

/** What an event carries; which keys depends on its kind (SPEC 1). */
export interface EventData {
  team?: string;
  player?: Player;
  player_in?: Player;
  player_out?: Player;
  player_team?: string;
  card?: "yellow" | "red";
  home_players?: Player[];
  visit_players?: Player[];
  text?: string;
  [key: string]: unknown;
}

/** One event, as the node numbered it: `seq` 1, 2, 3... and `ts` in Unix ms. */
export interface EventFrame {
  seq: number;
  ts: number;
  kind: EventKind;
  data: EventData;
}

/** The match as the node has it: the first frame, and after a resume it can no longer serve. */
export interface StatusFrame {
  seq: number;
  kind: "status";
  data: Match;
}

export type ByeReason =
  | "match_over" | "cancelled" | "shutdown" | "too_slow" | "bad_request" | "not_found" | "full";

/** The last frame before the node closes. A 404 before any stream is handed over as a
 * `not_found` bye too. */
export interface ByeFrame {
  kind: "bye";
  reason: ByeReason;
  /** Come back after this many ms. */
  retry_after_ms?: number;
  /** Another node to come back to, `host:port` of its HTTP listener. */
  try?: string;
}

export type Frame = EventFrame | StatusFrame | ByeFrame;

/** `connecting` (the first connection), `live`, `reconnecting`, `ended` (after `match_over`,
 * `cancelled` or `not_found`) or `closed` (by `close()`). */
export type WatchState = "connecting" | "live" | "reconnecting" | "ended" | "closed";

export type Transport = "ws" | "sse";

export interface StateInfo {
  /** The transport of the current or next connection. */
  transport: Transport;
  /** Connections opened so far. */
  connects: number;
  /** The node a `try` sent the watch to (`host:port`), or null for `server`. */
  host: string | null;
  /** The last seq handed over, or null before the first frame. */
  lastSeq: number | null;
  /** The bye that caused this state, if one did. */
  bye?: ByeFrame;
}

/** How a transport reports back (for `connectors`). */
export interface ConnectorEvents {
  /** The connection carries frames. */
  open(): void;
  /** One v2 frame's JSON text. */
  frame(text: string): void;
  /** The node answered 404: no such match. */
  notFound(): void;
  /** The connection ended (call once; not after close()). */
  closed(): void;
}

export type Connector = (url: string, on: ConnectorEvents) => { close(): void };

export interface WatchOptions {
  /** The snapshot: the first frame, and whenever the node cannot resume. */
  onStatus?: (frame: StatusFrame) => void;
  /** Each event once, in seq order. */
  onEvent?: (frame: EventFrame) => void;
  /** Every bye; after `match_over`, `cancelled` or `not_found` the watch has ended. */
  onBye?: (frame: ByeFrame) => void;
  /** The connection's state, for an indicator. The first call (`connecting`) comes before
   * `watch()` returns. */
  onState?: (state: WatchState, info: StateInfo) => void;
  /** `ws` or `sse` only; by default WebSocket, falling back to SSE where it cannot connect. */
  transport?: Transport | "auto";
  /** Start after this seq (events you already hold) instead of from a snapshot. */
  from?: number;
  /** First wait after failed attempts (ms, default 250), doubling up to `maxBackoffMs`. */
  backoffMs?: number;
  /** The longest wait between attempts (ms, default 10000). */
  maxBackoffMs?: number;
  /** A WebSocket class, where the runtime has none (e.g. the `ws` package in Node). */
  WebSocket?: unknown;
  /** A fetch function, where the runtime has none. */
  fetch?: typeof fetch;
  /** Replaces the transports (tests, other runtimes): `ws` and `sse` connectors. */
  connectors?: { ws: Connector; sse: Connector };
}

export interface Watch {
  readonly matchId: string;
  readonly state: WatchState;
  readonly transport: Transport;
  readonly lastSeq: number | null;
  readonly connects: number;
  readonly host: string | null;
  /** Ends the watch: the connection closes and no handler is called again. */
  close(): void;
}

/** The bye reasons that end a watch. */
export declare const FINAL_REASONS: readonly ByeReason[];

/** Follows match `matchId` on the node at `server`, its http(s) base URL (`location.origin`). */
export declare function watch(server: string | URL, matchId: string, options?: WatchOptions): Watch;
