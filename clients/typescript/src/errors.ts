/** The client's typed errors (emitted as `error` events or thrown by `subscribe`). */

export type ClientErrorCode =
  /** The token provider threw or returned no token; retried with backoff. */
  | 'token_provider_failed'
  /** The gateway refused the upgrade over HTTP (see `http`). */
  | 'connect_refused'
  /** An account is not CAIP-10, or the gateway listed it in `failed`. */
  | 'invalid_account'
  /** The gateway answered a subscribe with an error (e.g. `too_many_subscriptions`). */
  | 'subscribe_refused'
  /** No reply to a subscribe within `requestTimeoutMs`; the client reconnects. */
  | 'request_timeout'
  /** The gateway closed with a code that means this client sent something it should not have. */
  | 'protocol_violation'
  /** The position store threw; delivery goes on, but a reload may see duplicates. */
  | 'store_failed'
  /** A notification listener threw; the notification still counts as delivered. */
  | 'listener_failed'
  /** `stop()` was called while the operation was pending. */
  | 'stopped';

export class GatewayClientError extends Error {
  override readonly name = 'GatewayClientError';
  readonly code: ClientErrorCode;
  /** The gateway's own error code, when the gateway sent one. */
  readonly gatewayCode?: string;
  /** The accounts concerned, when the error is about accounts. */
  readonly accounts?: string[];
  /** The close code, for `protocol_violation`. */
  readonly closeCode?: number;
  /** The HTTP status, for `connect_refused`. */
  readonly httpStatus?: number;

  constructor(
    code: ClientErrorCode,
    message: string,
    details: {
      gatewayCode?: string;
      accounts?: string[];
      closeCode?: number;
      httpStatus?: number;
      cause?: unknown;
    } = {},
  ) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.code = code;
    this.gatewayCode = details.gatewayCode;
    this.accounts = details.accounts;
    this.closeCode = details.closeCode;
    this.httpStatus = details.httpStatus;
  }
}
