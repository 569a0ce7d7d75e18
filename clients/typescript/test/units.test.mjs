// The parts without a gateway: close-code coverage against docs/protocol.md, the backoff's
// bounds, the localStorage adapter, account validation, an HTTP refusal with Retry-After
// (from a stand-in server: the gateway itself sends Retry-After only on publish).

import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { test } from 'node:test';

import {
  ActivityClient,
  CLOSE_CODES,
  LocalStoragePositionStore,
  backoffDelay,
  closeCodeInfo,
} from '../dist/index.js';
import { REPO } from './helpers.mjs';

test('every close code of docs/protocol.md is mapped', () => {
  const doc = fs.readFileSync(path.join(REPO, 'docs/protocol.md'), 'utf8');
  const section = doc.slice(doc.indexOf('## Close codes'));
  const codes = [...section.matchAll(/^\| (\d{4}) \|/gmu)].map((m) => Number(m[1]));
  assert.ok(codes.length >= 9, `found ${codes.length} codes in the table`);
  for (const code of codes) assert.ok(CLOSE_CODES[code], `close code ${code} has an entry`);
  assert.equal(closeCodeInfo(4001).action, 'refresh-token');
  assert.equal(closeCodeInfo(4010).action, 'reconnect');
  assert.equal(closeCodeInfo(1008).clientFault, true);
  assert.ok(closeCodeInfo(1008).minDelayMs >= 1000);
  assert.equal(closeCodeInfo(4999).action, 'reconnect', 'unknown codes reconnect');
});

test('backoff is full jitter under an exponential ceiling', () => {
  const opts = { initialMs: 100, maxMs: 1000 };
  assert.equal(backoffDelay(0, opts, () => 0), 0);
  assert.equal(backoffDelay(0, opts, () => 0.999), 99);
  assert.equal(backoffDelay(3, opts, () => 0.5), 400);
  assert.equal(backoffDelay(20, opts, () => 0.999), 999);
});

test('the localStorage adapter round-trips positions and ignores garbage', () => {
  const map = new Map();
  const storage = { getItem: (k) => map.get(k) ?? null, setItem: (k, v) => map.set(k, v) };
  const store = new LocalStoragePositionStore({ storage, prefix: 'p:' });
  assert.equal(store.load('c'), undefined);
  store.save('c', { epoch: 'e1', offset: 4 });
  assert.equal(map.get('p:c'), '{"epoch":"e1","offset":4}');
  assert.deepEqual(store.load('c'), { epoch: 'e1', offset: 4 });
  map.set('p:c', 'not json');
  assert.equal(store.load('c'), undefined);
  assert.throws(() => new LocalStoragePositionStore(), /no localStorage/u);
});

test('subscribe refuses what is not a CAIP-10 account, before connecting', async () => {
  const c = new ActivityClient({ url: 'ws://127.0.0.1:9/v1', token: () => 't' });
  await assert.rejects(c.subscribe(['0xabc']), { code: 'invalid_account', accounts: ['0xabc'] });
  assert.equal(c.state, 'idle');
  await c.stop();
});

test('an HTTP refusal of the upgrade is reported and its Retry-After is honoured', async () => {
  let upgrades = 0;
  const server = http.createServer();
  server.on('upgrade', (req, socket) => {
    upgrades += 1;
    const body = JSON.stringify({ error: 'draining', message: 'The node is restarting.' });
    socket.end(
      `HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 2\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n${body}`,
    );
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const c = new ActivityClient({
    url: `ws://127.0.0.1:${server.address().port}/v1`,
    token: () => 't',
    backoff: { initialMs: 10, maxMs: 10 },
  });
  const errors = [];
  c.on('error', (e) => errors.push(e));
  const disconnected = new Promise((resolve) => c.on('disconnected', resolve));
  c.start();
  const d = await disconnected;
  assert.equal(d.http.status, 503);
  assert.equal(d.http.error, 'draining');
  assert.equal(d.http.retryAfterMs, 2000);
  assert.ok(d.reconnectInMs >= 2000, `waits ${d.reconnectInMs} ms`);
  assert.equal(errors[0].code, 'connect_refused');
  assert.equal(errors[0].gatewayCode, 'draining');
  assert.equal(errors[0].httpStatus, 503);
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(upgrades, 1, 'no second attempt before Retry-After');
  await c.stop();
  await new Promise((resolve) => server.close(resolve));
});
