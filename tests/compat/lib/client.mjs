// Drives the REAL @metamask/core-backend client classes of one version
// (installed by setup.sh under clients/<version>/node_modules).
//
// Everything the services call on other controllers is stubbed on a single
// @metamask/messenger Messenger created with MOCK_ANY_NAMESPACE (the package's
// own escape hatch for tests), so the services' own actions and events go
// through the real messenger code unchanged.

import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const CLIENTS_DIR = path.resolve(HERE, '..', 'clients');

/** What each installed client version supports (read from its dist code). */
export const VERSIONS = {
  v11: { dir: 'v11', coreBackend: '11.0.0', accountGroups: true, ohlcv: true, debouncedStatus: true },
  v8: { dir: 'v8', coreBackend: '8.1.2', accountGroups: true, ohlcv: true, debouncedStatus: true },
  v4: { dir: 'v4', coreBackend: '4.1.0', accountGroups: false, ohlcv: false, debouncedStatus: false },
};

export const SOLANA_MAINNET = 'solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp';

async function importFrom(dir, pkgName) {
  const pkgDir = path.join(dir, 'node_modules', ...pkgName.split('/'));
  const pkg = JSON.parse(fs.readFileSync(path.join(pkgDir, 'package.json'), 'utf8'));
  const exp = pkg.exports?.['.'];
  let entry;
  if (typeof exp === 'string') {
    entry = exp;
  } else if (exp) {
    const imp = exp.import;
    entry = typeof imp === 'string' ? imp : (imp?.default ?? exp.default ?? exp.require?.default);
  }
  entry ??= pkg.module ?? pkg.main ?? 'index.js';
  return import(pathToFileURL(path.join(pkgDir, entry)).href);
}

/**
 * Load the modules of one client version.
 *
 * @param {string} versionKey - 'v11' | 'v8' | 'v4'.
 */
export async function loadClient(versionKey) {
  const info = VERSIONS[versionKey];
  if (!info) {
    throw new Error(`unknown client version ${versionKey}`);
  }
  const dir = path.join(CLIENTS_DIR, info.dir);
  const cbPkg = JSON.parse(
    fs.readFileSync(path.join(dir, 'node_modules/@metamask/core-backend/package.json'), 'utf8'),
  );
  if (cbPkg.version !== info.coreBackend) {
    throw new Error(
      `clients/${info.dir} holds @metamask/core-backend ${cbPkg.version}, expected ${info.coreBackend}: run setup.sh`,
    );
  }
  const coreBackend = await importFrom(dir, '@metamask/core-backend');
  const messengerMod = await importFrom(dir, '@metamask/messenger');
  const require = createRequire(path.join(dir, 'package.json'));
  const WS = require('ws');
  const messengerVersion = JSON.parse(
    fs.readFileSync(path.join(dir, 'node_modules/@metamask/messenger/package.json'), 'utf8'),
  ).version;
  return { info, versionKey, coreBackend, messengerMod, WS, messengerVersion };
}

/** Records everything observable: wire frames and messenger events. */
export class Recorder extends EventEmitter {
  constructor() {
    super();
    this.setMaxListeners(0);
    this.frames = []; // {dir: 'in'|'out'|'open'|'close', t, raw, json, conn}
    this.events = []; // {name, payload, t}
    this.connections = 0;
  }

  frame(entry) {
    this.frames.push({ t: Date.now(), ...entry });
    this.emit('change');
  }

  event(name, payload) {
    this.events.push({ name, payload, t: Date.now() });
    this.emit('change');
  }

  eventsNamed(name) {
    return this.events.filter((e) => e.name === name).map((e) => e.payload);
  }

  sent(pred = () => true) {
    return this.frames.filter((f) => f.dir === 'out' && f.json && pred(f.json, f));
  }

  received(pred = () => true) {
    return this.frames.filter((f) => f.dir === 'in' && f.json && pred(f.json, f));
  }

  /**
   * Wait (event-driven) until `check()` returns a truthy value.
   *
   * @param {() => any} check - Evaluated after every recorded frame/event.
   * @param {string} what - Description for the failure message.
   * @param {number} [timeoutMs] - Give up after this long.
   */
  waitFor(check, what, timeoutMs = 15_000) {
    return new Promise((resolve, reject) => {
      const evaluate = () => {
        let value;
        try {
          value = check();
        } catch (error) {
          cleanup();
          reject(error);
          return true;
        }
        if (value) {
          cleanup();
          resolve(value);
          return true;
        }
        return false;
      };
      const onChange = () => evaluate();
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`timed out after ${timeoutMs} ms waiting for: ${what}`));
      }, timeoutMs);
      // Client state (e.g. its subscription map) changes a microtask after the
      // frame that caused it: re-check on a short interval as well.
      const poll = setInterval(onChange, 50);
      const cleanup = () => {
        clearTimeout(timer);
        clearInterval(poll);
        this.off('change', onChange);
      };
      if (!evaluate()) {
        this.on('change', onChange);
      }
    });
  }

  /** Human-readable wire transcript (for failure reports). */
  transcript(limit = 80) {
    const t0 = this.frames[0]?.t ?? 0;
    return this.frames
      .slice(-limit)
      .map((f) => {
        const body = f.raw === undefined ? '' : ` ${String(f.raw).slice(0, 700)}`;
        return `  +${String(f.t - t0).padStart(6)}ms #${f.conn} ${f.dir.padEnd(5)}${body}`;
      })
      .join('\n');
  }

  eventLog(limit = 60) {
    return this.events
      .slice(-limit)
      .map((e) => `  ${e.name} ${JSON.stringify(e.payload)?.slice(0, 500)}`)
      .join('\n');
  }
}

/**
 * A `ws` WebSocket subclass installed as globalThis.WebSocket:
 * - a no-op 'error' listener (browsers never throw on an unhandled error
 *   event; the client sets no onerror, and `ws` would crash the process);
 * - records every frame in and out, untouched.
 */
function makeWebSocketClass(WS, recorder) {
  return class CompatWebSocket extends WS {
    constructor(url, protocols) {
      super(url, protocols);
      recorder.connections += 1;
      const conn = recorder.connections;
      this.compatConn = conn;
      recorder.frame({ dir: 'dial', conn, raw: String(url).replace(/token=[^&]+/u, 'token=<jwt>') });
      this.on('error', (err) => recorder.frame({ dir: 'error', conn, raw: err?.message }));
      this.on('open', () => recorder.frame({ dir: 'open', conn }));
      this.on('message', (data, isBinary) => {
        const raw = isBinary ? `<binary ${data.length} bytes>` : data.toString('utf8');
        let json;
        if (!isBinary) {
          try {
            json = JSON.parse(raw);
          } catch {
            json = undefined;
          }
        }
        recorder.frame({ dir: 'in', conn, raw, json, binary: isBinary });
      });
      this.on('close', (code, reason) =>
        recorder.frame({ dir: 'close', conn, raw: `${code} ${reason?.toString?.() ?? ''}` }),
      );
    }

    close(code, reason) {
      recorder.frame({ dir: 'shut', conn: this.compatConn, raw: `client calls close(${code ?? ''}, ${JSON.stringify(reason ?? '')})` });
      return super.close(code, reason);
    }

    send(data, ...rest) {
      let json;
      try {
        json = JSON.parse(String(data));
      } catch {
        json = undefined;
      }
      recorder.frame({ dir: 'out', conn: this.compatConn, raw: String(data), json });
      return super.send(data, ...rest);
    }
  };
}

export function evmAccount(address, id = `evm-${address.slice(2, 8)}`) {
  return {
    id,
    address,
    type: 'eip155:eoa',
    options: {},
    methods: ['personal_sign', 'eth_signTransaction', 'eth_signTypedData_v4'],
    scopes: ['eip155:0'],
    metadata: { name: id, importTime: 0, keyring: { type: 'HD Key Tree' } },
  };
}

export function solanaAccount(address, id = `sol-${address.slice(0, 6)}`) {
  return {
    id,
    address,
    type: 'solana:data-account',
    options: {},
    methods: ['signAndSendTransaction', 'signTransaction', 'signMessage'],
    scopes: [SOLANA_MAINNET],
    metadata: { name: id, importTime: 0, keyring: { type: 'Snap Keyring' } },
  };
}

const RECORDED_EVENTS = [
  'AccountActivityService:balanceUpdated',
  'AccountActivityService:transactionUpdated',
  'AccountActivityService:statusChanged',
  'BackendWebSocketService:connectionStateChanged',
  'OHLCVService:barUpdated',
  'OHLCVService:subscriptionError',
  'OHLCVService:chainStatusChanged',
];

/**
 * Build a wallet: messenger + stubs + BackendWebSocketService +
 * AccountActivityService (+ OHLCVService when the version has it).
 *
 * @param {object} client - From loadClient().
 * @param {object} opts - Options.
 * @param {string} opts.url - Gateway WebSocket URL (ws://host:port/v1).
 * @param {() => string} opts.getToken - Returns a fresh bearer token.
 * @param {object[]} opts.accounts - Selected account group (v8/v11); v4 uses accounts[0].
 * @param {boolean} [opts.solanaEnabled] - Remote feature flag for Solana.
 * @param {object} [opts.serviceOptions] - Extra BackendWebSocketService options.
 */
export function createWallet(client, { url, getToken, accounts, solanaEnabled = true, serviceOptions = {} }) {
  const { coreBackend, messengerMod, WS, info } = client;
  const recorder = new Recorder();
  globalThis.WebSocket = makeWebSocketClass(WS, recorder);

  const messenger = new messengerMod.Messenger({ namespace: messengerMod.MOCK_ANY_NAMESPACE });
  const state = {
    accounts: [...accounts],
    remoteFeatureFlags: solanaEnabled ? { networkAssetsSnapsMigrationSolana: { stage: 1 } } : {},
    tokenCalls: 0,
    // isEnabled() callback: false after destroy(), so that no stray reconnect
    // of this wallet outlives its test (a close that races the gateway's exit
    // arrives as 1006, not as the manual 4999, and would schedule one).
    enabled: true,
  };

  // --- stubs for the controllers the services call ---
  messenger.registerActionHandler('AuthenticationController:getBearerToken', async () => {
    state.tokenCalls += 1;
    return getToken();
  });
  if (info.accountGroups) {
    messenger.registerActionHandler('AccountTreeController:getAccountsFromSelectedAccountGroup', () => [
      ...state.accounts,
    ]);
    messenger.registerActionHandler('RemoteFeatureFlagController:getState', () => ({
      remoteFeatureFlags: state.remoteFeatureFlags,
      cacheTimestamp: Date.now(),
    }));
  } else {
    messenger.registerActionHandler('AccountsController:getSelectedAccount', () => state.accounts[0]);
  }

  for (const name of RECORDED_EVENTS) {
    messenger.subscribe(name, (payload) => recorder.event(name, payload));
  }

  const backend = new coreBackend.BackendWebSocketService({
    messenger,
    url,
    isEnabled: () => state.enabled,
    ...serviceOptions,
  });
  const activity = new coreBackend.AccountActivityService({ messenger });
  let ohlcv;
  if (info.ohlcv && coreBackend.OHLCVService) {
    ohlcv = new coreBackend.OHLCVService({ messenger });
    if (typeof ohlcv.init === 'function') {
      ohlcv.init();
    }
  }

  return {
    recorder,
    messenger,
    backend,
    activity,
    ohlcv,
    state,
    info,
    /** Start the connection the way the wallet does on unlock / app open. */
    connect() {
      return backend.connect();
    },
    /** Switch the selected account(s) and fire the event the service listens to. */
    selectAccounts(newAccounts) {
      state.accounts = [...newAccounts];
      if (info.accountGroups) {
        messenger.publish('AccountTreeController:selectedAccountGroupChange', 'group-2', 'group-1');
      } else {
        messenger.publish('AccountsController:selectedAccountChange', state.accounts[0]);
      }
    },
    connectionState() {
      return backend.getConnectionInfo().state;
    },
    /** Tear down (stops reconnects; the socket close may still be in flight). */
    destroy() {
      state.enabled = false;
      for (const service of [ohlcv, activity, backend]) {
        try {
          service?.destroy?.();
        } catch {
          // ignore
        }
      }
    },
    /**
     * After destroy() and after the gateway is gone: wait until the socket is
     * closed, then clear a reconnect timer that a 1006 close may have scheduled.
     */
    async settle(timeoutMs = 5000) {
      const deadline = Date.now() + timeoutMs;
      while (backend.getConnectionInfo().state !== 'disconnected' && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      backend.destroy();
    },
  };
}
