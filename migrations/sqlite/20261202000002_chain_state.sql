-- Chain health that must survive a restart (src/chains): the operator's mode of each chain,
-- and the last time a node of the deployment saw the chain alive (written throttled), so a
-- starting node honours overrides and keeps a healthy chain up across a short restart.
CREATE TABLE IF NOT EXISTS chain_state (
    -- CAIP-2 chain id.
    chain        TEXT   PRIMARY KEY,
    -- 'auto', 'up' or 'down'.
    mode         TEXT   NOT NULL DEFAULT 'auto',
    -- Milliseconds since the Unix epoch of the last sign of life written; NULL: none yet.
    last_seen_ms BIGINT
);
