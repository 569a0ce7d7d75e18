// The gateway's operator status page in Chromium: it renders the live state (a chain forced
// down shows as down with its reason, and refreshes by itself when the chain is forced up),
// and a screenshot goes to target/status-page/. Also the JSON it reads and the option that
// turns both off.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';

import { ActivityClient } from '../../dist/index.js';
import { REPO, publishSeq, randomEvmAddress, startGateway, startProxy, waitFor } from '../helpers.mjs';
import { launch } from './chromium.mjs';

const OUT = path.join(REPO, 'target/status-page');

const cleanups = [];
after(async () => {
  for (const fn of cleanups.reverse()) await fn();
});

test('the status page shows a chain forced down with its reason, and refreshes itself', async () => {
  const gw = await startGateway();
  cleanups.push(() => gw.dispose());
  await gw.heartbeat('eip155:8453');
  await gw.setChainStatus('eip155:1', 'down');

  const addr = randomEvmAddress();
  // A client that holds its acks back (both pushes stay outstanding), then vanishes without
  // acking: its outstanding pushes stop counting with its connection.
  const proxy = await startProxy(gw.port);
  cleanups.push(() => proxy.close());
  const holding = new ActivityClient({
    url: `ws://127.0.0.1:${proxy.port}/v1`,
    token: () => gw.token(),
    ackDelayMs: 60_000,
  });
  cleanups.push(() => holding.stop());
  let held = 0;
  holding.on('notification', () => held++);
  await holding.subscribe([`eip155:0:${addr}`]);
  for (const seq of [1, 2]) await publishSeq(gw, addr, seq);
  await waitFor(() => held === 2, 'both pushes');
  let status = (await gw.expectOk('GET', '/v1/status')).json;
  assert.deepEqual([status.delivery.acks, status.delivery.acksOutstanding], [0, 2]);
  proxy.block();
  proxy.cutAll();
  await holding.stop();

  const client = new ActivityClient({ url: gw.wsUrl, token: () => gw.token(), ackDelayMs: 10 });
  cleanups.push(() => client.stop());
  let received = 0;
  client.on('notification', () => received++);
  await client.subscribe([`eip155:0:${addr}`]);
  for (const seq of [3, 4]) await publishSeq(gw, addr, seq);
  await waitFor(() => received === 2, 'both pushes');

  await waitFor(async () => {
    status = (await gw.expectOk('GET', '/v1/status')).json;
    return status.delivery.acks >= 2 && status.connections.open === 1;
  }, 'the acks to be counted and the first client gone');
  const text = JSON.stringify(status);
  assert.equal(status.node.ready, true);
  assert.equal(status.node.state, 'ready');
  assert.equal(status.node.draining, false);
  assert.deepEqual(status.node.store, { kind: 'sqlite', status: 'up' });
  assert.deepEqual(status.node.broker, { kind: 'local', status: 'up' });
  assert.match(status.node.version, /^\d+\.\d+\.\d+/u);
  assert.deepEqual(status.connections, { open: 1, subscriptions: 1, channels: 1 });
  assert.equal(status.publications.total, 4);
  assert.equal(status.delivery.delivered, 4);
  assert.equal(status.delivery.acks, 2);
  assert.equal(status.delivery.acksOutstanding, 0);
  assert.equal(status.delivery.redeliveries, 0);
  assert.deepEqual(status.cluster, { mode: 'single', nodes: null });
  const chain = (id) => status.chains.find((c) => c.chainId === id);
  assert.deepEqual(
    [chain('eip155:1').status, chain('eip155:1').reasonCode, chain('eip155:1').reason],
    ['down', 'operator_override', 'forced down by an operator'],
  );
  assert.equal(chain('eip155:8453').status, 'up');
  assert.equal(chain('eip155:8453').reasonCode, 'fresh');
  assert.equal(chain('eip155:137').reasonCode, 'never_seen');
  for (const secret of [addr, gw.publisherKey, gw.adminKey, gw.secret, gw.tmpdir]) {
    assert.ok(!text.includes(secret), `/v1/status must not show ${secret}`);
  }

  const browser = await launch();
  cleanups.push(() => browser.close());
  const page = await browser.context.newPage();
  await page.setViewportSize({ width: 1100, height: 900 });
  const res = await page.goto(`${gw.httpBase}/status`);
  assert.equal(res.status(), 200);
  const row = page.locator('tr[data-chain="eip155:1"]');
  await row.waitFor({ timeout: 15_000 });
  assert.equal(await row.locator('td.status').textContent(), 'down');
  assert.equal(await row.locator('td.reason').textContent(), 'forced down by an operator');
  assert.equal(await page.locator('tr[data-chain="eip155:8453"] td.status').textContent(), 'up');
  assert.equal(await page.locator('#node-state').textContent(), 'ready');
  assert.equal(await page.locator('#connections').textContent(), '1');
  assert.equal(await page.locator('#pub-total').textContent(), '4');
  assert.equal(await page.locator('#acks-outstanding').textContent(), '0');
  assert.equal(await page.locator('#store').textContent(), 'sqlite up');
  assert.equal(await page.locator('#error').textContent(), '');
  fs.mkdirSync(OUT, { recursive: true });
  const shot = path.join(OUT, 'status.png');
  await page.screenshot({ path: shot, fullPage: true });
  assert.ok(fs.statSync(shot).size > 10_000, `${shot} was written`);

  // No reload: the page polls /v1/status by itself.
  await gw.setChainStatus('eip155:1', 'up');
  await page
    .locator('tr[data-chain="eip155:1"][data-status="up"] td.reason', { hasText: 'forced up by an operator' })
    .waitFor({ timeout: 10_000 });
});

test('in a cluster the page lists the nodes seen', async () => {
  const prefix = `status-${process.pid}-${Date.now()}`;
  const env = { GATEWAY__BROKER__URL: 'nats://127.0.0.1:4222', GATEWAY__BROKER__SUBJECT_PREFIX: prefix };
  const a = await startGateway(env);
  cleanups.push(() => a.dispose());
  const b = await startGateway(env);
  cleanups.push(() => b.dispose());
  let status;
  await waitFor(async () => {
    status = (await a.expectOk('GET', '/v1/status')).json;
    return status.cluster.nodes.length === 2;
  }, 'both nodes to be seen', 15_000);
  assert.equal(status.cluster.mode, 'nats');
  assert.deepEqual(status.node.broker, { kind: 'nats', status: 'up' });
  const [self, other] = status.cluster.nodes;
  assert.equal(self.self, true);
  assert.equal(other.self, false);
  assert.match(other.id, /^[0-9a-f]{8}$/u);
  let fromB;
  await waitFor(async () => {
    fromB = (await b.expectOk('GET', '/v1/status')).json.cluster.nodes;
    return fromB.length === 2;
  }, 'the second node to see the first', 15_000);
  assert.deepEqual(fromB.map((n) => [n.id, n.self]), [[other.id, true], [self.id, false]]);

  const browser = await launch();
  cleanups.push(() => browser.close());
  const page = await browser.context.newPage();
  await page.goto(`${a.httpBase}/status`);
  await page.locator(`#cluster li[data-node="${other.id}"]`).waitFor({ timeout: 10_000 });
  assert.match(await page.locator(`#cluster li[data-node="${self.id}"]`).textContent(), /\(this node\)/u);

  // A node that stops announcing is dropped from the list.
  await b.stop({ signal: 'SIGKILL' });
  await waitFor(async () => {
    status = (await a.expectOk('GET', '/v1/status')).json;
    return status.cluster.nodes.length === 1;
  }, 'the killed node to be forgotten', 20_000);
});

test('status.enabled = false removes the page and its JSON', async () => {
  const gw = await startGateway({ GATEWAY__STATUS__ENABLED: 'false' });
  cleanups.push(() => gw.dispose());
  for (const p of ['/status', '/v1/status']) {
    const res = await gw.request('GET', p);
    assert.equal(res.status, 404, `${p}: ${res.text}`);
    assert.equal(res.json.error, 'not_found');
  }
});
