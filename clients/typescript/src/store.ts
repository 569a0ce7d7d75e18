/**
 * Where the client keeps each stream's last processed position, so that a reconnect or a
 * page reload resumes exactly after it. Keys are channels as subscribed.
 */
import type { Position } from './types.js';

export interface PositionStore {
  load(channel: string): Position | undefined | Promise<Position | undefined>;
  save(channel: string, position: Position): void | Promise<void>;
}

/** In memory: survives reconnects, not a reload. The default. */
export class MemoryPositionStore implements PositionStore {
  readonly #positions = new Map<string, Position>();

  load(channel: string): Position | undefined {
    const p = this.#positions.get(channel);
    return p === undefined ? undefined : { ...p };
  }

  save(channel: string, position: Position): void {
    this.#positions.set(channel, { epoch: position.epoch, offset: position.offset });
  }
}

/** The subset of the Web Storage API the adapter uses. */
export interface StorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
}

/** In `localStorage` (or any Web Storage): survives page reloads. */
export class LocalStoragePositionStore implements PositionStore {
  readonly #storage: StorageLike;
  readonly #prefix: string;

  constructor({
    storage = (globalThis as { localStorage?: StorageLike }).localStorage,
    prefix = 'activity-gateway:position:',
  }: { storage?: StorageLike; prefix?: string } = {}) {
    if (!storage) {
      throw new TypeError('LocalStoragePositionStore: no localStorage here; pass { storage }');
    }
    this.#storage = storage;
    this.#prefix = prefix;
  }

  load(channel: string): Position | undefined {
    const raw = this.#storage.getItem(this.#prefix + channel);
    if (raw === null) {
      return undefined;
    }
    try {
      const p = JSON.parse(raw) as Partial<Position>;
      return typeof p.epoch === 'string' && typeof p.offset === 'number'
        ? { epoch: p.epoch, offset: p.offset }
        : undefined;
    } catch {
      return undefined;
    }
  }

  save(channel: string, position: Position): void {
    this.#storage.setItem(
      this.#prefix + channel,
      JSON.stringify({ epoch: position.epoch, offset: position.offset }),
    );
  }
}
