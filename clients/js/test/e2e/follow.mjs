// Follows one match on a real node with the library, printing what each handler gets as one
// JSON line (`["event", frame]`, `["state", {state, transport, connects, ...}]`...), and exits
// once the watch has ended. tests/it/clients.rs runs it in Node against nodes it starts.
// Usage: node follow.mjs <server> <match id> <ws|sse>
import { watch } from '../../client.js';

const [server, matchId, transport] = process.argv.slice(2);
if (!server || !matchId || !['ws', 'sse'].includes(transport)) {
  process.stderr.write('usage: node follow.mjs <server> <match id> <ws|sse>\n');
  process.exit(2);
}
if (transport === 'ws' && typeof WebSocket === 'undefined') {
  process.stderr.write('no WebSocket in this Node: run it with --experimental-websocket\n');
  process.exit(2);
}
// Pipes are written synchronously in Node on Linux: nothing is lost by the exit below.
const print = (what, value) => process.stdout.write(`${JSON.stringify([what, value])}\n`);

watch(server, matchId, {
  transport,
  backoffMs: 50,
  onStatus: (frame) => print('status', frame),
  onEvent: (frame) => print('event', frame),
  onBye: (frame) => print('bye', frame),
  onState: (state, info) => {
    print('state', { state, ...info });
    if (state === 'ended') process.exit(0);
  },
});
