// Test helpers: a gateway per test (the compat suite's launcher), a TCP proxy that can cut
// every connection through it, and small waiting utilities.

import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { Gateway } from '../../../tests/compat/lib/gateway.mjs';
import { evmActivity, randomEvmAddress } from '../../../tests/compat/lib/fixtures.mjs';

export { Gateway, evmActivity, randomEvmAddress };

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const REPO = path.resolve(HERE, '../../..');

if (!process.env.GATEWAY_BIN) {
  process.env.GATEWAY_BIN = path.join(REPO, 'target/debug/activity-gateway');
}

/** Starts a gateway; the caller disposes it. */
export async function startGateway(env = {}) {
  const gw = new Gateway({ env: { RUST_LOG: 'warn', ...env } });
  await gw.start();
  return gw;
}

/** Publishes one account-activity publication carrying `seq`; returns its position. */
export async function publishSeq(gw, address, seq, chain = 'eip155:8453') {
  const channel = `account-activity.v1.${chain}:${address}`;
  const res = await gw.expectOk('POST', '/v1/publish', {
    key: gw.publisherKey,
    body: { channel, data: { ...evmActivity(address, { chain }), seq } },
  });
  return res.json;
}

/**
 * A TCP proxy in front of `port`. `cutAll()` destroys every connection through it (both
 * sides, no close frame: what a dropped mobile link looks like to both ends).
 */
export async function startProxy(port) {
  const pairs = new Set();
  let blocked = false;
  const server = net.createServer((client) => {
    if (blocked) {
      client.destroy();
      return;
    }
    const upstream = net.connect(port, '127.0.0.1');
    const pair = { client, upstream };
    pairs.add(pair);
    const drop = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', drop);
    upstream.on('error', drop);
    client.on('close', drop);
    upstream.on('close', drop);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: server.address().port,
    get open() {
      return pairs.size;
    },
    /** While blocked, every new connection is dropped at once (the gateway looks down). */
    block(on = true) {
      blocked = on;
    },
    cutAll() {
      const n = pairs.size;
      for (const { client, upstream } of [...pairs]) {
        client.destroy();
        upstream.destroy();
      }
      pairs.clear();
      return n;
    },
    async close() {
      this.cutAll();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `predicate` until it is true; throws with `what` after `timeoutMs`. */
export async function waitFor(predicate, what, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await sleep(25);
  }
}

/** Resolves with the next `type` event of `client` that satisfies `match`. */
export function nextEvent(client, type, match = () => true, timeoutMs = 20_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no "${type}" event within ${timeoutMs} ms`));
    }, timeoutMs);
    const off = client.on(type, (e) => {
      if (match(e)) {
        clearTimeout(timer);
        off();
        resolve(e);
      }
    });
  });
}

/** Records every notification's `data.seq` per account, and every event by type. */
export function record(client) {
  const seqs = new Map();
  const events = { disconnected: [], unrecovered: [], subscribed: [], error: [], chainStatus: [] };
  client.on('notification', (n) => {
    const list = seqs.get(n.account) ?? [];
    list.push(n.data.seq);
    seqs.set(n.account, list);
  });
  for (const type of Object.keys(events)) {
    client.on(type, (e) => events[type].push(e));
  }
  return {
    seqs,
    events,
    of(account) {
      return seqs.get(account) ?? [];
    },
  };
}

export const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);
