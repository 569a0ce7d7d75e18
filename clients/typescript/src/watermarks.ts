/**
 * De-duplication by stream position. First deliveries of a stream arrive in offset order and
 * every re-send, replay or redelivery is of an offset the client may already have, so one
 * watermark per subscribed channel (epoch, highest offset processed) is enough: a push at or
 * below the watermark of the same epoch is a duplicate. The watermark is also the resume point.
 */
import type { Position } from './types.js';

export class Watermarks {
  readonly #byChannel = new Map<string, Position>();

  /** True when the push at `position` is new; records it. */
  accept(channel: string, position: Position): boolean {
    const w = this.#byChannel.get(channel);
    if (w !== undefined && w.epoch === position.epoch && position.offset <= w.offset) {
      return false;
    }
    this.#byChannel.set(channel, { epoch: position.epoch, offset: position.offset });
    return true;
  }

  /** Sets the starting point unless one is known; true when it was set. */
  startAt(channel: string, position: Position): boolean {
    if (this.#byChannel.has(channel)) {
      return false;
    }
    this.#byChannel.set(channel, { epoch: position.epoch, offset: position.offset });
    return true;
  }

  /** Replaces the watermark (a stream that could not be recovered starts over here). */
  reset(channel: string, position: Position): void {
    this.#byChannel.set(channel, { epoch: position.epoch, offset: position.offset });
  }

  get(channel: string): Position | undefined {
    return this.#byChannel.get(channel);
  }
}
