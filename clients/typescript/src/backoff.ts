/** Exponential backoff with full jitter: a uniform delay in [0, min(max, initial * 2^attempt)). */

export interface BackoffOptions {
  /** The ceiling of the first retry's delay (default 250 ms). */
  initialMs?: number;
  /** The largest ceiling (default 30 s). */
  maxMs?: number;
}

export function backoffDelay(
  attempt: number,
  { initialMs = 250, maxMs = 30_000 }: BackoffOptions = {},
  random: () => number = Math.random,
): number {
  const ceiling = Math.min(maxMs, initialMs * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * ceiling);
}
