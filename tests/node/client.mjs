// A socket.io-client 4 subscriber for the tests, configured by one JSON argument:
//   {url, query?, auth?, transports?, count?, stopOnField?, timeoutMs?, reconnect?,
//    reconnectDelayMs?}
// Prints one JSON line per event on stdout:
//   {"event": "connect", "recovered": bool} | {"event": "message", "data": ...} | {"event": "warning", "data": ...}
//   {"event": "error", "data": ...} | {"event": "replay_end", "data": ...}
//   {"event": "connect_error", "data": "..."} | {"event": "disconnect", "reason": "..."}
// Exits 0 once `count` messages arrived (when count is given), or after a message whose
// data (or, with includeMetadata, whose envelope's data) has a truthy `stopOnField`,
// or after a disconnect (unless `reconnect`: then socket.io-client reconnects by itself
// and every connect is printed); 1 after a connect_error (unless `reconnect`); 2 after
// `timeoutMs` (default 15000) with {"event": "timeout"}.
import { io } from 'socket.io-client';

const options = JSON.parse(process.argv[2] ?? '{}');
const out = (line) => process.stdout.write(JSON.stringify(line) + '\n');
const done = (code) => process.stdout.write('', () => process.exit(code));

const socket = io(options.url, {
  query: options.query,
  auth: options.auth,
  transports: options.transports ?? ['polling', 'websocket'],
  reconnection: options.reconnect ?? false,
  reconnectionDelay: options.reconnectDelayMs ?? 1000,
  reconnectionDelayMax: options.reconnectDelayMs ?? 5000,
  forceNew: true,
});

let messages = 0;
let finishing = false; // our own disconnect is not reported
socket.on('connect', () => out({ event: 'connect', recovered: socket.recovered }));
socket.on('message', (data) => {
  out({ event: 'message', data });
  messages += 1;
  const field = options.stopOnField;
  const stop = field !== undefined && data !== null && typeof data === 'object'
    && (data[field] || (data.data !== null && typeof data.data === 'object' && data.data[field]));
  if (stop || (options.count !== undefined && messages >= options.count)) {
    finishing = true;
    socket.disconnect();
    done(0);
  }
});
for (const name of ['warning', 'error', 'replay_end']) {
  socket.on(name, (data) => out({ event: name, data }));
}
socket.on('connect_error', (err) => {
  out({ event: 'connect_error', data: String(err && err.message) });
  if (!options.reconnect) done(1);
});
socket.on('disconnect', (reason) => {
  if (finishing) return;
  out({ event: 'disconnect', reason });
  if (!options.reconnect) done(0);
});
setTimeout(() => {
  out({ event: 'timeout' });
  done(2);
}, options.timeoutMs ?? 15000);
