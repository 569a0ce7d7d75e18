/** activity-gateway's TypeScript client: acked delivery, de-duplication and resume. */
export { ActivityClient, normalizeAccount } from './client.js';
export type { ClientEvents, ClientOptions, ClientState, ClientStats } from './client.js';
export { CLOSE_CODES, closeCodeInfo } from './close-codes.js';
export type { CloseCodeInfo } from './close-codes.js';
export { GatewayClientError } from './errors.js';
export type { ClientErrorCode } from './errors.js';
export { LocalStoragePositionStore, MemoryPositionStore } from './store.js';
export type { PositionStore, StorageLike } from './store.js';
export { backoffDelay } from './backoff.js';
export type { BackoffOptions } from './backoff.js';
export type { WebSocketConstructor, WebSocketLike } from './transport.js';
export type * from './types.js';
