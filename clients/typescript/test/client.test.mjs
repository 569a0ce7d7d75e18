// The client against the spawned gateway: exactly-once delivery across TCP cuts, a kill -9
// and restart, a page reload, token expiry, an unrecoverable stream, stop() and a drain.

import assert from 'node:assert/strict';
import { after, test } from 'node:test';

import { ActivityClient, MemoryPositionStore } from '../dist/index.js';
import {
  nextEvent,
  publishSeq,
  randomEvmAddress,
  range,
  record,
  sleep,
  startGateway,
  startProxy,
  waitFor,
} from './helpers.mjs';

const cleanups = [];
after(async () => {
  for (const fn of cleanups.reverse()) await fn();
});

async function gateway(env) {
  const gw = await startGateway(env);
  cleanups.push(() => gw.dispose());
  return gw;
}

function client(opts) {
  const c = new ActivityClient({ backoff: { initialMs: 50, maxMs: 400 }, ...opts });
  cleanups.push(() => c.stop());
  return c;
}

test('exactly once and in order per account across random TCP cuts', async () => {
  // An ack timeout shorter than the client's ack delay: the gateway re-sends most pushes
  // before their ack arrives, so the client sees duplicates to drop as well as cuts.
  const gw = await gateway({ GATEWAY__DELIVERY__ACK_TIMEOUT: '150ms' });
  const proxy = await startProxy(gw.port);
  cleanups.push(() => proxy.close());
  const c = client({ url: `ws://127.0.0.1:${proxy.port}/v1`, token: () => gw.token(), ackDelayMs: 250 });
  const rec = record(c);
  const addrs = [randomEvmAddress(), randomEvmAddress(), randomEvmAddress()];
  // One wildcard subscription (every EVM chain) and one with two concrete accounts.
  await c.subscribe([`eip155:0:${addrs[0]}`]);
  await c.subscribe([`eip155:8453:${addrs[1]}`, `eip155:8453:${addrs[2]}`]);
  const accounts = [`eip155:0:${addrs[0]}`, `eip155:8453:${addrs[1]}`, `eip155:8453:${addrs[2]}`];

  const PER_ACCOUNT = 60;
  let cutting = true;
  let cuts = 0;
  const cutter = (async () => {
    while (cutting) {
      await sleep(60 + Math.random() * 240);
      if (cutting && proxy.cutAll() > 0) cuts += 1;
    }
  })();
  for (let seq = 1; seq <= PER_ACCOUNT; seq++) {
    for (const a of addrs) await publishSeq(gw, a, seq);
  }
  await sleep(500);
  cutting = false;
  await cutter;

  await waitFor(
    () => accounts.every((a) => rec.of(a).length >= PER_ACCOUNT),
    `${PER_ACCOUNT} notifications per account (have ${accounts.map((a) => rec.of(a).length)})`,
    30_000,
  );
  // Late duplicates would arrive now.
  await sleep(700);
  for (const a of accounts) {
    assert.deepEqual(rec.of(a), range(1, PER_ACCOUNT), `notifications of ${a}`);
  }
  assert.ok(cuts >= 3, `the proxy cut the connection ${cuts} times (want >= 3)`);
  const drops = rec.events.disconnected.filter((d) => d.code === 1006);
  assert.ok(drops.length >= 3, `saw ${drops.length} dropped connections`);
  assert.ok(drops.every((d) => d.action === 'reconnect' && d.name === 'connection_lost'));
  assert.deepEqual(rec.events.unrecovered, []);
  const stats = c.stats;
  assert.equal(stats.notifications, 3 * PER_ACCOUNT);
  assert.ok(stats.duplicates > 0, `duplicates dropped: ${stats.duplicates}`);
  assert.ok(stats.reconnects >= 3, `reconnects: ${stats.reconnects}`);
});

test('kill -9 of the gateway and a restart on the same SQLite file: nothing lost, nothing twice', async () => {
  const gw = await gateway();
  const proxy = await startProxy(gw.port);
  cleanups.push(() => proxy.close());
  // Acks held back: the gateway dies with every push of this test unacknowledged.
  const c = client({
    url: `ws://127.0.0.1:${proxy.port}/v1`,
    token: () => gw.token(),
    ackDelayMs: 60_000,
    ackBatchSize: 1000,
  });
  const rec = record(c);
  const addr = randomEvmAddress();
  const account = `eip155:0:${addr}`;
  await c.subscribe([account]);
  for (const seq of range(1, 10)) await publishSeq(gw, addr, seq);
  await waitFor(() => rec.of(account).length === 10, 'the first 10 notifications');
  const before = c.position(account);

  // The client cannot get through until the restarted gateway has new publications for it.
  proxy.block();
  await gw.stop({ signal: 'SIGKILL' });
  await nextEvent(c, 'disconnected', (d) => d.code === 1006);
  await gw.start();
  for (const seq of range(11, 15)) await publishSeq(gw, addr, seq);
  const resumed = nextEvent(c, 'subscribed', (s) => s.reconnect);
  proxy.block(false);
  assert.deepEqual((await resumed).recovery[account], { recovered: true, replayed: 5 });
  for (const seq of range(16, 20)) await publishSeq(gw, addr, seq);
  await waitFor(() => rec.of(account).length >= 20, '20 notifications');
  await sleep(500);
  assert.deepEqual(rec.of(account), range(1, 20));
  const afterPos = c.position(account);
  assert.equal(afterPos.epoch, before.epoch, 'the epoch survives the crash');
  assert.equal(afterPos.offset, before.offset + 10);
  assert.deepEqual(rec.events.unrecovered, []);
});

test('a page reload: a new client with the same stored positions gets only what it missed', async () => {
  const gw = await gateway();
  const proxy = await startProxy(gw.port);
  cleanups.push(() => proxy.close());
  const store = new MemoryPositionStore();
  const addr = randomEvmAddress();
  const account = `eip155:0:${addr}`;

  // The first page: no ack ever leaves it, and it vanishes without a close frame.
  const first = client({ url: `ws://127.0.0.1:${proxy.port}/v1`, token: () => gw.token(), store, ackDelayMs: 60_000, ackBatchSize: 1000 });
  const rec1 = record(first);
  await first.subscribe([account]);
  for (const seq of range(1, 5)) await publishSeq(gw, addr, seq);
  await waitFor(() => rec1.of(account).length === 5, 'the first page to show 5');
  proxy.cutAll();
  await first.stop();

  for (const seq of range(6, 8)) await publishSeq(gw, addr, seq);

  const second = client({ url: gw.wsUrl, token: () => gw.token(), store });
  const rec2 = record(second);
  const subscribed = nextEvent(second, 'subscribed');
  await second.subscribe([account]);
  assert.deepEqual((await subscribed).recovery[account], { recovered: true, replayed: 3 });
  await publishSeq(gw, addr, 9);
  await waitFor(() => rec2.of(account).length >= 4, 'the reloaded page to show 4');
  await sleep(500);
  assert.deepEqual(rec1.of(account), range(1, 5));
  assert.deepEqual(rec2.of(account), range(6, 9));
});

test('token expiry: 401 at the upgrade and close 4001 both call the token provider again', async () => {
  const gw = await gateway();
  const tokens = [];
  const c = client({
    url: gw.wsUrl,
    token: () => {
      // The first token is already expired (beyond the gateway's 5 s leeway); the next ones
      // live 2 s, so the gateway closes each connection with 4001.
      const t = gw.token({ ttlSeconds: tokens.length === 0 ? -60 : 2 });
      tokens.push(t);
      return t;
    },
  });
  const rec = record(c);
  const addr = randomEvmAddress();
  const account = `eip155:8453:${addr}`;
  await c.subscribe([account]);
  const refused = rec.events.error.find((e) => e.code === 'connect_refused');
  assert.ok(refused, 'the expired first token is reported');
  assert.equal(refused.gatewayCode, 'token_expired');
  assert.equal(refused.httpStatus, 401);
  assert.equal(rec.events.disconnected[0].action, 'refresh-token');

  await publishSeq(gw, addr, 1);
  const expired = await nextEvent(c, 'disconnected', (d) => d.code === 4001, 10_000);
  assert.equal(expired.name, 'token_expired');
  assert.equal(expired.action, 'refresh-token');
  await nextEvent(c, 'subscribed', (s) => s.reconnect);
  await publishSeq(gw, addr, 2);
  await waitFor(() => rec.of(account).length >= 2, 'both notifications');
  assert.deepEqual(rec.of(account), [1, 2]);
  assert.ok(tokens.length >= 3, `the token provider was called ${tokens.length} times`);
  assert.equal(new Set(tokens).size, tokens.length, 'every connection got a fresh token');
});

test('a stream that cannot be recovered is reported with its reason, then delivered live', async () => {
  const gw = await gateway();
  const store = new MemoryPositionStore();
  const addr = randomEvmAddress();
  const account = `eip155:8453:${addr}`;
  // A position from another deployment's history.
  store.save(`account-activity.v1.${account}`, { epoch: '00000000deadbeef', offset: 7 });
  const c = client({ url: gw.wsUrl, token: () => gw.token(), store });
  const rec = record(c);
  await c.subscribe([account]);
  assert.equal(rec.events.unrecovered.length, 1);
  const u = rec.events.unrecovered[0];
  assert.equal(u.account, account);
  assert.equal(u.reason, 'epoch_changed');
  assert.notEqual(u.position.epoch, '00000000deadbeef');
  assert.deepEqual(store.load(`account-activity.v1.${account}`), u.position, 'the store starts over');
  await publishSeq(gw, addr, 1);
  await waitFor(() => rec.of(account).length === 1, 'the live notification');
});

test('stop() closes the connection and nothing reconnects', async () => {
  const gw = await gateway();
  const c = client({ url: gw.wsUrl, token: () => gw.token() });
  const rec = record(c);
  await c.subscribe([`eip155:1:${randomEvmAddress()}`]);
  await c.stop();
  assert.equal(c.state, 'stopped');
  assert.deepEqual(rec.events.disconnected.map((d) => [d.code, d.action]), [[1000, 'stop']]);
  await sleep(600);
  assert.equal(rec.events.disconnected.length, 1, 'no further connection');
  await assert.rejects(c.subscribe([`eip155:1:${randomEvmAddress()}`]), { code: 'stopped' });
});

test('a drain (SIGTERM): chains down, close 1012, resumed on the restarted node', async () => {
  const gw = await gateway({ GATEWAY__SERVER__DRAIN_WINDOW: '3s' });
  await gw.heartbeat('eip155:8453');
  const c = client({ url: gw.wsUrl, token: () => gw.token() });
  const rec = record(c);
  const addr = randomEvmAddress();
  const account = `eip155:8453:${addr}`;
  await c.subscribe([account]);
  for (const seq of range(1, 3)) await publishSeq(gw, addr, seq);
  await waitFor(() => rec.of(account).length === 3, 'the first 3 notifications');

  const restarting = nextEvent(c, 'disconnected', (d) => d.code === 1012, 15_000);
  const stopped = gw.stop();
  const restart = await restarting;
  assert.deepEqual([restart.name, restart.action], ['restart', 'reconnect']);
  assert.ok(
    rec.events.chainStatus.some((e) => e.status === 'down' && e.chainIds.includes('eip155:8453')),
    'the chain went down before the close',
  );
  await stopped;
  await gw.start();
  await nextEvent(c, 'subscribed', (s) => s.reconnect, 15_000);
  for (const seq of range(4, 5)) await publishSeq(gw, addr, seq);
  await waitFor(() => rec.of(account).length >= 5, '5 notifications');
  await sleep(300);
  assert.deepEqual(rec.of(account), range(1, 5));
});
