// Ready-to-paste client code for a new token: the original documentation's JavaScript
// example, and the Python client, both filled in with this server, a stream and the token.

const quote = (value) => JSON.stringify(value).slice(1, -1).replaceAll("'", "\\'");

export function javascriptSnippet(host, stream, token) {
  return `import { io } from 'socket.io-client';

const host = '${quote(host)}';
const socket = io(host, {
  query: {
    stream: '${quote(stream)}', // the id of your script
    token: '${quote(token)}', // the token you generated in your settings
  },
});

// event on connect
socket.on('connect', () => {
  console.log('Connected to', host);
});

// event on error
socket.on('error', arg => {
  console.error('ERROR =>', arg);
});

// event on message
socket.on('message', arg => {
  console.error('MESSAGE =>', arg);
});
`;
}

export function pythonSnippet(host, stream, token) {
  const [h, s, t] = [host, stream, token].map((value) => JSON.stringify(value));
  return `from bloomr.client import subscribe_sync

for message in subscribe_sync(${h}, ${s}, ${t}):
    print(message.channel, message.data)
`;
}
