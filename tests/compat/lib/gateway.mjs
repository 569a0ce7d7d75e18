// Spawns and talks to one activity-gateway process (per test).
//
// The gateway is configured only through environment variables and prints
// exactly one stdout line `listening on 127.0.0.1:<port>` once it accepts
// connections (logs go to stderr).

import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export const KNOWN_CHAINS = [
  'eip155:1',
  'eip155:8453',
  'eip155:137',
  'solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp',
];

const STARTUP_TIMEOUT_MS = 20_000;

export function gatewayBin() {
  const bin = process.env.GATEWAY_BIN;
  if (!bin) {
    throw new Error('GATEWAY_BIN is not set (run the suite through tests/compat/run.sh)');
  }
  return bin;
}

function randomSecret(bytes = 24) {
  return crypto.randomBytes(bytes).toString('hex');
}

function b64url(input) {
  return Buffer.from(input).toString('base64url');
}

/**
 * Mint an HS256 JWT with claims {sub, iat, exp}.
 *
 * @param {string} secret - HS256 secret.
 * @param {object} [opts] - sub / ttlSeconds / extra claims.
 * @returns {string} The token.
 */
export function mintToken(secret, { sub = 'compat-user', ttlSeconds = 3600, extra = {} } = {}) {
  const iat = Math.floor(Date.now() / 1000);
  const header = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const claims = b64url(JSON.stringify({ sub, iat, exp: iat + ttlSeconds, ...extra }));
  const signature = crypto
    .createHmac('sha256', secret)
    .update(`${header}.${claims}`)
    .digest('base64url');
  return `${header}.${claims}.${signature}`;
}

/**
 * One gateway process plus everything needed to talk to it.
 */
export class Gateway {
  constructor({ env: extraEnv = {} } = {}) {
    this.secret = randomSecret();
    this.publisherKey = `pub-${randomSecret(16)}`;
    this.adminKey = `adm-${randomSecret(16)}`;
    this.tmpdir = fs.mkdtempSync(path.join(os.tmpdir(), 'gw-compat-'));
    this.extraEnv = extraEnv;
    this.port = undefined;
    this.proc = undefined;
    this.stderr = '';
    this.stdout = '';
    this.exits = [];
  }

  env(listen) {
    return {
      ...process.env,
      GATEWAY__SERVER__LISTEN: listen,
      GATEWAY__AUTH__HS256_SECRET: this.secret,
      GATEWAY__PUBLISH__API_KEYS: this.publisherKey,
      GATEWAY__ADMIN__API_KEYS: this.adminKey,
      GATEWAY__CHAINS__KNOWN: KNOWN_CHAINS.join(','),
      GATEWAY__CHAINS__STALE_AFTER: '60s',
      // COMPAT_NO_STORAGE=1 omits it (for builds without a `storage` section:
      // the gateway refuses unknown configuration fields).
      ...(process.env.COMPAT_NO_STORAGE === '1'
        ? {}
        : { GATEWAY__STORAGE__URL: `sqlite://${path.join(this.tmpdir, 'gw.db')}` }),
      RUST_LOG: process.env.RUST_LOG ?? 'info',
      ...this.extraEnv,
    };
  }

  /**
   * Start the process. The first start listens on an ephemeral port; later
   * starts (restart) reuse the same port.
   */
  async start() {
    const listen = this.port ? `127.0.0.1:${this.port}` : '127.0.0.1:0';
    const bin = gatewayBin();
    const proc = spawn(bin, [], {
      // Relative default paths (e.g. data/gateway.db) land in the temp dir.
      cwd: this.tmpdir,
      env: this.env(listen),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.proc = proc;
    const startNo = this.exits.length + 1;
    this.stderr += `\n----- gateway start #${startNo} (${listen}) -----\n`;
    proc.stderr.setEncoding('utf8');
    proc.stderr.on('data', (chunk) => {
      this.stderr += chunk;
      if (this.stderr.length > 2_000_000) {
        this.stderr = this.stderr.slice(-1_000_000);
      }
    });
    proc.stdout.setEncoding('utf8');
    const port = await new Promise((resolve, reject) => {
      let buf = '';
      const timer = setTimeout(() => {
        reject(
          new Error(
            `gateway did not print "listening on ..." within ${STARTUP_TIMEOUT_MS} ms\nstdout: ${buf}\nstderr tail:\n${this.stderrTail()}`,
          ),
        );
      }, STARTUP_TIMEOUT_MS);
      proc.stdout.on('data', (chunk) => {
        this.stdout += chunk;
        buf += chunk;
        const m = /listening on 127\.0\.0\.1:(\d+)/u.exec(buf);
        if (m) {
          clearTimeout(timer);
          resolve(Number(m[1]));
        }
      });
      proc.once('error', (err) => {
        clearTimeout(timer);
        reject(new Error(`cannot spawn gateway ${bin}: ${err.message}`));
      });
      proc.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(
          new Error(
            `gateway exited before listening (code ${code}, signal ${signal})\nstdout: ${buf}\nstderr tail:\n${this.stderrTail()}`,
          ),
        );
      });
    });
    proc.on('exit', (code, signal) => this.exits.push({ code, signal }));
    if (this.port && port !== this.port) {
      throw new Error(`gateway restarted on port ${port}, expected ${this.port}`);
    }
    this.port = port;
    return port;
  }

  /**
   * Stop the process by PID; SIGKILL after a grace period. On SIGTERM the
   * gateway drains: it closes its connections (1012) spread over its drain
   * window (default 10 s), then exits.
   */
  async stop({ signal = 'SIGTERM', graceMs = 15_000 } = {}) {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) {
      return;
    }
    const exited = new Promise((resolve) => proc.once('exit', resolve));
    try {
      process.kill(proc.pid, signal);
    } catch {
      return;
    }
    const timer = setTimeout(() => {
      try {
        process.kill(proc.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }, graceMs);
    await exited;
    clearTimeout(timer);
  }

  async restart() {
    await this.stop();
    await this.start();
  }

  async dispose() {
    await this.stop({ signal: 'SIGKILL', graceMs: 1000 });
    fs.rmSync(this.tmpdir, { recursive: true, force: true });
  }

  stderrTail(lines = 60) {
    return this.stderr.split('\n').slice(-lines).join('\n');
  }

  get httpBase() {
    return `http://127.0.0.1:${this.port}`;
  }

  get wsUrl() {
    return `ws://127.0.0.1:${this.port}/v1`;
  }

  token(opts) {
    return mintToken(this.secret, opts);
  }

  async request(method, urlPath, { key, body } = {}) {
    const headers = {};
    if (key) {
      headers.authorization = `Bearer ${key}`;
    }
    if (body !== undefined) {
      headers['content-type'] = 'application/json';
    }
    const res = await fetch(`${this.httpBase}${urlPath}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    let json;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      json = undefined;
    }
    return { status: res.status, text, json };
  }

  async expectOk(method, urlPath, opts) {
    const res = await this.request(method, urlPath, opts);
    if (res.status !== 200) {
      throw new Error(
        `${method} ${urlPath} ${JSON.stringify(opts?.body ?? null)} -> HTTP ${res.status}: ${res.text}`,
      );
    }
    return res;
  }

  /** POST /v1/publish one publication; returns the response JSON. */
  async publish(channel, data) {
    const res = await this.expectOk('POST', '/v1/publish', {
      key: this.publisherKey,
      body: { channel, data },
    });
    if (res.json?.accepted !== 1) {
      throw new Error(`publish ${channel}: expected {"accepted":1}, got ${res.text}`);
    }
    return res.json;
  }

  async heartbeat(chainId) {
    return this.expectOk('POST', `/v1/chains/${chainId}/heartbeat`, {
      key: this.publisherKey,
    });
  }

  async setChainStatus(chainId, status) {
    return this.expectOk('PUT', `/v1/chains/${chainId}/status`, {
      key: this.adminKey,
      body: { status },
    });
  }

  async chains() {
    const res = await this.expectOk('GET', '/v1/chains');
    return res.json.chains;
  }

  /**
   * Holds the write lock of the gateway's SQLite file (another process in an
   * exclusive transaction, through the `sqlite3` CLI) until `release()`.
   */
  async lockStore() {
    const db = path.join(this.tmpdir, 'gw.db');
    const proc = spawn('sqlite3', [db], { stdio: ['pipe', 'pipe', 'pipe'] });
    proc.stdout.setEncoding('utf8');
    await new Promise((resolve, reject) => {
      let out = '';
      const timer = setTimeout(() => reject(new Error(`sqlite3 did not lock ${db} within 5 s`)), 5_000);
      proc.stdout.on('data', (chunk) => {
        out += chunk;
        if (out.includes('locked')) {
          clearTimeout(timer);
          resolve();
        }
      });
      proc.once('error', (err) => {
        clearTimeout(timer);
        reject(new Error(`cannot run sqlite3 (needed to lock the store): ${err.message}`));
      });
      proc.stdin.write("BEGIN EXCLUSIVE;\nSELECT 'locked';\n");
    });
    return {
      release: async () => {
        const exited = new Promise((resolve) => proc.once('exit', resolve));
        proc.stdin.end('ROLLBACK;\n.quit\n');
        await exited;
      },
    };
  }
}
