// A socket.io-client 4 subscriber that resumes as the README tells users to: it asks for
// envelopes (includeMetadata), keeps the id of the last message, and reconnects by
// itself (socket.io-client's own reconnection) with `replay=<that id>`, so a dropped
// connection, even to a node that died, loses and repeats nothing.
// One JSON argument: {url, stream, token, transports?, timeoutMs?}.
// Prints one JSON line per event: {"event": "connect"} | {"event": "message", "data":
// <envelope>} | {"event": "disconnect", "reason"} | {"event": "warning"|"error"|
// "replay_end", "data"} | {"event": "connect_error", "data"}. Exits 0 after a message
// whose data has `last: true`, 2 after timeoutMs (default 60000) with {"event": "timeout"}.
import { io } from 'socket.io-client';

const options = JSON.parse(process.argv[2] ?? '{}');
const out = (line) => process.stdout.write(JSON.stringify(line) + '\n');
const done = (code) => process.stdout.write('', () => process.exit(code));

const query = { stream: options.stream, token: options.token, includeMetadata: 'true' };
const socket = io(options.url, {
  query,
  transports: options.transports ?? ['polling', 'websocket'],
  reconnectionDelay: 200,
  reconnectionDelayMax: 1000,
  forceNew: true,
});

let lastId = null;
// each new connection asks for what came after the last message seen
socket.io.on('reconnect_attempt', () => {
  if (lastId !== null) socket.io.opts.query.replay = lastId;
});

socket.on('connect', () => out({ event: 'connect' }));
socket.on('disconnect', (reason) => out({ event: 'disconnect', reason }));
socket.on('connect_error', (err) => out({ event: 'connect_error', data: String(err && err.message) }));
for (const name of ['warning', 'error', 'replay_end']) {
  socket.on(name, (data) => out({ event: name, data }));
}
socket.on('message', (envelope) => {
  lastId = envelope.id;
  out({ event: 'message', data: envelope });
  if (envelope.data !== null && typeof envelope.data === 'object' && envelope.data.last) {
    socket.disconnect();
    done(0);
  }
});
setTimeout(() => {
  out({ event: 'timeout' });
  done(2);
}, options.timeoutMs ?? 60000);
