-- forge store database, migration 0 (store layout forge-store-v1).
--
-- Owned by src/store/. Embedded in the binary; later schema changes are appended as new
-- migrations in src/store/db.rs and never edit this file (PRAGMA user_version counts the
-- migrations applied). Hashes are 64 lowercase hex digits; times are Unix seconds (UTC).
-- Rows are history: gc and repair flip objects.present, they never delete realisations.

-- One row per object that was ever registered under objects/<out_hash>/.
CREATE TABLE objects (
    out_hash      TEXT PRIMARY KEY NOT NULL,
    size          INTEGER NOT NULL,            -- total bytes of regular files
    files         INTEGER NOT NULL,            -- number of regular files
    registered_at INTEGER NOT NULL,
    present       INTEGER NOT NULL DEFAULT 1   -- 0 once gc or verify --repair removed it
) STRICT;

-- Canonical derivations by drv hash (bytes defined by the derivation module, forge-drv-v1).
CREATE TABLE derivations (
    drv_hash  TEXT PRIMARY KEY NOT NULL,
    name      TEXT NOT NULL,
    version   TEXT NOT NULL,
    canonical BLOB NOT NULL,
    added_at  INTEGER NOT NULL
) STRICT;

-- Every time a derivation was satisfied: drv hash -> out hash and resolved key -> out hash.
CREATE TABLE realisations (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    drv_hash     TEXT NOT NULL,
    resolved_key TEXT NOT NULL,
    out_hash     TEXT NOT NULL,
    name         TEXT NOT NULL,
    origin       TEXT NOT NULL CHECK (origin IN ('built', 'imported', 'substituted', 'cutoff')),
    created_at   INTEGER NOT NULL,
    duration_ms  INTEGER NOT NULL,
    host         TEXT NOT NULL
) STRICT;
CREATE INDEX realisations_by_drv ON realisations (drv_hash, created_at);
CREATE INDEX realisations_by_resolved ON realisations (resolved_key, created_at);
CREATE INDEX realisations_by_out ON realisations (out_hash);

-- Build attempts, successful or not; the log lives at <store>/<log_path>.
CREATE TABLE builds (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    drv_hash    TEXT NOT NULL,
    name        TEXT NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    status      TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    out_hash    TEXT,                          -- when succeeded
    reason      TEXT,                          -- when failed
    log_path    TEXT NOT NULL                  -- relative to the store directory
) STRICT;
CREATE INDEX builds_by_name ON builds (name, id);

-- GC roots: a named set of out hashes (a profile, a CI pin, ...).
CREATE TABLE roots (
    name       TEXT NOT NULL,
    out_hash   TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (name, out_hash)
) STRICT;

-- Source files kept under sources/<algo>-<hex>, by checksum ("algo:hex").
CREATE TABLE sources (
    checksum TEXT PRIMARY KEY NOT NULL,
    size     INTEGER NOT NULL,
    added_at INTEGER NOT NULL
) STRICT;
