// The compatibility scenarios, run once per installed client version.
//
// Every test spawns its own gateway (GATEWAY_BIN) and drives the REAL
// @metamask/core-backend services against it. Assertions are made on what
// the client surfaces through its messenger events (exact payload equality),
// plus the documented wire envelope where it matters for the client.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { isDeepStrictEqual } from 'node:util';

import {
  activityChannel,
  evmActivity,
  ohlcvBar,
  randomEvmAddress,
  randomSolanaAddress,
  solanaActivity,
  USDC_BASE_CAIP19,
} from './fixtures.mjs';
import { Gateway, mintToken } from './gateway.mjs';
import { createWallet, evmAccount, loadClient, SOLANA_MAINNET, solanaAccount } from './client.mjs';

const EV = {
  balance: 'AccountActivityService:balanceUpdated',
  tx: 'AccountActivityService:transactionUpdated',
  status: 'AccountActivityService:statusChanged',
  conn: 'BackendWebSocketService:connectionStateChanged',
  bar: 'OHLCVService:barUpdated',
  ohlcvError: 'OHLCVService:subscriptionError',
};

// Short reconnect backoff (constructor options of BackendWebSocketService in
// 4.1.0, 8.1.2 and 11.0.0; defaults are 10 s / 60 s).
const SERVICE_OPTIONS = { reconnectDelay: 250, maxReconnectDelay: 2000 };

const WAIT = 15_000;

/** A wallet with a fresh gateway; tears both down; enriches failures. */
async function scenario(client, opts, body) {
  const gateway = new Gateway({ env: opts.gatewayEnv });
  let wallet;
  try {
    await gateway.start();
    for (const chainId of opts.upBefore ?? []) {
      await gateway.heartbeat(chainId);
    }
    const evm = opts.evm ?? randomEvmAddress();
    const sol = opts.sol ?? randomSolanaAddress();
    const accounts = [evmAccount(evm), solanaAccount(sol)];
    wallet = createWallet(client, {
      url: gateway.wsUrl,
      getToken: opts.getToken ?? (() => gateway.token({ sub: `user-${evm.slice(2, 10)}` })),
      accounts: client.info.accountGroups ? accounts : [accounts[0]],
      serviceOptions: SERVICE_OPTIONS,
    });
    const ctx = { gateway, wallet, rec: wallet.recorder, evm, sol, client };
    await body(ctx);
  } catch (error) {
    const details = [
      `client @metamask/core-backend ${client.info.coreBackend} (messenger ${client.messengerVersion})`,
      wallet ? `wire transcript (client side, last frames):\n${wallet.recorder.transcript()}` : '',
      wallet ? `messenger events:\n${wallet.recorder.eventLog()}` : '',
      `gateway stderr tail:\n${gateway.stderrTail(40)}`,
    ].join('\n\n');
    // The reporter prints `stack` (which embeds the original message and,
    // for assertions, the actual/expected diff): append the context there.
    if (error && typeof error === 'object') {
      error.stack = `${error.stack ?? error.message}\n\n${details}`;
      throw error;
    }
    throw new Error(`${String(error)}\n\n${details}`);
  } finally {
    wallet?.destroy();
    await gateway.dispose();
    await wallet?.settle();
  }
}

function expectedChannels(ctx) {
  const channels = [activityChannel('eip155', '0', ctx.evm)];
  if (ctx.client.info.accountGroups) {
    channels.push(activityChannel('solana', '0', ctx.sol));
  }
  return channels;
}

/**
 * Wait until the client sent a subscribe for exactly `channels` and the
 * gateway answered it; returns {request, reply}.
 */
async function waitSubscribed(ctx, channels, { after = 0 } = {}) {
  const { rec, wallet } = ctx;
  const request = await rec.waitFor(
    () =>
      rec
        .sent((m) => m.event === 'subscribe')
        .find((f) => f.t >= after && isDeepStrictEqual([...f.json.data.channels].sort(), [...channels].sort())),
    `client sends subscribe for ${JSON.stringify(channels)}`,
    WAIT,
  );
  const { requestId } = request.json.data;
  const reply = await rec.waitFor(
    () => rec.received((m) => m?.data?.requestId === requestId)[0],
    `a reply carrying requestId ${requestId} (client waits ${30_000} ms, then force-reconnects)`,
    WAIT,
  );
  // Client-side outcome: the real client stored the subscription.
  await rec.waitFor(
    () => channels.every((c) => wallet.backend.channelHasSubscription(c)),
    `client registers the subscription for ${JSON.stringify(channels)} (reply was ${reply.raw})`,
    WAIT,
  );
  return { request, reply };
}

function assertSubscribedReply(reply, channels) {
  const msg = reply.json;
  assert.equal(msg.event, 'subscribed', `reply event name (reply: ${reply.raw})`);
  assert.equal(typeof msg.data.subscriptionId, 'string', `subscriptionId must be a string (reply: ${reply.raw})`);
  assert.ok(msg.data.subscriptionId && msg.data.subscriptionId !== '0', 'subscriptionId must be truthy and not "0"');
  assert.deepEqual([...msg.data.succeeded].sort(), [...channels].sort(), 'succeeded lists every channel as sent');
  assert.deepEqual(msg.data.failed, [], 'failed is empty');
  assert.equal('channel' in msg, false, 'a reply carries no top-level channel (8.x/11.x take it for a push)');
  assert.equal('channel' in msg.data, false, 'a reply carries no data.channel');
}

/** Wait for the client to surface one activity message; assert exact payloads. */
async function expectActivity(ctx, msg) {
  const { rec } = ctx;
  const tx = await rec.waitFor(
    () => rec.eventsNamed(EV.tx).find((p) => p?.id === msg.tx.id),
    `${EV.tx} for tx ${msg.tx.id} (address ${msg.address})`,
    WAIT,
  );
  assert.deepStrictEqual(tx, msg.tx, `${EV.tx} payload equals the published tx`);
  const expectedBalance = { address: msg.address, chain: msg.tx.chain, updates: msg.updates };
  const balance = rec.eventsNamed(EV.balance).filter((p) => isDeepStrictEqual(p?.updates, msg.updates));
  assert.equal(balance.length, 1, `exactly one ${EV.balance} for tx ${msg.tx.id}`);
  assert.deepStrictEqual(balance[0], expectedBalance, `${EV.balance} payload`);
}

function countTx(rec, txId) {
  return rec.eventsNamed(EV.tx).filter((p) => p?.id === txId).length;
}

/**
 * statusChanged events that say something (4.x forwards an `up` with an empty
 * chainIds list verbatim; that carries no information and is skipped).
 */
function statusEvents(rec) {
  return rec.eventsNamed(EV.status).filter((p) => !(Array.isArray(p?.chainIds) && p.chainIds.length === 0));
}

/** Wait for the statusChanged number `index` (0-based) and return it. */
async function nextStatus(rec, index, what, timeoutMs = WAIT) {
  return rec.waitFor(() => statusEvents(rec)[index], what, timeoutMs);
}

/**
 * Compare a statusChanged payload exactly. chainIds is a set: compared sorted.
 * 4.x forwards the server's notification timestamp; 8.x/11.x debounce and
 * publish {chainIds, status} only (their own disconnect event adds timestamp).
 */
function assertStatus(ctx, payload, { chainIds, status }, label) {
  const normalized = { ...payload, chainIds: [...(payload.chainIds ?? [])].sort() };
  const expected = { chainIds: [...chainIds].sort(), status };
  if (!ctx.client.info.debouncedStatus) {
    assert.equal(typeof payload.timestamp, 'number', `${label}: 4.x statusChanged carries the server timestamp`);
    assert.ok(Math.abs(payload.timestamp - Date.now()) < 60_000, `${label}: timestamp is ms since epoch, now-ish`);
    expected.timestamp = payload.timestamp;
  }
  assert.deepStrictEqual(normalized, expected, label);
}

function assertPushEnvelope(frame, { subscriptionId, channel, data }) {
  const msg = frame.json;
  assert.deepStrictEqual(
    Object.keys(msg).sort(),
    ['channel', 'data', 'event', 'subscriptionId', 'timestamp'],
    `flat push envelope {event, subscriptionId, channel, data, timestamp} (got ${frame.raw.slice(0, 300)})`,
  );
  assert.equal(msg.event, 'data');
  assert.equal(msg.subscriptionId, subscriptionId, 'push carries the id returned to this connection');
  assert.equal(msg.channel, channel);
  assert.deepStrictEqual(msg.data, data, 'push data is the published data, unchanged');
  assert.equal(typeof msg.timestamp, 'number');
  assert.ok(Math.abs(msg.timestamp - Date.now()) < 60_000, 'push timestamp is ms since epoch');
}

function toMixedCase(address) {
  const hex = address.slice(2);
  let out = '';
  for (let i = 0; i < hex.length; i += 1) {
    out += i % 2 ? hex[i].toUpperCase() : hex[i];
  }
  return `0x${out}`;
}

const ALL_UP = ['eip155:1', 'eip155:8453', SOLANA_MAINNET];

export function defineSuite(versionKey) {
  describe(`@metamask/core-backend ${versionKey}`, async () => {
    const client = await loadClient(versionKey);
    const ver = client.info.coreBackend;
    const groups = client.info.accountGroups;

    test(`[${ver}] 1. connects with a token; the selected account${groups ? ' group (EVM + Solana) is' : ' (EVM; 4.x has no groups) is'} subscribed and receives`, async () => {
      await scenario(client, {}, async (ctx) => {
        const { rec, wallet, gateway } = ctx;
        await wallet.connect();
        await rec.waitFor(() => wallet.connectionState() === 'connected', 'client state connected', WAIT);
        const dial = rec.frames.find((f) => f.dir === 'dial');
        assert.match(dial.raw, /^ws:\/\/127\.0\.0\.1:\d+\/v1\?token=<jwt>$/u, 'token travels as ?token=');

        const channels = expectedChannels(ctx);
        const { request, reply } = await waitSubscribed(ctx, channels);
        assert.equal(rec.sent((m) => m.event === 'subscribe').length, 1, 'the whole group is ONE subscribe request');
        assert.deepStrictEqual(request.json.data.channels, channels);
        assertSubscribedReply(reply, channels);

        // The client's own subscription state: one id holding every channel.
        const { subscriptionId } = reply.json.data;
        for (const channel of channels) {
          const subs = wallet.backend.getSubscriptionsByChannel(channel);
          assert.equal(subs.length, 1, `one client subscription for ${channel}`);
          assert.equal(subs[0].subscriptionId, subscriptionId);
          assert.deepStrictEqual(subs[0].channels, channels);
        }

        // Each account receives (concrete chains; subscription is chain ref 0).
        const evmMsg = evmActivity(ctx.evm, { chain: 'eip155:8453' });
        await gateway.publish(activityChannel('eip155', '8453', ctx.evm), evmMsg);
        await expectActivity(ctx, evmMsg);
        if (groups) {
          const solMsg = solanaActivity(ctx.sol);
          await gateway.publish(activityChannel('solana', '5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp', ctx.sol), solMsg);
          await expectActivity(ctx, solMsg);
        }
      });
    });

    test(`[${ver}] 2. a statusChanged "up" listing the up chains arrives after subscribing`, async () => {
      await scenario(client, { upBefore: ALL_UP }, async (ctx) => {
        const { rec, wallet } = ctx;
        await wallet.connect();
        await waitSubscribed(ctx, expectedChannels(ctx));
        const sys = await rec.waitFor(
          () => rec.received((m) => m.event === 'system-notification')[0],
          'a system-notification after the subscribe reply',
          WAIT,
        );
        assert.equal(sys.json.channel, 'system-notifications.v1.account-activity.v1', `system channel (${sys.raw})`);
        const status = await nextStatus(rec, 0, `${EV.status} up`);
        // eip155:137 is known but never heartbeated: it is down and must not be listed.
        const expected = groups ? ALL_UP : ['eip155:1', 'eip155:8453'];
        assertStatus(ctx, status, { chainIds: expected, status: 'up' }, 'first statusChanged');
      });
    });

    test(`[${ver}] 3. a published activity message yields balanceUpdated + transactionUpdated with exactly its content`, async () => {
      await scenario(client, {}, async (ctx) => {
        const { rec, wallet, gateway } = ctx;
        await wallet.connect();
        const { reply } = await waitSubscribed(ctx, expectedChannels(ctx));
        const msg = evmActivity(ctx.evm, { chain: 'eip155:8453' });
        const size = Buffer.byteLength(JSON.stringify(msg));
        assert.ok(size > 500 && size < 900, `realistic message size (${size} bytes)`);
        const channel = activityChannel('eip155', '8453', ctx.evm);
        await gateway.publish(channel, msg);
        await expectActivity(ctx, msg);

        const push = rec.received((m) => m.event === 'data' && m.data?.tx?.id === msg.tx.id);
        assert.equal(push.length, 1, 'exactly one push frame for the message');
        assertPushEnvelope(push[0], { subscriptionId: reply.json.data.subscriptionId, channel, data: msg });

        // No duplicate delivery: a second message acts as a marker.
        const marker = evmActivity(ctx.evm, { chain: 'eip155:1' });
        await gateway.publish(activityChannel('eip155', '1', ctx.evm), marker);
        await expectActivity(ctx, marker);
        assert.equal(countTx(rec, msg.tx.id), 1, 'first message surfaced exactly once');
        assert.equal(rec.eventsNamed(EV.balance).length, 2, 'exactly two balanceUpdated in total');
      });
    });

    test(`[${ver}] 4. activity for an unsubscribed address never arrives`, async () => {
      await scenario(client, {}, async (ctx) => {
        const { rec, wallet, gateway } = ctx;
        await wallet.connect();
        await waitSubscribed(ctx, expectedChannels(ctx));
        const stranger = randomEvmAddress();
        const strangerSol = randomSolanaAddress();
        const foreign = evmActivity(stranger, { chain: 'eip155:8453' });
        const foreignSol = solanaActivity(strangerSol);
        await gateway.publish(activityChannel('eip155', '8453', stranger), foreign);
        await gateway.publish(activityChannel('solana', '5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp', strangerSol), foreignSol);
        const marker = evmActivity(ctx.evm, { chain: 'eip155:8453' });
        await gateway.publish(activityChannel('eip155', '8453', ctx.evm), marker);
        await expectActivity(ctx, marker);
        assert.equal(countTx(rec, foreign.tx.id), 0, 'no transactionUpdated for the other EVM address');
        assert.equal(countTx(rec, foreignSol.tx.id), 0, 'no transactionUpdated for the other Solana address');
        const leaked = rec.frames.filter(
          (f) => f.dir === 'in' && (f.raw.includes(stranger) || f.raw.includes(strangerSol)),
        );
        assert.deepEqual(leaked.map((f) => f.raw), [], 'no frame mentioning the other addresses reaches this wallet');
      });
    });

    test(`[${ver}] 5. an account switch moves the flow to the new address`, async () => {
      await scenario(client, {}, async (ctx) => {
        const { rec, wallet, gateway } = ctx;
        await wallet.connect();
        const oldChannels = expectedChannels(ctx);
        const { reply: oldReply } = await waitSubscribed(ctx, oldChannels);
        const oldId = oldReply.json.data.subscriptionId;

        const newEvm = randomEvmAddress();
        const newSol = randomSolanaAddress();
        const switchedAt = Date.now();
        wallet.selectAccounts(groups ? [evmAccount(newEvm), solanaAccount(newSol)] : [evmAccount(newEvm)]);

        // The client unsubscribes the old id (with all its channels) first ...
        const unsub = await rec.waitFor(
          () => rec.sent((m) => m.event === 'unsubscribe')[0],
          'client sends unsubscribe',
          WAIT,
        );
        assert.equal(unsub.json.data.subscription, oldId);
        assert.deepStrictEqual(unsub.json.data.channels, oldChannels);
        const unsubReply = await rec.waitFor(
          () => rec.received((m) => m?.data?.requestId === unsub.json.data.requestId)[0],
          'the unsubscribe reply (without it the client never subscribes the new accounts)',
          WAIT,
        );
        assert.equal(unsubReply.json.event, 'unsubscribed', `unsubscribe reply (${unsubReply.raw})`);
        assert.deepEqual(unsubReply.json.data.failed, [], 'unsubscribe never fails');

        // ... then subscribes the new ones.
        const newChannels = [activityChannel('eip155', '0', newEvm)];
        if (groups) {
          newChannels.push(activityChannel('solana', '0', newSol));
        }
        const { reply: newReply } = await waitSubscribed({ ...ctx }, newChannels, { after: switchedAt });
        assertSubscribedReply(newReply, newChannels);
        for (const c of oldChannels) {
          assert.equal(wallet.backend.channelHasSubscription(c), false, `client dropped ${c}`);
        }

        const oldMsg = evmActivity(ctx.evm, { chain: 'eip155:8453' });
        const oldSolMsg = solanaActivity(ctx.sol);
        await gateway.publish(activityChannel('eip155', '8453', ctx.evm), oldMsg);
        if (groups) {
          await gateway.publish(activityChannel('solana', '5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp', ctx.sol), oldSolMsg);
        }
        const newMsg = evmActivity(newEvm, { chain: 'eip155:8453' });
        await gateway.publish(activityChannel('eip155', '8453', newEvm), newMsg);
        await expectActivity(ctx, newMsg);
        if (groups) {
          const newSolMsg = solanaActivity(newSol);
          await gateway.publish(activityChannel('solana', '5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp', newSol), newSolMsg);
          await expectActivity(ctx, newSolMsg);
        }
        assert.equal(countTx(rec, oldMsg.tx.id), 0, 'old EVM address no longer receives');
        assert.equal(countTx(rec, oldSolMsg.tx.id), 0, 'old Solana address no longer receives');
        const stale = rec.received((m) => m.event === 'data' && m.data?.tx?.id === oldMsg.tx.id);
        assert.deepEqual(stale.map((f) => f.raw), [], 'no push for the old address on the wire');
      });
    });

    test(`[${ver}] 6a. admin chain down then up arrive as statusChanged`, async () => {
      await scenario(client, { upBefore: ['eip155:1', 'eip155:8453'] }, async (ctx) => {
        const { rec, wallet, gateway } = ctx;
        await wallet.connect();
        await waitSubscribed(ctx, expectedChannels(ctx));
        const first = await nextStatus(rec, 0, 'initial statusChanged up');
        assertStatus(ctx, first, { chainIds: ['eip155:1', 'eip155:8453'], status: 'up' }, 'initial up');

        await gateway.setChainStatus('eip155:1', 'down');
        const down = await nextStatus(rec, 1, 'statusChanged down for eip155:1');
        assertStatus(ctx, down, { chainIds: ['eip155:1'], status: 'down' }, 'after PUT status down');
        const listed = (await gateway.chains()).find((c) => c.chainId === 'eip155:1');
        assert.equal(listed?.status, 'down', 'GET /v1/chains shows eip155:1 down');

        await gateway.setChainStatus('eip155:1', 'up');
        const up = await nextStatus(rec, 2, 'statusChanged up for eip155:1');
        assertStatus(ctx, up, { chainIds: ['eip155:1'], status: 'up' }, 'after PUT status up');
        assert.equal(statusEvents(rec).length, 3, 'no other statusChanged');
      });
    });

    test(`[${ver}] 6b. auto chain goes down after stale_after without heartbeat, up on the next heartbeat`, async () => {
      await scenario(
        client,
        { gatewayEnv: { GATEWAY__CHAINS__STALE_AFTER: '2s' }, upBefore: ['eip155:137'] },
        async (ctx) => {
          const { rec, wallet, gateway } = ctx;
          // Keep the chain fresh until the client reported it up, so that the
          // up and the later down cannot fall into one debounce window.
          let beating = true;
          const beat = (async () => {
            while (beating) {
              await gateway.heartbeat('eip155:137').catch(() => {});
              await new Promise((r) => setTimeout(r, 400));
            }
          })();
          try {
            await wallet.connect();
            await waitSubscribed(ctx, expectedChannels(ctx));
            const first = await nextStatus(rec, 0, 'initial statusChanged up');
            assertStatus(ctx, first, { chainIds: ['eip155:137'], status: 'up' }, 'initial up');
          } finally {
            beating = false;
            await beat;
          }
          const down = await nextStatus(rec, 1, 'statusChanged down after 2s without heartbeat', 20_000);
          assertStatus(ctx, down, { chainIds: ['eip155:137'], status: 'down' }, 'stale -> down');
          await gateway.heartbeat('eip155:137');
          const up = await nextStatus(rec, 2, 'statusChanged up after a heartbeat');
          assertStatus(ctx, up, { chainIds: ['eip155:137'], status: 'up' }, 'heartbeat -> up');
        },
      );
    });

    test(
      `[${ver}] 7. an OHLCV bar arrives as OHLCVService:barUpdated`,
      { skip: client.info.ohlcv ? false : `@metamask/core-backend ${ver} has no OHLCVService` },
      async () => {
        await scenario(client, {}, async (ctx) => {
          const { rec, wallet, gateway } = ctx;
          await wallet.connect();
          await waitSubscribed(ctx, expectedChannels(ctx));
          const channel = `market-data.v1.${USDC_BASE_CAIP19}.1m.usd`;
          await wallet.ohlcv.subscribe({ assetId: USDC_BASE_CAIP19, interval: '1m', currency: 'usd' });
          assert.deepEqual(rec.eventsNamed(EV.ohlcvError), [], 'no OHLCVService:subscriptionError');
          assert.equal(wallet.backend.channelHasSubscription(channel), true, 'client holds the OHLCV subscription');
          const subReq = rec.sent((m) => m.event === 'subscribe' && m.data.channels.includes(channel))[0];
          const subReply = rec.received((m) => m?.data?.requestId === subReq.json.data.requestId)[0];
          assertSubscribedReply(subReply, [channel]);

          const bar = ohlcvBar();
          await gateway.publish(channel, bar);
          const got = await rec.waitFor(() => rec.eventsNamed(EV.bar)[0], EV.bar, WAIT);
          assert.deepStrictEqual(got, { channel, bar });
          const push = rec.received((m) => m.event === 'data' && m.channel?.startsWith('market-data.v1.'));
          assert.equal(push.length, 1, 'one market-data push');
          assertPushEnvelope(push[0], { subscriptionId: subReply.json.data.subscriptionId, channel, data: bar });
        });
      },
    );

    test(
      `[${ver}] 7b. OHLCV unsubscribe (3 s after the last viewer leaves) succeeds and stops the bars`,
      { skip: client.info.ohlcv ? false : `@metamask/core-backend ${ver} has no OHLCVService` },
      async () => {
        await scenario(client, {}, async (ctx) => {
          const { rec, wallet, gateway } = ctx;
          await wallet.connect();
          await waitSubscribed(ctx, expectedChannels(ctx));
          const opts = { assetId: USDC_BASE_CAIP19, interval: '1m', currency: 'usd' };
          const channel = `market-data.v1.${USDC_BASE_CAIP19}.1m.usd`;
          await wallet.ohlcv.subscribe(opts);
          assert.equal(wallet.backend.channelHasSubscription(channel), true, 'client holds the OHLCV subscription');
          await wallet.ohlcv.unsubscribe(opts);
          const unsub = await rec.waitFor(
            () => rec.sent((m) => m.event === 'unsubscribe' && m.data.channels?.includes(channel))[0],
            'client sends the OHLCV unsubscribe after its 3 s grace period',
            WAIT,
          );
          const reply = await rec.waitFor(
            () => rec.received((m) => m?.data?.requestId === unsub.json.data.requestId)[0],
            'the unsubscribe reply',
            WAIT,
          );
          assert.equal(reply.json.event, 'unsubscribed', `reply (${reply.raw})`);
          assert.deepEqual(reply.json.data.failed, []);
          await rec.waitFor(
            () => !wallet.backend.channelHasSubscription(channel),
            'client drops the OHLCV subscription',
            WAIT,
          );
          assert.deepEqual(rec.eventsNamed(EV.ohlcvError), [], 'no OHLCVService:subscriptionError (a failure retries 1/2/4 s, then force-reconnects)');

          await gateway.publish(channel, ohlcvBar());
          const marker = evmActivity(ctx.evm);
          await gateway.publish(activityChannel('eip155', '8453', ctx.evm), marker);
          await expectActivity(ctx, marker);
          assert.deepEqual(rec.eventsNamed(EV.bar), [], 'no bar after unsubscribe');
          assert.deepEqual(
            rec.received((m) => m.event === 'data' && m.channel === channel).map((f) => f.raw),
            [],
            'no market-data push on the wire after unsubscribe',
          );
        });
      },
    );

    test(
      `[${ver}] 7c. OHLCV subscribers get market-data chain status (OHLCVService:chainStatusChanged)`,
      { skip: client.info.ohlcv ? false : `@metamask/core-backend ${ver} has no OHLCVService` },
      async () => {
        await scenario(client, { upBefore: ['eip155:8453'] }, async (ctx) => {
          const { rec, wallet, gateway } = ctx;
          await wallet.connect();
          await waitSubscribed(ctx, expectedChannels(ctx));
          await wallet.ohlcv.subscribe({ assetId: USDC_BASE_CAIP19, interval: '1m', currency: 'usd' });
          const ev = 'OHLCVService:chainStatusChanged';
          const up = await rec.waitFor(() => rec.eventsNamed(ev)[0], `${ev} up after the OHLCV subscribe`, WAIT);
          const sys = rec.received((m) => m.event === 'system-notification' && m.channel === 'system-notifications.v1.market-data.v1');
          assert.ok(sys.length >= 1, 'a system-notification on system-notifications.v1.market-data.v1');
          assert.deepStrictEqual(up, { chainIds: ['eip155:8453'], status: 'up', timestamp: sys[0].json.timestamp });
          await gateway.setChainStatus('eip155:8453', 'down');
          const down = await rec.waitFor(() => rec.eventsNamed(ev)[1], `${ev} down after PUT status down`, WAIT);
          assert.deepStrictEqual({ ...down, timestamp: 0 }, { chainIds: ['eip155:8453'], status: 'down', timestamp: 0 });
          assert.equal(typeof down.timestamp, 'number');
        });
      },
    );

    for (const [num, how, signal] of [
      ['8a', 'restart (SIGTERM, drain)', 'SIGTERM'],
      ['8b', 'crash (SIGKILL) and restart', 'SIGKILL'],
    ]) {
      test(`[${ver}] ${num}. after a gateway ${how} the client reconnects, resubscribes and receives again`, async () => {
        await scenario(client, { upBefore: ['eip155:1'] }, async (ctx) => {
          const { rec, wallet, gateway } = ctx;
          const channels = expectedChannels(ctx);
          await wallet.connect();
          await waitSubscribed(ctx, channels);
          const first = await nextStatus(rec, 0, 'initial statusChanged up');
          assertStatus(ctx, first, { chainIds: ['eip155:1'], status: 'up' }, 'initial up');
          // Publications count as a sign of life for chains in `auto`: stay on eip155:1.
          const before = evmActivity(ctx.evm, { chain: 'eip155:1' });
          await gateway.publish(activityChannel('eip155', '1', ctx.evm), before);
          await expectActivity(ctx, before);

          const killedAt = Date.now();
          const closedBefore = rec.frames.filter((f) => f.dir === 'close').length;
          await gateway.stop({ signal });
          await rec.waitFor(
            () => rec.eventsNamed(EV.conn).some((c) => c.state === 'disconnected'),
            'client notices the gateway went away',
            WAIT,
          );
          const close = rec.frames.filter((f) => f.dir === 'close')[closedBefore];
          if (signal === 'SIGTERM') {
            // Graceful drain: a real close frame with 1012 (service restart).
            assert.match(close?.raw ?? '', /^1012 /u, `drain closes with 1012 (got ${close?.raw})`);
          }
          // The client marks every chain down by itself on disconnect.
          const down = await nextStatus(rec, 1, 'client-side statusChanged down on disconnect');
          assert.deepStrictEqual(down.chainIds, ['eip155:1']);
          assert.equal(down.status, 'down');

          await gateway.start(); // same port
          await gateway.heartbeat('eip155:1');
          const { reply } = await waitSubscribed(ctx, channels, { after: killedAt });
          assert.ok(reply.conn > 1, 'resubscribed on a new connection');
          const up = await nextStatus(rec, 2, 'statusChanged up after resubscribe');
          assertStatus(ctx, up, { chainIds: ['eip155:1'], status: 'up' }, 'up after restart');

          const after = evmActivity(ctx.evm, { chain: 'eip155:1' });
          await gateway.publish(activityChannel('eip155', '1', ctx.evm), after);
          await expectActivity(ctx, after);
          assert.equal(countTx(rec, before.tx.id), 1, 'no replay of the pre-restart message');
        });
      });
    }

    test(`[${ver}] 9. a checksummed (mixed-case) EVM account is served like its lower-case form`, async () => {
      const mixed = toMixedCase(randomEvmAddress());
      await scenario(client, { evm: mixed }, async (ctx) => {
        const { wallet, gateway } = ctx;
        await wallet.connect();
        // The client subscribes the address exactly as the account holds it.
        await waitSubscribed(ctx, expectedChannels(ctx));
        const msg = evmActivity(mixed.toLowerCase(), { chain: 'eip155:8453' });
        await gateway.publish(activityChannel('eip155', '8453', mixed.toLowerCase()), msg);
        await expectActivity(ctx, msg);
      });
    });

    test(`[${ver}] 10. a manual disconnect (wallet lock / sign-out) closes cleanly with 4999, so the client does not reconnect`, async () => {
      await scenario(client, {}, async (ctx) => {
        const { rec, wallet } = ctx;
        await wallet.connect();
        await waitSubscribed(ctx, expectedChannels(ctx));
        const t0 = Date.now();
        // What KeyringController:lock and a sign-out trigger.
        wallet.messenger.publish('KeyringController:lock');
        const close = await rec.waitFor(
          () => rec.frames.find((f) => f.dir === 'close'),
          'the close handshake completes (the client only sees its own 4999 once the server answers its close frame; ws gives up after 30 s with 1006)',
          10_000,
        );
        assert.equal(close.raw, '4999 Internal: Manual disconnect', 'the client sees its manual close code echoed');
        await rec.waitFor(() => wallet.connectionState() === 'disconnected', 'client state disconnected', WAIT);
        assert.ok(Date.now() - t0 < 10_000);
        assert.equal(wallet.backend.getConnectionInfo().reconnectAttempts, 0, 'no reconnect scheduled');
      });
    });

    test(`[${ver}] 11. a bad token is refused at the upgrade (HTTP 401): the client never reaches connected`, async () => {
      await scenario(client, { getToken: () => mintToken('not-the-secret') }, async (ctx) => {
        const { rec, wallet } = ctx;
        await wallet.connect();
        const err = await rec.waitFor(
          () => rec.frames.find((f) => f.dir === 'error'),
          'the handshake fails',
          WAIT,
        );
        assert.match(err.raw, /Unexpected server response: 401/u, 'refused with HTTP 401');
        assert.equal(rec.frames.filter((f) => f.dir === 'open').length, 0, 'the socket never opened');
        assert.equal(
          rec.eventsNamed(EV.conn).some((c) => c.state === 'connected'),
          false,
          'client never reached connected',
        );
      });
    });

    test(`[${ver}] 12. when the token expires the gateway closes, and the client reconnects with a fresh token and resubscribes`, async () => {
      let minted = 0;
      let gw;
      await scenario(
        client,
        {
          getToken: () => {
            minted += 1;
            // The first token lives 3 s; later ones an hour.
            return gw.token({ ttlSeconds: minted === 1 ? 3 : 3600 });
          },
        },
        async (ctx) => {
          const { rec, wallet, gateway } = ctx;
          gw = gateway;
          const channels = expectedChannels(ctx);
          await wallet.connect();
          await waitSubscribed(ctx, channels);
          const close = await rec.waitFor(
            () => rec.frames.find((f) => f.dir === 'close'),
            'the gateway closes the connection when the token expires',
            WAIT,
          );
          assert.match(close.raw, /^4001 /u, `token expiry closes with 4001 (got ${close.raw})`);
          const { reply } = await waitSubscribed(ctx, channels, { after: close.t });
          assert.ok(reply.conn > 1, 'resubscribed on a new connection');
          assert.ok(minted >= 2, 'the client fetched a fresh token');
          const msg = evmActivity(ctx.evm);
          await gateway.publish(activityChannel('eip155', '8453', ctx.evm), msg);
          await expectActivity(ctx, msg);
        },
      );
    });

    test(`[${ver}] 13. a history store outage turns the chains down while it lasts, up after it, and nothing accepted is lost`, async () => {
      await scenario(client, { upBefore: ['eip155:1'] }, async (ctx) => {
        const { rec, wallet, gateway } = ctx;
        await wallet.connect();
        await waitSubscribed(ctx, expectedChannels(ctx));
        const first = await nextStatus(rec, 0, 'initial statusChanged up');
        assertStatus(ctx, first, { chainIds: ['eip155:1'], status: 'up' }, 'initial up');

        const lock = await gateway.lockStore();
        let refused;
        try {
          // The indexer keeps publishing and sending heartbeats; its publication is refused.
          refused = await gateway.request('POST', '/v1/publish', {
            key: gateway.publisherKey,
            body: { channel: activityChannel('eip155', '1', ctx.evm), data: evmActivity(ctx.evm, { chain: 'eip155:1' }) },
          });
          assert.equal(refused.status, 503, `publish during the outage (${refused.text})`);
          assert.equal(refused.json?.error, 'store_unavailable');
          const down = await nextStatus(rec, 1, 'statusChanged down during the store outage', 5_000);
          assertStatus(ctx, down, { chainIds: ['eip155:1'], status: 'down' }, 'store outage -> down');
          await gateway.heartbeat('eip155:1');
          await new Promise((r) => setTimeout(r, 3_000));
          assert.equal(statusEvents(rec).length, 2, 'no up while the store is locked');
        } finally {
          await lock.release();
        }
        const up = await nextStatus(rec, 2, 'statusChanged up after the store is back');
        assertStatus(ctx, up, { chainIds: ['eip155:1'], status: 'up' }, 'store back -> up');
        // The publisher retries what was refused: it arrives, once.
        const retried = evmActivity(ctx.evm, { chain: 'eip155:1' });
        await gateway.publish(activityChannel('eip155', '1', ctx.evm), retried);
        await expectActivity(ctx, retried);
        assert.equal(statusEvents(rec).length, 3, 'no other statusChanged');
      });
    });

    test(`[${ver}] 14. an operator's down survives a gateway restart: the reconnected client is not told up for it`, async () => {
      await scenario(client, { upBefore: ['eip155:1', 'eip155:8453'] }, async (ctx) => {
        const { rec, wallet, gateway } = ctx;
        const channels = expectedChannels(ctx);
        await wallet.connect();
        await waitSubscribed(ctx, channels);
        const first = await nextStatus(rec, 0, 'initial statusChanged up');
        assertStatus(ctx, first, { chainIds: ['eip155:1', 'eip155:8453'], status: 'up' }, 'initial up');
        await gateway.setChainStatus('eip155:1', 'down');
        const forced = await nextStatus(rec, 1, 'statusChanged down for eip155:1');
        assertStatus(ctx, forced, { chainIds: ['eip155:1'], status: 'down' }, 'after PUT status down');

        const killedAt = Date.now();
        await gateway.stop({ signal: 'SIGKILL' });
        const gone = await nextStatus(rec, 2, 'client-side statusChanged down on disconnect');
        assert.equal(gone.status, 'down');
        await gateway.start(); // same port, same store
        // The indexer's heartbeats resume for both chains.
        await gateway.heartbeat('eip155:1');
        await gateway.heartbeat('eip155:8453');
        const { reply } = await waitSubscribed(ctx, channels, { after: killedAt });
        assert.ok(reply.conn > 1, 'resubscribed on a new connection');
        const up = await nextStatus(rec, 3, 'statusChanged up after resubscribe');
        assertStatus(ctx, up, { chainIds: ['eip155:8453'], status: 'up' }, 'only the chain not forced down is up');
        await new Promise((r) => setTimeout(r, 2_500));
        assert.equal(statusEvents(rec).length, 4, 'no up for the chain forced down');
        const listed = (await gateway.chains()).find((c) => c.chainId === 'eip155:1');
        assert.equal(listed?.mode, 'down', 'GET /v1/chains keeps the stored override');

        await gateway.setChainStatus('eip155:1', 'auto');
        const back = await nextStatus(rec, 4, 'statusChanged up once the override is lifted');
        assertStatus(ctx, back, { chainIds: ['eip155:1'], status: 'up' }, 'auto -> up');
      });
    });
  });
}
