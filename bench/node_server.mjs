// The Node peer: a socket.io 4.8 server that only broadcasts (no history, no auth).
//
//   node bench/node_server.mjs [--port 0] [--host 127.0.0.1]
//
// Clients connect to /socket.io/ (websocket or polling) and join the room named by their
// `stream` query parameter ("bench" when absent). POST /publish?room=R with the body
// bloomr's publish endpoint takes — a JSON array of {data} (or one {data}) — emits
// `message` with each `data` to the room, in order, and answers 201 {count}.
// Prints "listening on http://HOST:PORT" once it is ready.
import http from 'node:http';
import { Server } from 'socket.io';

function option(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

const host = option('host', '127.0.0.1');
const port = Number(option('port', '0'));

function reply(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

const httpServer = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://x');
  if (req.method !== 'POST' || url.pathname !== '/publish') {
    reply(res, 404, { error: { code: 'not_found', message: 'POST /publish only' } });
    return;
  }
  const chunks = [];
  req.on('data', (chunk) => chunks.push(chunk));
  req.on('end', () => {
    let items;
    try {
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      items = Array.isArray(body) ? body : [body];
    } catch {
      reply(res, 400, { error: { code: 'invalid_json', message: 'body is not JSON' } });
      return;
    }
    const room = io.to(url.searchParams.get('room') || 'bench');
    for (const item of items) room.emit('message', item.data);
    reply(res, 201, { count: items.length });
  });
});
httpServer.keepAliveTimeout = 60_000;

// --recovery: socket.io's connection state recovery, whose broadcasts carry an offset as
// their last argument (as bloomr's do: SPEC's resume) and are kept for 2 minutes
const recovery = process.argv.includes('--recovery')
  ? { connectionStateRecovery: { maxDisconnectionDuration: 2 * 60 * 1000, skipMiddlewares: true } }
  : {};

const io = new Server(httpServer, {
  ...recovery,
  transports: ['websocket', 'polling'],
  perMessageDeflate: false,
  httpCompression: false,
  cors: { origin: '*' },
  maxHttpBufferSize: 10 * 1024 * 1024,
});

io.on('connection', (socket) => {
  const room = socket.handshake.query.stream || socket.handshake.auth?.stream || 'bench';
  socket.join(String(room));
});

httpServer.listen(port, host, () => {
  const { port: bound } = httpServer.address();
  console.log(`listening on http://${host}:${bound}`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    io.close();
    httpServer.close();
    process.exit(0);
  });
}
