import { io } from 'socket.io-client';

const host = 'https://api.bloomr.stream/';
const socket = io(host, {
query: {
stream: 'dwd23RWdwE', // the id of your script
token: 'your-token-here', // the token you generated in your settings
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
