// Realistic payloads (the account-activity.v1 shape from client-protocol.md).

import crypto from 'node:crypto';

export const USDC_BASE = '0x833589fcd6edb6e08f4c7c32d4f71b54bda02913';
// Mixed case on purpose: OHLCV channels carry the caller's CAIP-19 id verbatim.
export const USDC_BASE_CAIP19 = 'eip155:8453/erc20:0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913';

export function randomEvmAddress() {
  return `0x${crypto.randomBytes(20).toString('hex')}`;
}

const B58 = '123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz';
export function randomSolanaAddress() {
  const bytes = crypto.randomBytes(44);
  let out = '';
  for (const b of bytes) {
    out += B58[b % 58];
  }
  return out;
}

function txHash() {
  return `0x${crypto.randomBytes(32).toString('hex')}`;
}

/**
 * An EVM account-activity message (~600 bytes serialized): an incoming USDC
 * transfer plus the native gas balance.
 */
export function evmActivity(address, { chain = 'eip155:8453', from = randomEvmAddress() } = {}) {
  const now = Math.floor(Date.now() / 1000);
  const msg = {
    address,
    tx: {
      id: txHash(),
      chain,
      status: 'confirmed',
      timestamp: now,
      from,
      to: address,
    },
    updates: [
      {
        asset: {
          fungible: true,
          type: `${chain}/erc20:${USDC_BASE}`,
          unit: 'USDC',
          decimals: 6,
        },
        postBalance: { amount: '0xc350' },
        transfers: [{ from, to: address, amount: '0x2710' }],
      },
      {
        asset: {
          fungible: true,
          type: `${chain}/slip44:60`,
          unit: 'ETH',
          decimals: 18,
        },
        postBalance: { amount: '0x2386f26fc10000', metadata: { blockNumber: 36912345 } },
        transfers: [],
      },
    ],
  };
  return msg;
}

export function solanaActivity(address, { chain = 'solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp' } = {}) {
  const from = randomSolanaAddress();
  return {
    address,
    tx: {
      id: randomSolanaAddress() + randomSolanaAddress(),
      chain,
      status: 'confirmed',
      timestamp: Math.floor(Date.now() / 1000),
      from,
      to: address,
    },
    updates: [
      {
        asset: {
          fungible: true,
          type: `${chain}/token:EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v`,
          unit: 'USDC',
          decimals: 6,
        },
        postBalance: { amount: '125000000' },
        transfers: [{ from, to: address, amount: '25000000' }],
      },
    ],
  };
}

export function ohlcvBar() {
  const minute = Math.floor(Date.now() / 60_000) * 60;
  return {
    timestamp: minute,
    open: 0.99987,
    high: 1.00031,
    low: 0.99952,
    close: 1.00004,
    volume: 1834523.77,
  };
}

export function activityChannel(namespace, ref, address) {
  return `account-activity.v1.${namespace}:${ref}:${address}`;
}
