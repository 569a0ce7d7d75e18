-- The durable publication log (src/history). One row per stream (an account across the
-- chains of its namespace) holds the stream's epoch and the last offset handed out; the
-- publications of the current epoch hang off it.
CREATE TABLE IF NOT EXISTS streams (
    stream        TEXT    NOT NULL PRIMARY KEY,
    epoch         TEXT    NOT NULL,
    -- Highest offset assigned in this epoch (0 = none yet). Offsets are never reused.
    last_offset   INTEGER NOT NULL DEFAULT 0,
    -- Offsets at or below this were removed by count retention; lets the trimmer skip
    -- streams with nothing to do without scanning their publications.
    trim_floor    INTEGER NOT NULL DEFAULT 0,
    created_at_ms INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS publications (
    stream          TEXT    NOT NULL,
    stream_offset   INTEGER NOT NULL,
    channel         TEXT    NOT NULL,
    payload         TEXT    NOT NULL,
    idempotency_key TEXT,
    published_at_ms INTEGER NOT NULL,
    PRIMARY KEY (stream, stream_offset)
);

-- A publisher's retry is recognised by (stream, key) while the original is retained.
CREATE UNIQUE INDEX IF NOT EXISTS publications_idempotency
    ON publications (stream, idempotency_key) WHERE idempotency_key IS NOT NULL;

-- Age retention deletes the oldest rows first.
CREATE INDEX IF NOT EXISTS publications_published_at ON publications (published_at_ms);
