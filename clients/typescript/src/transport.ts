/**
 * One WebSocket connection, over the platform's `WebSocket` (browsers, Node 22+) or the `ws`
 * package where there is none (Node 20). With `ws` an HTTP refusal of the upgrade (401 token
 * error, 503 draining with `Retry-After`) is read and reported; browsers hide it.
 */
import type { HttpRefusal } from './types.js';

/** The constructor shape shared by the browser `WebSocket` and `ws`. */
export type WebSocketConstructor = new (url: string) => WebSocketLike;

export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  addEventListener(type: string, listener: (event: any) => void): void;
}

export interface TransportHandlers {
  open(): void;
  message(text: string): void;
  /** Called exactly once per connection. */
  close(code: number, reason: string, http?: HttpRefusal): void;
}

export interface Transport {
  send(text: string): boolean;
  close(code: number, reason: string): void;
}

let wsPackage: Promise<WebSocketConstructor> | undefined;

/** The platform WebSocket, else the `ws` package (loaded only then). */
export async function defaultWebSocket(): Promise<WebSocketConstructor> {
  const global = (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (global !== undefined) {
    return global;
  }
  wsPackage ??= import('ws').then((m) => (m.default ?? m.WebSocket) as unknown as WebSocketConstructor);
  return wsPackage;
}

export function openTransport(
  Impl: WebSocketConstructor,
  url: string,
  handlers: TransportHandlers,
): Transport {
  let closed = false;
  let http: HttpRefusal | undefined;
  const finish = (code: number, reason: string) => {
    if (closed) {
      return;
    }
    closed = true;
    handlers.close(code, reason, http);
  };
  let socket: WebSocketLike;
  try {
    socket = new Impl(url);
  } catch (e) {
    queueMicrotask(() => finish(1006, `cannot open ${redact(url)}: ${String(e)}`));
    return { send: () => false, close: () => {} };
  }
  const node = socket as WebSocketLike & {
    on?: (type: string, fn: (...args: any[]) => void) => void;
    terminate?: () => void;
  };
  if (typeof node.on === 'function' && typeof node.terminate === 'function') {
    node.on('unexpected-response', (req: any, res: any) => {
      let body = '';
      res.setEncoding?.('utf8');
      res.on('data', (c: string) => {
        if (body.length < 4096) body += c;
      });
      res.on('end', () => {
        http = parseRefusal(res.statusCode, res.headers?.['retry-after'], body);
        req.destroy?.();
        node.terminate?.();
        finish(1006, `HTTP ${res.statusCode}${http.error ? ` ${http.error}` : ''}`);
      });
    });
  }
  socket.addEventListener('open', () => {
    if (!closed) handlers.open();
  });
  socket.addEventListener('message', (ev: { data: unknown }) => {
    if (closed) return;
    if (typeof ev.data === 'string') {
      handlers.message(ev.data);
    } else if (ev.data instanceof ArrayBuffer || ArrayBuffer.isView(ev.data)) {
      // `ws` hands text frames over as Buffers unless told otherwise.
      handlers.message(new TextDecoder().decode(ev.data as ArrayBuffer));
    }
  });
  socket.addEventListener('error', () => {
    // A `close` event follows every `error` event; nothing to do here.
  });
  socket.addEventListener('close', (ev: { code: number; reason: string }) => {
    finish(ev.code, ev.reason ?? '');
  });
  return {
    send(text: string): boolean {
      if (closed || socket.readyState !== 1) {
        return false;
      }
      try {
        socket.send(text);
        return true;
      } catch {
        return false;
      }
    },
    close(code: number, reason: string): void {
      try {
        socket.close(code, reason);
      } catch {
        node.terminate?.();
      }
      // The close handshake may never finish on a dead link; report the close now.
      finish(code, reason);
    },
  };
}

function parseRefusal(status: number, retryAfter: unknown, body: string): HttpRefusal {
  const refusal: HttpRefusal = { status };
  try {
    const json = JSON.parse(body) as { error?: unknown; message?: unknown };
    if (typeof json.error === 'string') refusal.error = json.error;
    if (typeof json.message === 'string') refusal.message = json.message;
  } catch {
    // Not JSON: status alone.
  }
  if (typeof retryAfter === 'string' && retryAfter.trim() !== '') {
    const secs = Number(retryAfter);
    if (Number.isFinite(secs) && secs >= 0) {
      refusal.retryAfterMs = secs * 1000;
    } else {
      const at = Date.parse(retryAfter);
      if (Number.isFinite(at)) refusal.retryAfterMs = Math.max(0, at - Date.now());
    }
  }
  return refusal;
}

/** The URL without its token, for messages. */
export function redact(url: string): string {
  return url.replace(/([?&]token=)[^&]*/u, '$1…');
}
