/**
 * The client: one WebSocket in ack mode (`?ack=1`) that subscribes CAIP-10 accounts, acks every
 * push in batches, drops duplicates by stream position, keeps each stream's last processed
 * position in a store, and after any disconnect reconnects (token provider, backoff with full
 * jitter) and resubscribes from those positions. The algorithm is docs/delivery.md's "The
 * extension on the wire, for client authors".
 */
import { backoffDelay, type BackoffOptions } from './backoff.js';
import { closeCodeInfo } from './close-codes.js';
import { GatewayClientError } from './errors.js';
import { MemoryPositionStore, type PositionStore } from './store.js';
import {
  defaultWebSocket,
  openTransport,
  redact,
  type Transport,
  type WebSocketConstructor,
} from './transport.js';
import type {
  ChainStatusEvent,
  ConnectedEvent,
  DisconnectedEvent,
  HttpRefusal,
  Notification,
  Position,
  Recovery,
  SubscribedEvent,
  UnrecoveredEvent,
} from './types.js';
import { Watermarks } from './watermarks.js';

export interface ClientOptions {
  /** The gateway's WebSocket endpoint, e.g. `wss://gateway.example/v1`. */
  url: string;
  /** Returns a JWT; called before every connection (so also after close 4001). */
  token: () => string | Promise<string>;
  /** Where positions are kept (default: in memory). */
  store?: PositionStore;
  /** Reconnect backoff (full jitter). */
  backoff?: BackoffOptions;
  /** Acks are sent when this many are pending (default 100)… */
  ackBatchSize?: number;
  /** …or this long after the first pending one (default 100 ms; keep well under the gateway's `delivery.ack_timeout`). */
  ackDelayMs?: number;
  /** How long a subscribe may wait for its reply before the client reconnects (default 10 s). */
  requestTimeoutMs?: number;
  /** A WebSocket implementation (default: the platform's, else the `ws` package). */
  WebSocket?: WebSocketConstructor;
}

export interface ClientEvents {
  notification: Notification;
  chainStatus: ChainStatusEvent;
  unrecovered: UnrecoveredEvent;
  subscribed: SubscribedEvent;
  connected: ConnectedEvent;
  disconnected: DisconnectedEvent;
  error: GatewayClientError;
}

export type ClientState = 'idle' | 'connecting' | 'open' | 'stopped';

/** Counters since the client was created. */
export interface ClientStats {
  /** Notifications handed to the application. */
  notifications: number;
  /** Pushes dropped as duplicates (re-sends, replays of what was already processed). */
  duplicates: number;
  /** Message ids acknowledged (sent in ack batches). */
  acked: number;
  /** Connections opened after the first. */
  reconnects: number;
}

type Listener<T> = (event: T) => void;

/** One `subscribe()` call: sent again, with positions, on every connection. */
interface Group {
  channels: string[];
  waiters: { resolve: () => void; reject: (e: GatewayClientError) => void }[];
}

interface Pending {
  group: Group;
  timer: ReturnType<typeof setTimeout>;
}

const CHANNEL_PREFIX = 'account-activity.v1.';
// CAIP-10 as the gateway parses it (docs/protocol.md, Channels).
const CAIP10 = /^[-a-z0-9]{3,8}:[-_a-zA-Z0-9]{1,32}:[-.%a-zA-Z0-9]{1,128}$/u;

/** `eip155` addresses are compared case-insensitively and sent lower-case. */
export function normalizeAccount(account: string): string {
  return account.startsWith('eip155:') ? account.toLowerCase() : account;
}

export class ActivityClient {
  readonly #opts: Required<Omit<ClientOptions, 'WebSocket' | 'backoff'>> & {
    WebSocket?: WebSocketConstructor;
    backoff: BackoffOptions;
  };
  readonly #listeners = new Map<keyof ClientEvents, Set<Listener<any>>>();
  readonly #groups: Group[] = [];
  readonly #watermarks = new Watermarks();
  #state: ClientState = 'idle';
  #conn: Transport | undefined;
  #connNo = 0;
  #connections = 0;
  #attempt = 0;
  #reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  #acks: string[] = [];
  #ackTimer: ReturnType<typeof setTimeout> | undefined;
  #bySubscription = new Map<string, string[]>();
  #pending = new Map<string, Pending>();
  #awaitingReplies = 0;
  #recovery: Record<string, Recovery> = {};
  #nextRequest = 0;
  #stopped: Promise<void> | undefined;
  #onClosed: (() => void) | undefined;
  readonly #stats: ClientStats = { notifications: 0, duplicates: 0, acked: 0, reconnects: 0 };

  constructor(options: ClientOptions) {
    if (typeof options.url !== 'string' || options.url === '') {
      throw new TypeError('ActivityClient: `url` is required (ws(s)://host/v1)');
    }
    if (typeof options.token !== 'function') {
      throw new TypeError('ActivityClient: `token` must be a function returning a JWT');
    }
    this.#opts = {
      url: options.url,
      token: options.token,
      store: options.store ?? new MemoryPositionStore(),
      backoff: options.backoff ?? {},
      ackBatchSize: options.ackBatchSize ?? 100,
      ackDelayMs: options.ackDelayMs ?? 100,
      requestTimeoutMs: options.requestTimeoutMs ?? 10_000,
      WebSocket: options.WebSocket,
    };
  }

  get state(): ClientState {
    return this.#state;
  }

  get stats(): ClientStats {
    return { ...this.#stats };
  }

  /** Registers a listener; returns a function that removes it. */
  on<K extends keyof ClientEvents>(type: K, listener: Listener<ClientEvents[K]>): () => void {
    let set = this.#listeners.get(type);
    if (set === undefined) {
      set = new Set();
      this.#listeners.set(type, set);
    }
    set.add(listener);
    return () => this.off(type, listener);
  }

  off<K extends keyof ClientEvents>(type: K, listener: Listener<ClientEvents[K]>): void {
    this.#listeners.get(type)?.delete(listener);
  }

  /** Starts connecting (idempotent). `subscribe` calls it too. */
  start(): void {
    if (this.#state !== 'idle') {
      return;
    }
    this.#state = 'connecting';
    void this.#connect();
  }

  /**
   * Subscribes CAIP-10 accounts (`eip155:0:0x…` for every EVM chain) in ack mode, resuming from
   * the store's positions. Resolves once the gateway confirmed the subscription; rejects with
   * `invalid_account`, `subscribe_refused` or `stopped`.
   */
  async subscribe(accounts: string[]): Promise<void> {
    if (this.#state === 'stopped') {
      throw new GatewayClientError('stopped', 'the client was stopped');
    }
    const normalized = [...new Set(accounts.map(normalizeAccount))];
    const bad = normalized.filter((a) => !CAIP10.test(a));
    if (normalized.length === 0 || bad.length > 0) {
      throw new GatewayClientError(
        'invalid_account',
        bad.length > 0
          ? `not CAIP-10 accounts (namespace:reference:address): ${bad.join(', ')}`
          : 'subscribe needs at least one account',
        { accounts: bad },
      );
    }
    const channels = normalized.map((a) => CHANNEL_PREFIX + a);
    for (const c of channels) {
      try {
        const p = await this.#opts.store.load(c);
        if (p !== undefined) this.#watermarks.startAt(c, p);
      } catch (e) {
        this.#emitError(
          new GatewayClientError('store_failed', `cannot load the position of ${c}: ${String(e)}`, {
            cause: e,
          }),
        );
      }
    }
    if (this.#isStopped()) {
      throw new GatewayClientError('stopped', 'the client was stopped');
    }
    const done = new Promise<void>((resolve, reject) => {
      const group: Group = { channels, waiters: [{ resolve, reject }] };
      this.#groups.push(group);
      if (this.#state === 'open') {
        this.#awaitingReplies += 1;
        this.#sendSubscribe(group);
      }
    });
    this.start();
    return done;
  }

  /** The last processed position of an account (the point a resume starts after). */
  position(account: string): Position | undefined {
    const p = this.#watermarks.get(CHANNEL_PREFIX + normalizeAccount(account));
    return p === undefined ? undefined : { ...p };
  }

  /** Sends pending acks, closes the connection (1000) and stops reconnecting. */
  stop(): Promise<void> {
    if (this.#stopped !== undefined) {
      return this.#stopped;
    }
    this.#state = 'stopped';
    clearTimeout(this.#reconnectTimer);
    this.#flushAcks();
    clearTimeout(this.#ackTimer);
    for (const p of this.#pending.values()) clearTimeout(p.timer);
    this.#pending.clear();
    for (const g of this.#groups) {
      for (const w of g.waiters.splice(0)) {
        w.reject(new GatewayClientError('stopped', 'the client was stopped'));
      }
    }
    const conn = this.#conn;
    this.#stopped = new Promise<void>((resolve) => {
      if (conn === undefined) {
        resolve();
        return;
      }
      this.#onClosed = resolve;
      conn.close(1000, 'client stopped');
    });
    return this.#stopped;
  }

  // === connection ===

  /** Read through a method: `stop()` may run during any await. */
  #isStopped(): boolean {
    return this.#state === 'stopped';
  }

  async #connect(): Promise<void> {
    if (this.#state === 'stopped') return;
    this.#state = 'connecting';
    let token: string;
    let Impl: WebSocketConstructor;
    try {
      Impl = this.#opts.WebSocket ?? (await defaultWebSocket());
    } catch (e) {
      this.#emitError(
        new GatewayClientError(
          'connect_refused',
          `no WebSocket implementation: install the "ws" package or pass { WebSocket } (${String(e)})`,
          { cause: e },
        ),
      );
      this.#scheduleReconnect(0);
      return;
    }
    try {
      token = await this.#opts.token();
      if (typeof token !== 'string' || token === '') throw new Error('returned no token');
    } catch (e) {
      this.#emitError(
        new GatewayClientError('token_provider_failed', `the token provider failed: ${String(e)}`, {
          cause: e,
        }),
      );
      this.#scheduleReconnect(0);
      return;
    }
    if (this.#isStopped()) return;
    const no = ++this.#connNo;
    const sep = this.#opts.url.includes('?') ? '&' : '?';
    const url = `${this.#opts.url}${sep}token=${encodeURIComponent(token)}&ack=1`;
    this.#conn = openTransport(Impl, url, {
      open: () => {
        if (no === this.#connNo) this.#onOpen();
      },
      message: (text) => {
        if (no === this.#connNo) this.#onMessage(text);
      },
      close: (code, reason, http) => {
        if (no === this.#connNo) this.#onClose(code, reason, http);
      },
    });
  }

  #onOpen(): void {
    if (this.#state === 'stopped') return;
    this.#state = 'open';
    this.#connections += 1;
    if (this.#connections > 1) this.#stats.reconnects += 1;
    this.#recovery = {};
    this.#awaitingReplies = this.#groups.length;
    for (const g of this.#groups) this.#sendSubscribe(g);
  }

  #onClose(code: number, reason: string, http?: HttpRefusal): void {
    this.#conn = undefined;
    for (const p of this.#pending.values()) clearTimeout(p.timer);
    this.#pending.clear();
    this.#bySubscription.clear();
    // Acks of a closed connection are void: those pushes come again and are dropped as duplicates.
    this.#acks = [];
    clearTimeout(this.#ackTimer);
    this.#ackTimer = undefined;
    const info = closeCodeInfo(code);
    const event: DisconnectedEvent = { code, reason, name: info.name, action: info.action, http };
    if (this.#state === 'stopped') {
      event.action = 'stop';
      this.#emit('disconnected', event);
      this.#onClosed?.();
      return;
    }
    if (info.clientFault) {
      this.#emitError(
        new GatewayClientError(
          'protocol_violation',
          `the gateway closed the connection with ${code} (${info.name}): ${info.description}`,
          { closeCode: code },
        ),
      );
    }
    let floor = info.minDelayMs;
    if (http !== undefined) {
      this.#emitError(
        new GatewayClientError(
          'connect_refused',
          `the gateway refused ${redact(this.#opts.url)} with HTTP ${http.status}${
            http.error ? ` ${http.error}` : ''
          }${http.message ? `: ${http.message}` : ''}`,
          { gatewayCode: http.error, httpStatus: http.status },
        ),
      );
      if (http.status === 401) event.action = 'refresh-token';
      floor = Math.max(floor, http.retryAfterMs ?? 0);
    }
    event.reconnectInMs = this.#scheduleReconnect(floor);
    this.#emit('disconnected', event);
  }

  /** Schedules the next connection after backoff (at least `floorMs`); returns the delay. */
  #scheduleReconnect(floorMs: number): number {
    if (this.#state === 'stopped') return 0;
    this.#state = 'connecting';
    const delay = Math.max(floorMs, backoffDelay(this.#attempt, this.#opts.backoff));
    this.#attempt += 1;
    clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = setTimeout(() => void this.#connect(), delay);
    return delay;
  }

  // === requests ===

  #sendSubscribe(group: Group): void {
    const requestId = `sub-${++this.#nextRequest}-${Math.random().toString(36).slice(2, 10)}`;
    const positions: Record<string, Position> = {};
    for (const c of group.channels) {
      const p = this.#watermarks.get(c);
      if (p !== undefined) positions[c] = p;
    }
    const data: Record<string, unknown> = { requestId, channels: group.channels };
    if (Object.keys(positions).length > 0) data.positions = positions;
    const timer = setTimeout(() => this.#onRequestTimeout(requestId), this.#opts.requestTimeoutMs);
    this.#pending.set(requestId, { group, timer });
    this.#conn?.send(JSON.stringify({ event: 'subscribe', data }));
  }

  #onRequestTimeout(requestId: string): void {
    if (!this.#pending.delete(requestId)) return;
    this.#emitError(
      new GatewayClientError(
        'request_timeout',
        `no reply to subscribe within ${this.#opts.requestTimeoutMs} ms; reconnecting`,
      ),
    );
    this.#conn?.close(4000, 'subscribe timeout');
  }

  #onReply(requestId: string, msg: { event: string; data: any }): void {
    const pending = this.#pending.get(requestId);
    if (pending === undefined) return;
    this.#pending.delete(requestId);
    clearTimeout(pending.timer);
    const group = pending.group;
    const data = msg.data ?? {};
    if (msg.event === 'error') {
      // Nothing of the request was applied: drop it, so a reconnect does not repeat it.
      this.#groups.splice(this.#groups.indexOf(group), 1);
      const err = new GatewayClientError(
        'subscribe_refused',
        `the gateway refused the subscribe: ${data.code ?? 'error'}: ${data.message ?? ''}`,
        { gatewayCode: data.code, accounts: group.channels.map(accountOf) },
      );
      for (const w of group.waiters.splice(0)) w.reject(err);
      this.#replyDone();
      return;
    }
    const failed: string[] = Array.isArray(data.failed) ? data.failed : [];
    if (failed.length > 0) {
      group.channels = group.channels.filter((c) => !failed.includes(c));
      const reasons = failed
        .map((c) => `${accountOf(c)}: ${data.errors?.[c]?.message ?? data.errors?.[c]?.code ?? 'refused'}`)
        .join('; ');
      const err = new GatewayClientError('invalid_account', `the gateway refused ${reasons}`, {
        gatewayCode: 'invalid_channel',
        accounts: failed.map(accountOf),
      });
      if (group.channels.length === 0) this.#groups.splice(this.#groups.indexOf(group), 1);
      if (group.waiters.length > 0) {
        for (const w of group.waiters.splice(0)) w.reject(err);
      } else {
        this.#emitError(err);
      }
    }
    if (typeof data.subscriptionId === 'string') {
      this.#bySubscription.set(data.subscriptionId, group.channels);
    }
    for (const c of group.channels) {
      const pos = asPosition(data.positions?.[c]);
      const rec = data.recovery?.[c];
      if (rec !== undefined && rec !== null) {
        this.#recovery[accountOf(c)] = {
          recovered: rec.recovered === true,
          replayed: typeof rec.replayed === 'number' ? rec.replayed : 0,
          ...(typeof rec.reason === 'string' ? { reason: rec.reason } : {}),
        };
      }
      if (rec?.recovered === false) {
        if (pos !== undefined) {
          this.#watermarks.reset(c, pos);
          this.#save(c, pos);
        }
        this.#emit('unrecovered', {
          account: accountOf(c),
          channel: c,
          reason: typeof rec.reason === 'string' ? rec.reason : 'unknown',
          ...(pos !== undefined ? { position: pos } : {}),
        });
      } else if (pos !== undefined && this.#watermarks.startAt(c, pos)) {
        this.#save(c, pos);
      }
    }
    for (const w of group.waiters.splice(0)) w.resolve();
    this.#replyDone();
  }

  /** After the last subscribe reply of a connection: the connection counts as established. */
  #replyDone(): void {
    this.#awaitingReplies -= 1;
    if (this.#awaitingReplies !== 0) return;
    this.#attempt = 0;
    this.#emit('subscribed', {
      reconnect: this.#connections > 1,
      recovery: this.#recovery,
      accounts: this.#groups.flatMap((g) => g.channels.map(accountOf)),
    });
    this.#recovery = {};
  }

  // === incoming ===

  #onMessage(text: string): void {
    let msg: any;
    try {
      msg = JSON.parse(text);
    } catch {
      return;
    }
    if (msg === null || typeof msg !== 'object') return;
    const requestId = msg.data?.requestId;
    if (typeof requestId === 'string' && (msg.event === 'subscribed' || msg.event === 'error')) {
      this.#onReply(requestId, msg);
      return;
    }
    switch (msg.event) {
      case 'data':
        this.#onPush(msg);
        break;
      case 'system-notification': {
        const status = msg.data?.status;
        if (status === 'up' || status === 'down') {
          this.#emit('chainStatus', {
            status,
            chainIds: Array.isArray(msg.data.chainIds) ? msg.data.chainIds.map(String) : [],
            channel: String(msg.channel ?? ''),
          });
        }
        break;
      }
      case 'session-created':
        this.#emit('connected', {
          sessionId: typeof msg.data?.sessionId === 'string' ? msg.data.sessionId : undefined,
          reconnect: this.#connections > 1,
        });
        break;
      default:
        break;
    }
  }

  #onPush(msg: any): void {
    const pushed = String(msg.channel ?? '');
    const channel = this.#subscribedChannel(String(msg.subscriptionId ?? ''), pushed);
    const messageId = typeof msg.messageId === 'string' ? msg.messageId : undefined;
    const position = asPosition(msg.position);
    if (messageId !== undefined) {
      // Every push is acked, duplicates included, or the gateway sends it again.
      this.#queueAck(messageId);
    }
    if (position === undefined || messageId === undefined) {
      // Not an ack-mode push (never happens on an `?ack=1` connection): nothing to dedupe by.
      return;
    }
    if (!this.#watermarks.accept(channel, position)) {
      this.#stats.duplicates += 1;
      return;
    }
    this.#stats.notifications += 1;
    this.#emit('notification', {
      account: accountOf(channel),
      channel,
      pushedChannel: pushed,
      data: msg.data,
      messageId,
      position,
      redelivered: msg.redelivered === true,
      ...(typeof msg.timestamp === 'number' ? { timestamp: msg.timestamp } : {}),
    });
    this.#save(channel, position);
  }

  /** The channel as subscribed that a push on `pushed` belongs to. */
  #subscribedChannel(subscriptionId: string, pushed: string): string {
    const list = this.#bySubscription.get(subscriptionId) ?? this.#groups.flatMap((g) => g.channels);
    if (list.length === 1 && this.#bySubscription.has(subscriptionId)) return list[0]!;
    const lower = pushed.toLowerCase();
    const exact = list.find((c) => c.toLowerCase() === lower);
    if (exact !== undefined) return exact;
    // A wildcard subscription (`eip155:0:0x…`) gets pushes of concrete chains.
    const [ns, , addr] = splitAccount(accountOf(pushed));
    const wild = list.find((c) => {
      const [cns, cref, caddr] = splitAccount(accountOf(c));
      return cns === ns && cref === '0' && (ns === 'eip155' ? caddr.toLowerCase() === addr.toLowerCase() : caddr === addr);
    });
    return wild ?? pushed;
  }

  #queueAck(messageId: string): void {
    this.#acks.push(messageId);
    if (this.#acks.length >= this.#opts.ackBatchSize) {
      this.#flushAcks();
    } else if (this.#ackTimer === undefined) {
      this.#ackTimer = setTimeout(() => this.#flushAcks(), this.#opts.ackDelayMs);
    }
  }

  #flushAcks(): void {
    clearTimeout(this.#ackTimer);
    this.#ackTimer = undefined;
    if (this.#acks.length === 0) return;
    const messageIds = this.#acks;
    this.#acks = [];
    if (this.#conn?.send(JSON.stringify({ event: 'ack', data: { messageIds } }))) {
      this.#stats.acked += messageIds.length;
    }
  }

  #save(channel: string, position: Position): void {
    try {
      const r = this.#opts.store.save(channel, position);
      if (r !== undefined && typeof (r as Promise<void>).catch === 'function') {
        (r as Promise<void>).catch((e) => this.#storeFailed(channel, e));
      }
    } catch (e) {
      this.#storeFailed(channel, e);
    }
  }

  #storeFailed(channel: string, e: unknown): void {
    this.#emitError(
      new GatewayClientError('store_failed', `cannot save the position of ${channel}: ${String(e)}`, {
        cause: e,
      }),
    );
  }

  #emitError(err: GatewayClientError): void {
    this.#emit('error', err);
  }

  #emit<K extends keyof ClientEvents>(type: K, event: ClientEvents[K]): void {
    const set = this.#listeners.get(type);
    if (set === undefined) return;
    for (const l of [...set]) {
      try {
        l(event);
      } catch (e) {
        if (type !== 'error') {
          this.#emitError(
            new GatewayClientError('listener_failed', `a "${type}" listener threw: ${String(e)}`, { cause: e }),
          );
        }
      }
    }
  }
}

function accountOf(channel: string): string {
  return channel.startsWith(CHANNEL_PREFIX) ? channel.slice(CHANNEL_PREFIX.length) : channel;
}

function splitAccount(account: string): [string, string, string] {
  const first = account.indexOf(':');
  const second = account.indexOf(':', first + 1);
  return [account.slice(0, first), account.slice(first + 1, second), account.slice(second + 1)];
}

function asPosition(v: any): Position | undefined {
  return v !== null &&
    typeof v === 'object' &&
    typeof v.epoch === 'string' &&
    typeof v.offset === 'number'
    ? { epoch: v.epoch, offset: v.offset }
    : undefined;
}
