-- The durable publication log (src/history). One row per stream (an account across the
-- chains of its namespace) holds the stream's epoch and the last offset handed out; the
-- publications of the current epoch hang off it by the stream's integer id, so that the
-- per-publication index entries are a few bytes rather than the ~60-byte stream key.
CREATE TABLE IF NOT EXISTS streams (
    id            INTEGER PRIMARY KEY,
    stream        TEXT    NOT NULL UNIQUE,
    epoch         TEXT    NOT NULL,
    -- Highest offset assigned in this epoch (0 = none yet). Offsets are never reused.
    last_offset   INTEGER NOT NULL DEFAULT 0,
    -- Offsets at or below this were removed by count retention; lets the trimmer skip
    -- streams with nothing to do without scanning their publications.
    trim_floor    INTEGER NOT NULL DEFAULT 0,
    created_at_ms INTEGER NOT NULL
);

-- A rowid table: rows are appended at the end of the table in commit order (one hot page per
-- batch), and age retention walks the rowids from the oldest, so `published_at_ms` needs no
-- index of its own.
CREATE TABLE IF NOT EXISTS publications (
    stream_id       INTEGER NOT NULL,
    stream_offset   INTEGER NOT NULL,
    channel         TEXT    NOT NULL,
    payload         TEXT    NOT NULL,
    idempotency_key TEXT,
    published_at_ms INTEGER NOT NULL,
    PRIMARY KEY (stream_id, stream_offset)
);

-- A publisher's retry is recognised by (stream, key) while the original is retained.
CREATE UNIQUE INDEX IF NOT EXISTS publications_idempotency
    ON publications (stream_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
