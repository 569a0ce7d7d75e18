/** Shared types of the client: positions, events and options. */

/** A stream position as the gateway sends it (`position` of a push). */
export interface Position {
  /** The history epoch; a new epoch means the stream's history was reset. */
  epoch: string;
  /** Strictly increasing within an epoch. */
  offset: number;
}

/** Why the gateway could not replay a stream from the stored position. */
export type RecoveryReason =
  | 'epoch_changed'
  | 'trimmed'
  | 'beyond_end'
  | 'store_unavailable'
  | (string & {});

/** One notification, handed to the application exactly once, in order per account. */
export interface Notification {
  /** The CAIP-10 account as subscribed (eip155 addresses lower-cased). */
  account: string;
  /** The channel as subscribed, `account-activity.v1.<account>`. */
  channel: string;
  /** The push's concrete channel (a wildcard `eip155:0:` subscription gets the real chain). */
  pushedChannel: string;
  /** The publication, exactly as published. */
  data: unknown;
  /** `<epoch>-<offset>`, stable across redeliveries and restarts. */
  messageId: string;
  position: Position;
  /** The gateway sent this push before (the first copy was not acknowledged in time). */
  redelivered: boolean;
  /** The gateway's fan-out time (ms since the epoch). */
  timestamp?: number;
}

/** A `system-notification`: chains went down (poll them now) or up (slow polling down). */
export interface ChainStatusEvent {
  status: 'up' | 'down';
  chainIds: string[];
  /** `system-notifications.v1.<namespace>`. */
  channel: string;
}

/** A stream the gateway could not replay: refresh this account over HTTP now. */
export interface UnrecoveredEvent {
  account: string;
  channel: string;
  reason: RecoveryReason;
  /** The new starting point: live pushes continue from here. */
  position?: Position;
}

/** Per account, how its subscription was (re)established on a connection. */
export interface Recovery {
  recovered: boolean;
  replayed: number;
  reason?: RecoveryReason;
}

export interface SubscribedEvent {
  /** True when this is not the client's first connection. */
  reconnect: boolean;
  /** For each account that resumed from a stored position. */
  recovery: Record<string, Recovery>;
  accounts: string[];
}

export interface ConnectedEvent {
  sessionId?: string;
  reconnect: boolean;
}

/** What the client does after a disconnect. */
export type CloseAction = 'reconnect' | 'refresh-token' | 'stop';

export interface DisconnectedEvent {
  /** The WebSocket close code (1006 when the connection dropped without a close frame). */
  code: number;
  reason: string;
  /** The name of the code in the gateway's protocol (e.g. `token_expired`). */
  name: string;
  action: CloseAction;
  /** When the next attempt starts; absent when the client stopped. */
  reconnectInMs?: number;
  /** The gateway refused the upgrade over HTTP (only visible where the WebSocket exposes it, e.g. Node). */
  http?: HttpRefusal;
}

/** An HTTP answer to the upgrade request (401 with a token error, 503 draining). */
export interface HttpRefusal {
  status: number;
  /** The gateway's error code from the JSON body, e.g. `token_expired`, `draining`. */
  error?: string;
  message?: string;
  /** `Retry-After` in milliseconds, when the gateway sent one. */
  retryAfterMs?: number;
}
