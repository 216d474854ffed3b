//! The SQLite side of the store: opening (WAL, busy timeout), append-only migrations keyed on
//! `PRAGMA user_version` (migration 0 is `store-schema.sql`), and the queries.
//!
//! Everything here takes a `&Connection`/`&Transaction`; locking the connection and turning
//! `rusqlite::Error` into [`StoreError::Db`] is done by [`Db`].

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use crate::hash::Digest;

use super::{Realisation, StoreError};

/// Schema migrations, applied in order; append only, never edit a shipped one.
pub(crate) const MIGRATIONS: &[&str] = &[
    include_str!("../../store-schema.sql"),
    // 1: `forge build --dry-run` and `forge show` ask for a package's last realisation by name.
    "CREATE INDEX realisations_by_name ON realisations (name, created_at);",
    // 2: substituters' negative answers ("this cache has no realisation of drv"), believed
    // for a short time so that a build does not ask again for every node (docs/cache.md).
    "CREATE TABLE cache_misses (
        cache      TEXT NOT NULL,
        drv_hash   TEXT NOT NULL,
        checked_at INTEGER NOT NULL,
        PRIMARY KEY (cache, drv_hash)
    ) STRICT;",
    // 3: reproducibility evidence (docs/reproducibility.md). Every out hash anyone produced or
    // signed for a derivation, by whom, first and last seen: this store's builds, `--check`
    // rounds, caches' signed realisations seen by `forge audit` and substitution. Never
    // deleted; a derivation with two out hashes here is non-deterministic (the divergence
    // ledger). `built_against`: the input outputs each local build used.
    "CREATE TABLE attestations (
        drv_hash   TEXT NOT NULL,
        name       TEXT NOT NULL,
        out_hash   TEXT NOT NULL,
        source     TEXT NOT NULL CHECK (source IN ('build', 'check', 'cache')),
        witness    TEXT NOT NULL,
        detail     TEXT NOT NULL,
        first_seen INTEGER NOT NULL,
        last_seen  INTEGER NOT NULL,
        PRIMARY KEY (drv_hash, out_hash, source, witness, detail)
    ) STRICT;
    CREATE INDEX attestations_by_name ON attestations (name, last_seen);
    CREATE TABLE built_against (
        drv_hash   TEXT NOT NULL,
        out_hash   TEXT NOT NULL,
        input_name TEXT NOT NULL,
        input_drv  TEXT NOT NULL,
        input_out  TEXT NOT NULL,
        PRIMARY KEY (drv_hash, out_hash, input_drv, input_out)
    ) STRICT;
    CREATE INDEX built_against_by_input ON built_against (input_drv, input_out);",
    // 4: build runs and what happened to each node in them (docs/observability.md): live
    // status for `forge status`, metrics for `forge history`, timelines for `forge report`.
    // Times are Unix milliseconds; a node's are absolute too.
    "CREATE TABLE runs (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        started_ms  INTEGER NOT NULL,
        finished_ms INTEGER,
        targets     TEXT NOT NULL,
        total       INTEGER NOT NULL,
        jobs        INTEGER NOT NULL,
        pid         INTEGER NOT NULL,
        host        TEXT NOT NULL,
        status      TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed'))
    ) STRICT;
    CREATE TABLE run_nodes (
        run_id      INTEGER NOT NULL,
        name        TEXT NOT NULL,
        drv_hash    TEXT NOT NULL,
        result      TEXT NOT NULL CHECK (result IN
                      ('queued', 'running', 'built', 'cached', 'substituted', 'failed', 'skipped', 'not-needed')),
        started_ms  INTEGER,
        finished_ms INTEGER,
        worker      INTEGER,
        peak_memory INTEGER,
        out_hash    TEXT,
        out_size    INTEGER,
        error       TEXT,
        PRIMARY KEY (run_id, name)
    ) STRICT;
    CREATE INDEX run_nodes_by_name ON run_nodes (name, run_id);",
    // 5: crash residue (docs/reliability.md): a run whose process died becomes 'interrupted',
    // with its unfinished nodes; `owner` is the process's owner-lock token. SQLite cannot
    // change a CHECK, so both tables are rebuilt.
    "CREATE TABLE runs_v5 (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        started_ms  INTEGER NOT NULL,
        finished_ms INTEGER,
        targets     TEXT NOT NULL,
        total       INTEGER NOT NULL,
        jobs        INTEGER NOT NULL,
        pid         INTEGER NOT NULL,
        host        TEXT NOT NULL,
        status      TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'interrupted')),
        owner       TEXT
    ) STRICT;
    INSERT INTO runs_v5 (id, started_ms, finished_ms, targets, total, jobs, pid, host, status)
        SELECT id, started_ms, finished_ms, targets, total, jobs, pid, host, status FROM runs;
    DROP TABLE runs;
    ALTER TABLE runs_v5 RENAME TO runs;
    CREATE TABLE run_nodes_v5 (
        run_id      INTEGER NOT NULL,
        name        TEXT NOT NULL,
        drv_hash    TEXT NOT NULL,
        result      TEXT NOT NULL CHECK (result IN
                      ('queued', 'running', 'built', 'cached', 'substituted', 'failed', 'skipped', 'not-needed', 'interrupted')),
        started_ms  INTEGER,
        finished_ms INTEGER,
        worker      INTEGER,
        peak_memory INTEGER,
        out_hash    TEXT,
        out_size    INTEGER,
        error       TEXT,
        PRIMARY KEY (run_id, name)
    ) STRICT;
    INSERT INTO run_nodes_v5 SELECT * FROM run_nodes;
    DROP TABLE run_nodes;
    ALTER TABLE run_nodes_v5 RENAME TO run_nodes;
    CREATE INDEX run_nodes_by_name ON run_nodes (name, run_id);",
    // 6: what `forge status` needs for a long run (docs/observability.md): each queued node's
    // expected build time when the run planned it (recorded median, else its recipe's SBU
    // hint times this machine's SBU) and its phase (the directory of its recipe, e.g. `ch6`).
    "ALTER TABLE run_nodes ADD COLUMN expected_ms INTEGER;
    ALTER TABLE run_nodes ADD COLUMN phase TEXT;",
    // 7: each node's recipe SBU hint, so that `forge status` can expect it to take hint x
    // SBU as soon as the run has learnt the SBU (a new store learns it from its first package).
    "ALTER TABLE run_nodes ADD COLUMN sbu REAL;",
];

/// Concurrent forge processes wait this long for each other's write transactions.
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

/// The store's connection behind a mutex (so `Store` is `Send + Sync`).
#[derive(Debug)]
pub(crate) struct Db {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl Db {
    pub(crate) fn open(path: &Path) -> Result<Db, StoreError> {
        let err = |context: &str| {
            let path = path.to_path_buf();
            let context = context.to_string();
            move |source| StoreError::Db { path, context, source }
        };
        let mut conn = Connection::open(path).map_err(err("open"))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(err("set busy timeout"))?;
        // WAL: readers never block the writer; NORMAL sync keeps the database consistent across
        // a crash of the process (the case registration must survive) at a fraction of FULL's cost.
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(err("enable WAL"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::CorruptDb { path: path.to_path_buf(), detail: format!("journal mode is {mode}, not wal") });
        }
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(err("set synchronous"))?;
        migrate(&mut conn, MIGRATIONS, path)?;
        Ok(Db { conn: Mutex::new(conn), path: path.to_path_buf() })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the guard cannot leave a transaction open (rusqlite rolls back
        // on drop), so the connection of a poisoned mutex is still good.
        self.conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Run read-only queries.
    pub(crate) fn read<T>(&self, context: &str, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        let conn = self.lock();
        f(&conn).map_err(|source| self.error(context, source))
    }

    /// Run `f` in one immediate (write-locking) transaction, committed if `f` succeeds.
    pub(crate) fn write<T>(&self, context: &str, f: impl FnOnce(&Transaction) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        let mut conn = self.lock();
        let run = |conn: &mut Connection| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let value = f(&tx)?;
            tx.commit()?;
            Ok(value)
        };
        run(&mut conn).map_err(|source| self.error(context, source))
    }

    fn error(&self, context: &str, source: rusqlite::Error) -> StoreError {
        StoreError::Db { path: self.path.clone(), context: context.to_string(), source }
    }

    pub(crate) fn corrupt(&self, detail: String) -> StoreError {
        StoreError::CorruptDb { path: self.path.clone(), detail }
    }

    pub(crate) fn digest(&self, hex: &str, column: &str) -> Result<Digest, StoreError> {
        hex.parse().map_err(|e| self.corrupt(format!("bad {column} {hex:?}: {e}")))
    }
}

/// Apply the migrations not yet recorded in `user_version`, each in its own transaction.
/// Running it again (or from two processes at once) applies nothing twice.
pub(crate) fn migrate(conn: &mut Connection, migrations: &[&str], path: &Path) -> Result<(), StoreError> {
    let err = |source| StoreError::Db { path: path.to_path_buf(), context: "migrate schema".into(), source };
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(err)?;
    if version < 0 || version as usize > migrations.len() {
        return Err(StoreError::SchemaTooNew { path: path.to_path_buf(), found: version, known: migrations.len() });
    }
    for sql in &migrations[version as usize..] {
        tx.execute_batch(sql).map_err(err)?;
    }
    tx.pragma_update(None, "user_version", migrations.len() as i64).map_err(err)?;
    tx.commit().map_err(err)
}

// ---- realisations --------------------------------------------------------------------------

/// A realisation row with hashes still in hex (parsed by the caller, which can report errors).
pub(crate) struct RawRealisation {
    pub drv_hash: String,
    pub resolved_key: String,
    pub out_hash: String,
    pub name: String,
    pub origin: String,
    pub created_at: i64,
    pub duration_ms: i64,
}

/// Realisations whose `column` equals `key` and whose object is present, newest first.
pub(crate) fn realisations_with_present_object(
    conn: &Connection,
    column: RealisationKey,
    key: &Digest,
) -> rusqlite::Result<Vec<RawRealisation>> {
    let sql = format!(
        "SELECT r.drv_hash, r.resolved_key, r.out_hash, r.name, r.origin, r.created_at, r.duration_ms
         FROM realisations r JOIN objects o ON o.out_hash = r.out_hash AND o.present = 1
         WHERE r.{} = ?1 ORDER BY r.created_at DESC, r.id DESC",
        column.column()
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([key.to_hex()], raw_realisation)?;
    rows.collect()
}

/// The newest realisation of every derivation whose object is present (what `forge push`
/// uploads when no FILE is named).
pub(crate) fn all_realisations_with_present_object(conn: &Connection) -> rusqlite::Result<Vec<RawRealisation>> {
    let mut stmt = conn.prepare(
        "SELECT r.drv_hash, r.resolved_key, r.out_hash, r.name, r.origin, r.created_at, r.duration_ms
         FROM realisations r JOIN objects o ON o.out_hash = r.out_hash AND o.present = 1
         WHERE r.id = (SELECT MAX(id) FROM realisations r2 JOIN objects o2 ON o2.out_hash = r2.out_hash
                       AND o2.present = 1 WHERE r2.drv_hash = r.drv_hash)
         ORDER BY r.id",
    )?;
    let rows = stmt.query_map([], raw_realisation)?;
    rows.collect()
}

/// Present objects that realised package `name`, newest first (at most `limit`).
pub(crate) fn present_outs_by_name(conn: &Connection, name: &str, limit: usize) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT r.out_hash FROM realisations r JOIN objects o ON o.out_hash = r.out_hash AND o.present = 1
         WHERE r.name = ?1 GROUP BY r.out_hash ORDER BY MAX(r.id) DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(rusqlite::params![name, limit as i64], |r| r.get(0))?;
    rows.collect()
}

/// A row of `SELECT drv_hash, resolved_key, out_hash, name, origin, created_at, duration_ms`.
fn raw_realisation(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawRealisation> {
    Ok(RawRealisation {
        drv_hash: r.get(0)?,
        resolved_key: r.get(1)?,
        out_hash: r.get(2)?,
        name: r.get(3)?,
        origin: r.get(4)?,
        created_at: r.get(5)?,
        duration_ms: r.get(6)?,
    })
}

/// The newest realisation of any derivation of package `name`, present or not.
pub(crate) fn latest_realisation_by_name(conn: &Connection, name: &str) -> rusqlite::Result<Option<RawRealisation>> {
    Ok(realisations_by_name(conn, name, 1)?.into_iter().next())
}

/// Realisations of package `name`, newest first, at most `limit`.
pub(crate) fn realisations_by_name(conn: &Connection, name: &str, limit: usize) -> rusqlite::Result<Vec<RawRealisation>> {
    let mut stmt = conn.prepare_cached(
        "SELECT drv_hash, resolved_key, out_hash, name, origin, created_at, duration_ms
         FROM realisations WHERE name = ?1 ORDER BY created_at DESC, id DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(rusqlite::params![name, limit as i64], raw_realisation)?;
    rows.collect()
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum RealisationKey {
    Drv,
    Resolved,
}

impl RealisationKey {
    fn column(self) -> &'static str {
        match self {
            RealisationKey::Drv => "drv_hash",
            RealisationKey::Resolved => "resolved_key",
        }
    }
}

pub(crate) fn insert_realisation(tx: &Transaction, r: &Realisation, host: &str) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO realisations (drv_hash, resolved_key, out_hash, name, origin, created_at, duration_ms, host)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        r.drv_hash.to_hex(),
        r.resolved_key.to_hex(),
        r.out_hash.to_hex(),
        r.name,
        r.origin.as_str(),
        r.created_at,
        i64::try_from(r.duration_ms).unwrap_or(i64::MAX),
        host
    ])?;
    Ok(())
}

// ---- objects -------------------------------------------------------------------------------

pub(crate) fn object_present(conn: &Connection, out: &Digest) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT present FROM objects WHERE out_hash = ?1")?
        .query_row([out.to_hex()], |r| r.get::<_, i64>(0))
        .optional()
        .map(|p| p == Some(1))
}

/// Record an object as present (a re-registration after gc flips `present` back).
pub(crate) fn upsert_object(tx: &Transaction, out: &Digest, files: u64, bytes: u64, now: i64) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO objects (out_hash, size, files, registered_at, present) VALUES (?1, ?2, ?3, ?4, 1)
         ON CONFLICT (out_hash) DO UPDATE SET present = 1, size = ?2, files = ?3, registered_at = ?4
         WHERE present = 0",
    )?
    .execute(params![out.to_hex(), bytes as i64, files as i64, now])?;
    Ok(())
}

pub(crate) fn mark_absent(tx: &Transaction, out: &Digest) -> rusqlite::Result<()> {
    tx.prepare_cached("UPDATE objects SET present = 0 WHERE out_hash = ?1")?.execute([out.to_hex()])?;
    Ok(())
}

/// Every present object: (out hash hex, size).
pub(crate) fn present_objects(conn: &Connection) -> rusqlite::Result<Vec<(String, i64)>> {
    let mut stmt = conn.prepare("SELECT out_hash, size FROM objects WHERE present = 1 ORDER BY out_hash")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

// ---- roots ---------------------------------------------------------------------------------

pub(crate) fn set_root(tx: &Transaction, name: &str, outs: &[Digest], now: i64) -> rusqlite::Result<()> {
    tx.execute("DELETE FROM roots WHERE name = ?1", [name])?;
    let mut insert = tx.prepare_cached("INSERT OR IGNORE INTO roots (name, out_hash, updated_at) VALUES (?1, ?2, ?3)")?;
    for out in outs {
        insert.execute(params![name, out.to_hex(), now])?;
    }
    Ok(())
}

pub(crate) fn rooted_hashes(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare("SELECT DISTINCT out_hash FROM roots")?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrating_twice_is_harmless_and_later_migrations_apply_once() {
        let tmp = tempfile::TempDir::new().unwrap();
        let path = tmp.path().join("db.sqlite");
        let mut conn = Connection::open(&path).unwrap();
        migrate(&mut conn, MIGRATIONS, &path).unwrap();
        conn.execute("INSERT INTO sources (checksum, size, added_at) VALUES ('sha256:00', 1, 2)", []).unwrap();
        migrate(&mut conn, MIGRATIONS, &path).unwrap();
        let count: i64 = conn.query_row("SELECT count(*) FROM sources", [], |r| r.get(0)).unwrap();
        assert_eq!(count, 1, "re-running migrations must keep the data");

        // A second migration is applied exactly once (it would fail if run twice).
        let mut with_next = MIGRATIONS.to_vec();
        with_next.push("ALTER TABLE sources ADD COLUMN origin TEXT");
        migrate(&mut conn, &with_next, &path).unwrap();
        migrate(&mut conn, &with_next, &path).unwrap();
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(version as usize, MIGRATIONS.len() + 1);
        conn.execute("UPDATE sources SET origin = 'test'", []).unwrap();
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let tmp = tempfile::TempDir::new().unwrap();
        let path = tmp.path().join("db.sqlite");
        let mut conn = Connection::open(&path).unwrap();
        let newer = MIGRATIONS.len() as i64 + 1;
        conn.pragma_update(None, "user_version", newer).unwrap();
        let err = migrate(&mut conn, MIGRATIONS, &path).unwrap_err();
        assert!(matches!(err, StoreError::SchemaTooNew { found, known, .. } if found == newer && known == MIGRATIONS.len()), "{err}");
    }

    #[test]
    fn opening_twice_enables_wal() {
        let tmp = tempfile::TempDir::new().unwrap();
        let path = tmp.path().join("db.sqlite");
        Db::open(&path).unwrap();
        let db = Db::open(&path).unwrap();
        let mode: String = db.read("journal", |c| c.query_row("PRAGMA journal_mode", [], |r| r.get(0))).unwrap();
        assert_eq!(mode, "wal");
    }
}

