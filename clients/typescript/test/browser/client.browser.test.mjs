// The built client in a real browser: a page served by this test loads dist/index.js,
// subscribes with positions in localStorage, and lists the pushes it receives. The test
// publishes and asserts what the page shows, across a page reload.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { publishSeq, randomEvmAddress, startGateway } from '../helpers.mjs';
import { launch } from './chromium.mjs';

const DIST = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../dist');

const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>wallet</title></head>
<body>
<p id="state">loading</p>
<ul id="pushes"></ul>
<ul id="events"></ul>
<script type="module">
import { ActivityClient, LocalStoragePositionStore } from '/dist/index.js';
const q = new URLSearchParams(location.search);
const add = (list, text) => {
  const li = document.createElement('li');
  li.textContent = text;
  document.getElementById(list).append(li);
};
const client = new ActivityClient({
  url: q.get('ws'),
  token: () => fetch('/token').then((r) => r.text()),
  store: new LocalStoragePositionStore(),
});
client.on('notification', (n) => add('pushes', n.account + ' #' + n.data.seq));
client.on('chainStatus', (e) => add('events', 'chain ' + e.status + ': ' + e.chainIds.join(',')));
client.on('unrecovered', (e) => add('events', 'refresh ' + e.account + ': ' + e.reason));
client.on('subscribed', (s) => {
  const r = Object.entries(s.recovery).map(([a, x]) => a + ' recovered=' + x.recovered + ' replayed=' + x.replayed);
  add('events', 'subscribed' + (r.length ? ' ' + r.join(' ') : ''));
});
client.on('error', (e) => add('events', 'error ' + e.code + ': ' + e.message));
client.subscribe([q.get('account')]).then(
  () => { document.getElementById('state').textContent = 'subscribed'; },
  (e) => { document.getElementById('state').textContent = 'failed: ' + e.message; },
);
</script>
</body></html>`;

const cleanups = [];
after(async () => {
  for (const fn of cleanups.reverse()) await fn();
});

async function serve(gw) {
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    if (url.pathname === '/') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end(PAGE);
    } else if (url.pathname === '/token') {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end(gw.token());
    } else if (url.pathname.startsWith('/dist/') && !url.pathname.includes('..')) {
      const file = path.join(DIST, url.pathname.slice('/dist/'.length));
      if (!fs.existsSync(file)) {
        res.writeHead(404);
        res.end();
        return;
      }
      res.writeHead(200, { 'content-type': 'text/javascript; charset=utf-8' });
      res.end(fs.readFileSync(file));
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => new Promise((resolve) => server.close(resolve)));
  return `http://127.0.0.1:${server.address().port}`;
}

const items = (page, list) => page.locator(`#${list} li`).allTextContents();

test('a page in Chromium subscribes, shows each push once, and resumes after a reload', async () => {
  const gw = await startGateway();
  cleanups.push(() => gw.dispose());
  const origin = await serve(gw);
  const browser = await launch();
  cleanups.push(() => browser.close());
  const page = await browser.context.newPage();

  const addr = randomEvmAddress();
  const account = `eip155:0:${addr}`;
  const url = `${origin}/?ws=${encodeURIComponent(gw.wsUrl)}&account=${encodeURIComponent(account)}`;
  await page.goto(url);
  await page.locator('#state', { hasText: 'subscribed' }).waitFor({ timeout: 15_000 });

  await gw.heartbeat('eip155:8453');
  for (const seq of [1, 2, 3]) await publishSeq(gw, addr, seq);
  await page.waitForFunction(() => document.querySelectorAll('#pushes li').length >= 3, null, { timeout: 15_000 });
  await page.locator('#events li', { hasText: 'chain up: eip155:8453' }).waitFor({ timeout: 15_000 });
  assert.deepEqual(await items(page, 'pushes'), [1, 2, 3].map((n) => `${account} #${n}`));
  const stored = await page.evaluate(
    (key) => JSON.parse(localStorage.getItem(key)),
    `activity-gateway:position:account-activity.v1.${account}`,
  );
  assert.equal(typeof stored.epoch, 'string');

  // Published while the page is gone; the reloaded page resumes from localStorage.
  await page.goto('about:blank');
  await publishSeq(gw, addr, 4);
  await page.goto(url);
  await page.locator('#state', { hasText: 'subscribed' }).waitFor({ timeout: 15_000 });
  await page.waitForFunction(() => document.querySelectorAll('#pushes li').length >= 1, null, { timeout: 15_000 });
  await publishSeq(gw, addr, 5);
  await page.waitForFunction(() => document.querySelectorAll('#pushes li').length >= 2, null, { timeout: 15_000 });
  await new Promise((r) => setTimeout(r, 500));
  assert.deepEqual(await items(page, 'pushes'), [4, 5].map((n) => `${account} #${n}`));
  const events = await items(page, 'events');
  assert.ok(
    events.includes(`subscribed ${account} recovered=true replayed=1`),
    `events shown: ${JSON.stringify(events)}`,
  );
  assert.deepEqual(events.filter((e) => e.startsWith('error')), []);
});
