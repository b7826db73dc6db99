// Runs example.mjs -- the original documentation's example, verbatim -- against a
// bloomr server. Only its three literal values are replaced:
//   'https://api.bloomr.stream/' -> $BLOOMR_URL
//   'dwd23RWdwE'                 -> $BLOOMR_STREAM
//   'your-token-here'            -> $BLOOMR_TOKEN
// console.log / console.error are wrapped to print one JSON line per call on stdout:
//   {"console": "log" | "error", "args": [...]}
// The process exits 0 after $EXAMPLE_COUNT 'MESSAGE =>' lines (default 1) or after the
// message equal to the string $EXAMPLE_UNTIL (when set), 1 after an 'ERROR =>' line,
// or 2 after $EXAMPLE_TIMEOUT_MS (default 15000) with {"timeout": true}.
import { readFileSync, writeFileSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const literals = {
  "'https://api.bloomr.stream/'": process.env.BLOOMR_URL,
  "'dwd23RWdwE'": process.env.BLOOMR_STREAM,
  "'your-token-here'": process.env.BLOOMR_TOKEN,
};
const count = Number(process.env.EXAMPLE_COUNT ?? '1');
const until = process.env.EXAMPLE_UNTIL;
const timeoutMs = Number(process.env.EXAMPLE_TIMEOUT_MS ?? '15000');

let source = readFileSync(join(here, 'example.mjs'), 'utf8');
for (const [literal, value] of Object.entries(literals)) {
  if (!value) throw new Error(`missing the value for ${literal}`);
  const parts = source.split(literal);
  if (parts.length !== 2) throw new Error(`${literal} must occur exactly once in example.mjs`);
  source = parts.join(JSON.stringify(value));
}

const out = (line) => process.stdout.write(JSON.stringify(line) + '\n');
let messages = 0;
for (const level of ['log', 'error']) {
  console[level] = (...args) => {
    out({ console: level, args });
    if (typeof args[0] === 'string' && args[0].startsWith('MESSAGE =>')) {
      messages += 1;
      if (until !== undefined ? args[1] === until : messages >= count) process.exit(0);
    }
    if (typeof args[0] === 'string' && args[0].startsWith('ERROR =>')) process.exit(1);
  };
}
setTimeout(() => {
  out({ timeout: true });
  process.exit(2);
}, timeoutMs);

// Next to example.mjs, so that `import ... from 'socket.io-client'` resolves.
const file = join(here, `.example-run-${process.pid}.mjs`);
process.on('exit', () => rmSync(file, { force: true }));
process.on('SIGTERM', () => process.exit(143));
writeFileSync(file, source);
await import(pathToFileURL(file).href);
