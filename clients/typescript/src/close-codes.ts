/**
 * Every close code of the gateway's protocol (docs/protocol.md, "Close codes") and what the
 * client does about it. The client never gives up by itself: only `stop()` ends it.
 */
import type { CloseAction } from './types.js';

export interface CloseCodeInfo {
  /** A short name, stable for logs and dashboards. */
  name: string;
  action: CloseAction;
  /** The gateway closed because of something this client sent: reported as `protocol_violation`. */
  clientFault: boolean;
  /** The least time to wait before reconnecting (backoff may wait longer). */
  minDelayMs: number;
  /** What it means, for humans. */
  description: string;
}

export const CLOSE_CODES: Readonly<Record<number, CloseCodeInfo>> = Object.freeze({
  1000: info('normal', 'reconnect', false, 0, 'closed normally by the gateway: reconnect and resume'),
  1001: info('going_away', 'reconnect', false, 0, 'the endpoint went away: reconnect and resume'),
  1003: info('binary_frame', 'reconnect', true, 1_000, 'the gateway refused a binary frame'),
  1006: info('connection_lost', 'reconnect', false, 0, 'the connection dropped without a close frame: reconnect and resume'),
  1007: info('invalid_utf8', 'reconnect', true, 1_000, 'a text frame was not valid UTF-8'),
  1008: info('policy', 'reconnect', true, 5_000, 'error budget exceeded (too many protocol errors or rate-limited requests)'),
  1009: info('message_too_big', 'reconnect', true, 1_000, 'a message exceeded server.max_message_bytes'),
  1011: info('server_error', 'reconnect', false, 0, 'the gateway hit an internal error: reconnect and resume'),
  1012: info('restart', 'reconnect', false, 0, 'the node is draining: reconnect (another node answers) and resume'),
  1013: info('slow_consumer', 'reconnect', false, 0, 'the outbound queue overflowed: reconnect and resume'),
  4001: info('token_expired', 'refresh-token', false, 0, 'the token expired: get a fresh token and reconnect'),
  4002: info('ping_timeout', 'reconnect', false, 0, 'no pong in time: reconnect and resume'),
  4010: info('ack_timeout', 'reconnect', false, 0, 'pushes went unacknowledged: reconnect and resume from the last acknowledged position'),
});

function info(
  name: string,
  action: CloseAction,
  clientFault: boolean,
  minDelayMs: number,
  description: string,
): CloseCodeInfo {
  return { name, action, clientFault, minDelayMs, description };
}

/** The entry for `code`; unknown codes reconnect with backoff. */
export function closeCodeInfo(code: number): CloseCodeInfo {
  return (
    CLOSE_CODES[code] ??
    info(`close_${code}`, 'reconnect', false, 0, 'an unknown close code: reconnect with backoff and resume')
  );
}
