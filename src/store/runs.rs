//! Build runs (docs/observability.md): one row per `forge build`, one per node and run with
//! what happened to it, when, on which worker, its peak memory and output size. Written as
//! the run goes, so `forge status` in another shell sees a run live; kept for `forge history`
//! and `forge report`.

use rusqlite::{params, OptionalExtension, Row};
use serde::Serialize;

use super::{Store, StoreError};
use crate::hash::Digest;

pub type RunId = i64;

/// One `forge build` invocation.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub id: RunId,
    pub started_ms: i64,
    pub finished_ms: Option<i64>,
    /// What was asked for (files and `--package` names), as typed.
    pub targets: String,
    /// Nodes in the run's graph.
    pub total: u64,
    pub jobs: u64,
    /// The forge process running it (to tell a live run from an interrupted one).
    pub pid: u32,
    pub host: String,
    /// `running`, `succeeded`, `failed`, or `interrupted` (the process died; see `residue`).
    pub status: String,
}

/// What happened to one node in one run.
#[derive(Debug, Clone, Serialize)]
pub struct RunNode {
    pub name: String,
    pub drv_hash: Digest,
    /// `queued` (expected to be built), `running`, `built`, `cached`, `substituted`,
    /// `failed`, `skipped`, `not-needed`, or `interrupted` (was queued or running when the
    /// run's process died).
    pub result: String,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    pub worker: Option<u64>,
    /// Bytes, largest process of the build.
    pub peak_memory: Option<u64>,
    pub out_hash: Option<Digest>,
    /// Bytes of regular files in the output.
    pub out_size: Option<u64>,
    pub error: Option<String>,
    /// What the run expected it to take, when it planned it (milliseconds).
    pub expected_ms: Option<u64>,
    /// The directory its recipe is in (`ch6`, `stages`, ...): the chapter of a long run.
    pub phase: Option<String>,
    /// Its recipe's `[requirements] sbu` hint.
    pub sbu_hint: Option<f64>,
}

impl RunNode {
    /// Wall time, when it ran.
    pub fn duration_ms(&self) -> Option<i64> {
        Some(self.finished_ms? - self.started_ms?)
    }
}

const RUN_COLUMNS: &str = "id, started_ms, finished_ms, targets, total, jobs, pid, host, status";
/// Of `run_nodes n`.
const NODE_COLUMNS: &str =
    "n.name, n.drv_hash, n.result, n.started_ms, n.finished_ms, n.worker, n.peak_memory, n.out_hash, n.out_size, n.error, n.expected_ms, n.phase, n.sbu";
/// How many columns NODE_COLUMNS has (a query may add a run's id and start after them).
const NODE_COLUMN_COUNT: usize = 13;

fn run_row(r: &Row) -> rusqlite::Result<Run> {
    Ok(Run {
        id: r.get(0)?,
        started_ms: r.get(1)?,
        finished_ms: r.get(2)?,
        targets: r.get(3)?,
        total: r.get::<_, i64>(4)? as u64,
        jobs: r.get::<_, i64>(5)? as u64,
        pid: r.get::<_, i64>(6)? as u32,
        host: r.get(7)?,
        status: r.get(8)?,
    })
}

/// A row of NODE_COLUMNS with its hashes still in hex (parsed, with a store error naming
/// the column, outside the query).
struct RawNode {
    node: RunNode,
    drv_hex: String,
    out_hex: Option<String>,
}

fn node_row(r: &Row) -> rusqlite::Result<RawNode> {
    let unsigned = |v: Option<i64>| v.map(|v| v.max(0) as u64);
    Ok(RawNode {
        node: RunNode {
            name: r.get(0)?,
            drv_hash: Digest([0; 32]),
            result: r.get(2)?,
            started_ms: r.get(3)?,
            finished_ms: r.get(4)?,
            worker: unsigned(r.get(5)?),
            peak_memory: unsigned(r.get(6)?),
            out_hash: None,
            out_size: unsigned(r.get(8)?),
            error: r.get(9)?,
            expected_ms: unsigned(r.get(10)?),
            phase: r.get(11)?,
            sbu_hint: r.get(12)?,
        },
        drv_hex: r.get(1)?,
        out_hex: r.get(7)?,
    })
}

fn median(mut times: Vec<i64>) -> Option<u64> {
    times.sort_unstable();
    times.get(times.len() / 2).map(|&t| t.max(0) as u64)
}

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

impl Store {
    /// Record the start of a run now; returns its id.
    pub fn begin_run(&self, targets: &str, total: usize, jobs: usize) -> Result<RunId, StoreError> {
        self.claim_owner()?;
        self.db.write("record a run", |tx| {
            tx.execute(
                "INSERT INTO runs (started_ms, targets, total, jobs, pid, host, status, owner) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'running', ?7)",
                params![now_ms(), targets, total as i64, jobs as i64, std::process::id() as i64, self.host, super::residue::process_token()],
            )?;
            Ok(tx.last_insert_rowid())
        })
    }

    /// Record (or update) what happened to nodes of `run`, in one transaction. `out_size` is
    /// looked up from the object when a node has an output.
    pub fn record_run_nodes(&self, run: RunId, nodes: &[RunNode]) -> Result<(), StoreError> {
        if nodes.is_empty() {
            return Ok(());
        }
        self.db.write("record a run's nodes", |tx| {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO run_nodes (run_id, name, drv_hash, result, started_ms, finished_ms, worker, peak_memory, out_hash, out_size, error, expected_ms, phase, sbu)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, (SELECT size FROM objects WHERE out_hash = ?9), ?10, ?11, ?12, ?13)
                 ON CONFLICT (run_id, name) DO UPDATE SET result = excluded.result,
                   expected_ms = COALESCE(excluded.expected_ms, run_nodes.expected_ms), phase = COALESCE(excluded.phase, run_nodes.phase), sbu = COALESCE(excluded.sbu, run_nodes.sbu),
                   started_ms = COALESCE(run_nodes.started_ms, excluded.started_ms), finished_ms = excluded.finished_ms,
                   worker = COALESCE(excluded.worker, run_nodes.worker), peak_memory = excluded.peak_memory,
                   out_hash = excluded.out_hash, out_size = excluded.out_size, error = excluded.error",
            )?;
            for node in nodes {
                stmt.execute(params![
                    run,
                    node.name,
                    node.drv_hash.to_hex(),
                    node.result,
                    node.started_ms,
                    node.finished_ms,
                    node.worker.map(|w| w as i64),
                    node.peak_memory.map(|m| m as i64),
                    node.out_hash.map(|o| o.to_hex()),
                    node.error,
                    node.expected_ms.map(|e| e as i64),
                    node.phase,
                    node.sbu_hint
                ])?;
            }
            Ok(())
        })
    }

    pub fn finish_run(&self, run: RunId, succeeded: bool) -> Result<(), StoreError> {
        let status = if succeeded { "succeeded" } else { "failed" };
        self.db.write("finish a run", |tx| {
            tx.execute("UPDATE runs SET finished_ms = ?2, status = ?3 WHERE id = ?1", params![run, now_ms(), status])?;
            Ok(())
        })
    }

    /// The run `id`, or the newest run.
    pub fn run(&self, id: Option<RunId>) -> Result<Option<Run>, StoreError> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE ?1 IS NULL OR id = ?1 ORDER BY id DESC LIMIT 1");
        self.db.read("read runs", |c| c.query_row(&sql, [id], run_row).optional())
    }

    /// Every node recorded for `run`, in the order they started (unstarted ones last).
    pub fn run_nodes(&self, run: RunId) -> Result<Vec<RunNode>, StoreError> {
        let sql = format!("SELECT {NODE_COLUMNS} FROM run_nodes n WHERE n.run_id = ?1 ORDER BY n.started_ms IS NULL, n.started_ms, n.name");
        self.query_nodes(&sql, params![run]).map(|rows| rows.into_iter().map(|(_, _, n)| n).collect())
    }

    /// What happened to package `name` in the latest `limit` runs that included it, newest
    /// first, with each run's id and start.
    pub fn node_history(&self, name: &str, limit: usize) -> Result<Vec<(RunId, i64, RunNode)>, StoreError> {
        let sql = format!(
            "SELECT {NODE_COLUMNS}, r.id, r.started_ms FROM run_nodes n JOIN runs r ON r.id = n.run_id
             WHERE n.name = ?1 ORDER BY n.run_id DESC LIMIT ?2"
        );
        self.query_nodes(&sql, params![name, limit as i64])
    }

    /// The recent build times of `name` (milliseconds, newest first, at most `limit`):
    /// what the ETA and the scheduler expect of it.
    pub fn build_times(&self, name: &str, limit: usize) -> Result<Vec<i64>, StoreError> {
        self.db.read("read build times", |c| {
            let mut stmt = c.prepare_cached(
                "SELECT finished_ms - started_ms FROM run_nodes WHERE name = ?1 AND result = 'built'
                 AND started_ms IS NOT NULL AND finished_ms IS NOT NULL ORDER BY run_id DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![name, limit as i64], |r| r.get(0))?;
            rows.collect()
        })
    }

    /// Rows of `NODE_COLUMNS`, optionally followed by a run id and its start (else 0, 0).
    /// The median of `name`'s last five recorded build times, in milliseconds: what it is
    /// expected to take next time (and, for the SBU reference package, what 1 SBU is here).
    pub fn median_build_time(&self, name: &str) -> Result<Option<u64>, StoreError> {
        Ok(median(self.build_times(name, 5)?))
    }

    /// [`Store::median_build_time`] of every package ever built in a recorded run, in one query
    /// (a 10,000-node plan must not ask 10,000 times).
    pub fn median_build_times(&self) -> Result<std::collections::HashMap<String, u64>, StoreError> {
        let rows: Vec<(String, i64)> = self.db.read("read build times", |c| {
            let mut stmt = c.prepare_cached(
                "SELECT name, ms FROM (
                   SELECT name, finished_ms - started_ms AS ms,
                          ROW_NUMBER() OVER (PARTITION BY name ORDER BY run_id DESC) AS recent
                   FROM run_nodes WHERE result = 'built' AND started_ms IS NOT NULL AND finished_ms IS NOT NULL)
                 WHERE recent <= 5",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })?;
        let mut by_name: std::collections::HashMap<String, Vec<i64>> = Default::default();
        for (name, ms) in rows {
            by_name.entry(name).or_default().push(ms);
        }
        Ok(by_name.into_iter().filter_map(|(name, times)| Some((name, median(times)?))).collect())
    }

    fn query_nodes(&self, sql: &str, args: impl rusqlite::Params) -> Result<Vec<(RunId, i64, RunNode)>, StoreError> {
        let rows: Vec<(RawNode, RunId, i64)> = self.db.read("read run nodes", |c| {
            let mut stmt = c.prepare_cached(sql)?;
            let extra = stmt.column_count() > NODE_COLUMN_COUNT;
            let rows = stmt.query_map(args, |r| {
                let (id, start) = if extra { (r.get(NODE_COLUMN_COUNT)?, r.get(NODE_COLUMN_COUNT + 1)?) } else { (0, 0) };
                Ok((node_row(r)?, id, start))
            })?;
            rows.collect()
        })?;
        rows.into_iter()
            .map(|(raw, run_id, run_start)| {
                let RawNode { mut node, drv_hex, out_hex } = raw;
                node.drv_hash = self.db.digest(&drv_hex, "drv_hash")?;
                node.out_hash = out_hex.map(|o| self.db.digest(&o, "out_hash")).transpose()?;
                Ok((run_id, run_start, node))
            })
            .collect()
    }
}
