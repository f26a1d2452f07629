//! The node's SQLite database (WAL mode): the jobs submitted and how they
//! ended, each task's attempts and accepted result (so a requester killed
//! at any moment resumes its jobs without re-running a verified task), what
//! the provider side ran, each provider's verification record, and the
//! evidence against providers caught cheating.
//!
//! `synchronous=NORMAL`: in WAL mode a committed transaction survives the
//! process being killed (kill -9); only a power loss may take the last
//! ones back, and those tasks are then simply run again. The ledger, which
//! holds money, will use `FULL`.

use crate::StoreError;
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;
use types::{BlobHash, OutputFile};

/// How long a write waits for another connection's lock before failing.
const DB_BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Prepared statements kept per connection (rusqlite keeps 16 by default,
/// fewer than the statements this store runs).
const STATEMENT_CACHE_MAX: usize = 64;

pub struct Db {
    conn: Connection,
    /// Open [`Db::begin`]s: only the outermost begins and commits, so a
    /// caller can gather the writes of several steps into one commit.
    transaction_depth: std::cell::Cell<u32>,
}

/// A job as submitted: enough to take it up again after a restart without
/// the job file or its inputs (the module and inputs are blobs by hash).
#[derive(Clone, Debug, PartialEq)]
pub struct JobRecord {
    pub id: String,
    pub name: String,
    pub job_toml: String,
    pub base_dir: String,
    pub tasks: u64,
    pub module: BlobHash,
    pub program: String,
    pub inputs: Vec<(String, BlobHash)>,
    pub submitted_at_ms: u64,
    /// How it ended; `None` while it runs.
    pub end: Option<JobEnd>,
}

/// A job's end as recorded: completed, failed or cancelled.
#[derive(Clone, Debug, PartialEq)]
pub struct JobEnd {
    pub state: String,
    pub error: Option<String>,
    /// The assembled result's path, and its checksum where the job has one.
    pub result: Option<String>,
    pub checksum: Option<u64>,
    pub finished_at_ms: u64,
}

/// One execution handed to a provider, and how it ended (`None`: still out).
#[derive(Clone, Debug, PartialEq)]
pub struct Attempt {
    pub task: u64,
    pub attempt: u32,
    pub peer: String,
    pub sent_at_ms: u64,
    pub ended: Option<String>,
}

/// A task's accepted result, as the job keeps it.
#[derive(Clone, Debug, PartialEq)]
pub struct SettledTask {
    pub task: u64,
    pub fuel: u64,
    pub outputs: Vec<OutputFile>,
    /// How it was verified (the verifier's method, or "Unverified").
    pub method: String,
    /// Each provider paid for it (every one whose result agreed) and its fuel.
    pub payees: Vec<(String, u64)>,
}

/// A task the provider side ran for a requester and answered.
#[derive(Clone, Debug, PartialEq)]
pub struct Run {
    pub requester: String,
    pub job: String,
    pub task: u64,
    pub attempt: u32,
    pub fuel: u64,
    pub outcome: String,
    pub finished_at_ms: u64,
}

/// What a provider ran and was not yet paid for, summed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunTotals {
    pub tasks: u64,
    pub fuel: u64,
}

/// A provider's verification record (the `verify` crate's `Record`, stored).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reputation {
    pub verified: u64,
    pub disagreed: u64,
    pub timed_out: u64,
    pub streak: u64,
}

fn json(context: &str) -> impl FnOnce(serde_json::Error) -> StoreError + '_ {
    move |e| StoreError::Corrupt {
        what: format!("{context}: {e}"),
    }
}

fn sql(context: &str) -> impl FnOnce(rusqlite::Error) -> StoreError + '_ {
    move |e| StoreError::Io {
        context: context.to_owned(),
        source: std::io::Error::other(e.to_string()),
    }
}

impl Db {
    pub fn open(path: &Path) -> Result<Db, StoreError> {
        let conn = Connection::open(path).map_err(sql("open the database"))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql("enable WAL"))?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sql("set synchronous"))?;
        // The node has two connections (requester and provider) and a
        // reader may look in from outside: a locked moment is waited out.
        conn.busy_timeout(DB_BUSY_TIMEOUT)
            .map_err(sql("set the busy timeout"))?;
        Self::create(conn)
    }

    /// A database that lives in memory only: for measuring what durability
    /// costs, never for a node.
    pub fn open_in_memory() -> Result<Db, StoreError> {
        Self::create(Connection::open_in_memory().map_err(sql("open the database"))?)
    }

    fn create(conn: Connection) -> Result<Db, StoreError> {
        // Every statement of the hot paths is prepared once and kept.
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE_MAX);
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS jobs (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                job_toml TEXT NOT NULL,
                base_dir TEXT NOT NULL,
                tasks INTEGER NOT NULL,
                state TEXT NOT NULL,
                error TEXT,
                submitted_at_ms INTEGER NOT NULL,
                module TEXT NOT NULL,
                program TEXT NOT NULL,
                inputs TEXT NOT NULL,
                result TEXT,
                checksum INTEGER,
                finished_at_ms INTEGER
            );
            CREATE TABLE IF NOT EXISTS attempts (
                job TEXT NOT NULL,
                task INTEGER NOT NULL,
                attempt INTEGER NOT NULL,
                peer TEXT NOT NULL,
                sent_at_ms INTEGER NOT NULL,
                ended TEXT,
                PRIMARY KEY (job, task, attempt)
            );
            CREATE TABLE IF NOT EXISTS results (
                job TEXT NOT NULL,
                task INTEGER NOT NULL,
                fuel INTEGER NOT NULL,
                outputs TEXT NOT NULL,
                method TEXT NOT NULL,
                payees TEXT NOT NULL,
                PRIMARY KEY (job, task)
            );
            CREATE TABLE IF NOT EXISTS runs (
                requester TEXT NOT NULL,
                job TEXT NOT NULL,
                task INTEGER NOT NULL,
                attempt INTEGER NOT NULL,
                fuel INTEGER NOT NULL,
                outcome TEXT NOT NULL,
                finished_at_ms INTEGER NOT NULL
            );
            CREATE TABLE IF NOT EXISTS reputation (
                peer TEXT PRIMARY KEY,
                verified INTEGER NOT NULL,
                disagreed INTEGER NOT NULL,
                timed_out INTEGER NOT NULL,
                streak INTEGER NOT NULL
            );
            CREATE TABLE IF NOT EXISTS evidence (
                job TEXT NOT NULL,
                task INTEGER NOT NULL,
                peer TEXT NOT NULL,
                signed_body BLOB NOT NULL,
                signature BLOB NOT NULL,
                recorded_at_ms INTEGER NOT NULL
            );",
        )
        .map_err(sql("create tables"))?;
        // A database from before durable tasks lacks the job's plan; its
        // jobs cannot be resumed and are marked so.
        let columns: Vec<String> = conn
            .prepare("SELECT name FROM pragma_table_info('jobs')")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .map_err(sql("read the schema"))?;
        if !columns.iter().any(|c| c == "module") {
            conn.execute_batch(
                "ALTER TABLE jobs ADD COLUMN module TEXT NOT NULL DEFAULT '';
                 ALTER TABLE jobs ADD COLUMN program TEXT NOT NULL DEFAULT '';
                 ALTER TABLE jobs ADD COLUMN inputs TEXT NOT NULL DEFAULT '[]';
                 ALTER TABLE jobs ADD COLUMN result TEXT;
                 ALTER TABLE jobs ADD COLUMN checksum INTEGER;
                 ALTER TABLE jobs ADD COLUMN finished_at_ms INTEGER;
                 UPDATE jobs SET state = 'failed', error = 'written by an older plexus; cannot be resumed' WHERE state IN ('running', 'assembling');",
            )
            .map_err(sql("upgrade the jobs table"))?;
        }
        Ok(Db {
            conn,
            transaction_depth: std::cell::Cell::new(0),
        })
    }

    /// Records a job before its submission is acknowledged.
    pub fn insert_job(&self, job: &JobRecord) -> Result<(), StoreError> {
        let inputs = serde_json::to_string(&job.inputs).map_err(json("the job's inputs"))?;
        self.conn
            .prepare_cached("INSERT INTO jobs (id, name, job_toml, base_dir, tasks, state, submitted_at_ms, module, program, inputs)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'running', ?6, ?7, ?8, ?9)")
            .and_then(|mut s| s.execute(params![
                    job.id,
                    job.name,
                    job.job_toml,
                    job.base_dir,
                    job.tasks as i64,
                    job.submitted_at_ms as i64,
                    job.module.to_hex(),
                    job.program,
                    inputs
                ]))
            .map_err(sql("record the job"))?;
        Ok(())
    }

    /// Jobs that were running (or assembling) when the node stopped.
    pub fn unfinished_jobs(&self) -> Result<Vec<JobRecord>, StoreError> {
        Ok(self
            .recent_jobs(u64::MAX)?
            .into_iter()
            .filter(|j| j.end.is_none())
            .collect())
    }

    /// The newest `limit` jobs, oldest first, finished or not.
    pub fn recent_jobs(&self, limit: u64) -> Result<Vec<JobRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT * FROM (
                   SELECT id, name, job_toml, base_dir, tasks, submitted_at_ms, module, program, inputs,
                          state, error, result, checksum, finished_at_ms
                   FROM jobs ORDER BY submitted_at_ms DESC, id DESC LIMIT ?1)
                 ORDER BY submitted_at_ms, id",
            )
            .map_err(sql("read jobs"))?;
        let rows = stmt
            .query_map([limit.min(i64::MAX as u64) as i64], |r| {
                let state: String = r.get(9)?;
                let end = match state.as_str() {
                    "running" | "assembling" => None,
                    _ => Some(JobEnd {
                        state,
                        error: r.get(10)?,
                        result: r.get(11)?,
                        checksum: r.get::<_, Option<i64>>(12)?.map(|c| c as u64),
                        finished_at_ms: r.get::<_, Option<i64>>(13)?.unwrap_or(0) as u64,
                    }),
                };
                Ok((
                    JobRecord {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        job_toml: r.get(2)?,
                        base_dir: r.get(3)?,
                        tasks: r.get::<_, i64>(4)? as u64,
                        submitted_at_ms: r.get::<_, i64>(5)? as u64,
                        module: BlobHash([0; 32]),
                        program: r.get(7)?,
                        inputs: Vec::new(),
                        end,
                    },
                    r.get::<_, String>(6)?,
                    r.get::<_, String>(8)?,
                ))
            })
            .map_err(sql("read jobs"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql("read jobs"))?;
        rows.into_iter()
            .map(|(mut job, module, inputs)| {
                // Jobs from before durable tasks have no plan; they are
                // never resumed, only listed.
                job.module = if module.is_empty() {
                    BlobHash([0; 32])
                } else {
                    BlobHash::from_hex(&module).ok_or_else(|| StoreError::Corrupt {
                        what: format!("job {}: module hash {module:?}", job.id),
                    })?
                };
                job.inputs = serde_json::from_str(&inputs).map_err(json("a job's inputs"))?;
                Ok(job)
            })
            .collect()
    }

    /// Runs `f` in one transaction: its writes are committed together (one
    /// WAL append instead of one per write), when `f` returns. The writes
    /// report their own errors; `f` decides what to do with them.
    pub fn transaction<R>(&self, f: impl FnOnce(&Db) -> R) -> Result<R, StoreError> {
        self.begin()?;
        let result = f(self);
        self.commit()?;
        Ok(result)
    }

    /// Opens a transaction for the writes that follow, up to [`Db::commit`]
    /// (for callers that cannot hand a closure over, [`Db::transaction`]).
    /// Inside an open transaction it only counts: the outermost commit
    /// writes everything at once.
    pub fn begin(&self) -> Result<(), StoreError> {
        let depth = self.transaction_depth.get();
        if depth == 0 {
            self.run_cached("BEGIN IMMEDIATE")
                .map_err(sql("begin a transaction"))?;
        }
        self.transaction_depth.set(depth + 1);
        Ok(())
    }

    /// Whether a [`Db::begin`] is open (its writes not yet committed).
    pub fn in_transaction(&self) -> bool {
        self.transaction_depth.get() > 0
    }

    /// Ends a [`Db::begin`]; the outermost one commits. A failed commit is
    /// rolled back, so the connection is never left inside a transaction.
    pub fn commit(&self) -> Result<(), StoreError> {
        let depth = self.transaction_depth.get();
        if depth == 0 {
            return Err(StoreError::Io {
                context: "commit a transaction".into(),
                source: std::io::Error::other("no transaction is open"),
            });
        }
        self.transaction_depth.set(depth - 1);
        if depth > 1 {
            return Ok(());
        }
        if let Err(e) = self.run_cached("COMMIT") {
            let _ = self.conn.execute_batch("ROLLBACK");
            return Err(sql("commit a transaction")(e));
        }
        Ok(())
    }

    /// Abandons every open [`Db::begin`] and what was written since: a
    /// step whose writes cannot all be made leaves none of them.
    pub fn rollback(&self) -> Result<(), StoreError> {
        if self.transaction_depth.replace(0) == 0 {
            return Err(StoreError::Io {
                context: "roll back a transaction".into(),
                source: std::io::Error::other("no transaction is open"),
            });
        }
        self.conn
            .execute_batch("ROLLBACK")
            .map_err(sql("roll back a transaction"))
    }

    /// A statement without parameters or rows, prepared once (BEGIN and
    /// COMMIT run for every job: parsing them each time showed in profiles).
    fn run_cached(&self, statement: &str) -> rusqlite::Result<()> {
        self.conn.prepare_cached(statement)?.execute([]).map(|_| ())
    }

    /// An execution handed to `peer`: attempt numbers are never reused,
    /// so a result signed for an earlier attempt cannot be replayed.
    pub fn insert_attempt(
        &self,
        job: &str,
        task: u64,
        attempt: u32,
        peer: &str,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO attempts (job, task, attempt, peer, sent_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut s| s.execute(params![job, task as i64, attempt, peer, now_ms as i64]))
            .map_err(sql("record an attempt"))?;
        Ok(())
    }

    /// How an attempt ended (a result, or why there was none).
    pub fn end_attempt(
        &self,
        job: &str,
        task: u64,
        attempt: u32,
        ended: &str,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "UPDATE attempts SET ended = ?4 WHERE job = ?1 AND task = ?2 AND attempt = ?3",
            )
            .and_then(|mut s| s.execute(params![job, task as i64, attempt, ended]))
            .map_err(sql("end an attempt"))?;
        Ok(())
    }

    /// The highest attempt number used for each task of a job that has one.
    pub fn last_attempts(&self, job: &str) -> Result<Vec<(u64, u32)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT task, MAX(attempt) FROM attempts WHERE job = ?1 GROUP BY task")
            .map_err(sql("read attempts"))?;
        let rows = stmt
            .query_map([job], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))
            .map_err(sql("read attempts"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql("read attempts"))?;
        Ok(rows)
    }

    /// Every attempt of a job, in the order they were sent.
    pub fn attempts(&self, job: &str) -> Result<Vec<Attempt>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT task, attempt, peer, sent_at_ms, ended FROM attempts WHERE job = ?1 ORDER BY sent_at_ms, task, attempt",
            )
            .map_err(sql("read attempts"))?;
        let rows = stmt
            .query_map([job], |r| {
                Ok(Attempt {
                    task: r.get::<_, i64>(0)? as u64,
                    attempt: r.get(1)?,
                    peer: r.get(2)?,
                    sent_at_ms: r.get::<_, i64>(3)? as u64,
                    ended: r.get(4)?,
                })
            })
            .map_err(sql("read attempts"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql("read attempts"))?;
        Ok(rows)
    }

    /// How a job's ended attempts ended, each text with its count.
    pub fn attempt_ends(&self, job: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT ended, COUNT(*) FROM attempts WHERE job = ?1 AND ended IS NOT NULL GROUP BY ended ORDER BY ended",
            )
            .map_err(sql("read attempts"))?;
        let rows = stmt
            .query_map([job], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))
            .map_err(sql("read attempts"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql("read attempts"))?;
        Ok(rows)
    }

    /// Tasks of a job handed out at or after `since_ms`.
    pub fn tasks_attempted_since(&self, job: &str, since_ms: u64) -> Result<Vec<u64>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT DISTINCT task FROM attempts WHERE job = ?1 AND sent_at_ms >= ?2 ORDER BY task")
            .map_err(sql("read attempts"))?;
        let rows = stmt
            .query_map(params![job, since_ms as i64], |r| {
                Ok(r.get::<_, i64>(0)? as u64)
            })
            .map_err(sql("read attempts"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql("read attempts"))?;
        Ok(rows)
    }

    /// Attempts still open when the node stopped: they will never be
    /// answered (the connection they were sent on is gone).
    pub fn abandon_open_attempts(&self, job: &str, why: &str) -> Result<u64, StoreError> {
        let n = self
            .conn
            .prepare_cached("UPDATE attempts SET ended = ?2 WHERE job = ?1 AND ended IS NULL")
            .and_then(|mut s| s.execute(params![job, why]))
            .map_err(sql("end attempts"))?;
        Ok(n as u64)
    }

    /// Accepts a task's result, before anyone is told it is settled.
    pub fn settle_task(&self, job: &str, t: &SettledTask) -> Result<(), StoreError> {
        let outputs = serde_json::to_string(&t.outputs).map_err(json("a task's outputs"))?;
        let payees = serde_json::to_string(&t.payees).map_err(json("a task's payees"))?;
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO results (job, task, fuel, outputs, method, payees) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut s| {
                s.execute(params![job, t.task as i64, t.fuel as i64, outputs, t.method, payees])
            })
            .map_err(sql("record a result"))?;
        Ok(())
    }

    /// A settled task's result is void (one who vouched for it was caught).
    pub fn reopen_task(&self, job: &str, task: u64) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("DELETE FROM results WHERE job = ?1 AND task = ?2")
            .and_then(|mut s| s.execute(params![job, task as i64]))
            .map_err(sql("reopen a task"))?;
        Ok(())
    }

    /// Every accepted result of a job, by task.
    pub fn settled_tasks(&self, job: &str) -> Result<Vec<SettledTask>, StoreError> {
        self.read_results(job, None)
    }

    /// One task's accepted result, if it has one.
    pub fn settled_task(&self, job: &str, task: u64) -> Result<Option<SettledTask>, StoreError> {
        Ok(self.read_results(job, Some(task))?.pop())
    }

    fn read_results(&self, job: &str, task: Option<u64>) -> Result<Vec<SettledTask>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT task, fuel, outputs, method, payees FROM results \
                 WHERE job = ?1 AND (?2 IS NULL OR task = ?2) ORDER BY task",
            )
            .map_err(sql("read results"))?;
        let rows = stmt
            .query_map(params![job, task.map(|t| t as i64)], |r| {
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    r.get::<_, i64>(1)? as u64,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                ))
            })
            .map_err(sql("read results"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql("read results"))?;
        rows.into_iter()
            .map(|(task, fuel, outputs, method, payees)| {
                Ok(SettledTask {
                    task,
                    fuel,
                    outputs: serde_json::from_str(&outputs).map_err(json("a task's outputs"))?,
                    method,
                    payees: serde_json::from_str(&payees).map_err(json("a task's payees"))?,
                })
            })
            .collect()
    }

    /// The provider side: a task this node ran and answered.
    pub fn insert_run(&self, run: &Run) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO runs (requester, job, task, attempt, fuel, outcome, finished_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    run.requester,
                    run.job,
                    run.task as i64,
                    run.attempt,
                    run.fuel as i64,
                    run.outcome,
                    run.finished_at_ms as i64
                ])
            })
            .map_err(sql("record a run"))?;
        Ok(())
    }

    /// Every run the provider side recorded, oldest first.
    pub fn runs(&self) -> Result<Vec<Run>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT requester, job, task, attempt, fuel, outcome, finished_at_ms FROM runs ORDER BY finished_at_ms",
            )
            .map_err(sql("read runs"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(Run {
                    requester: r.get(0)?,
                    job: r.get(1)?,
                    task: r.get::<_, i64>(2)? as u64,
                    attempt: r.get(3)?,
                    fuel: r.get::<_, i64>(4)? as u64,
                    outcome: r.get(5)?,
                    finished_at_ms: r.get::<_, i64>(6)? as u64,
                })
            })
            .map_err(sql("read runs"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql("read runs"))?;
        Ok(rows)
    }

    /// Everything the provider side has run: tasks and fuel, what it is owed.
    pub fn run_totals(&self) -> Result<RunTotals, StoreError> {
        self.conn
            .query_row(
                "SELECT COUNT(*), COALESCE(SUM(fuel), 0) FROM runs",
                [],
                |r| {
                    Ok(RunTotals {
                        tasks: r.get::<_, i64>(0)? as u64,
                        fuel: r.get::<_, i64>(1)? as u64,
                    })
                },
            )
            .map_err(sql("read runs"))
    }

    /// The state a job was recorded in, if it is known.
    pub fn job_state(&self, id: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row("SELECT state FROM jobs WHERE id = ?1", [id], |r| r.get(0))
            .optional()
            .map_err(sql("read a job"))
    }

    /// Records how a job ended.
    pub fn end_job(&self, id: &str, end: &JobEnd) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("UPDATE jobs SET state = ?2, error = ?3, result = ?4, checksum = ?5, finished_at_ms = ?6 WHERE id = ?1")
            .and_then(|mut s| s.execute(params![
                    id,
                    end.state,
                    end.error,
                    end.result,
                    end.checksum.map(|c| c as i64),
                    end.finished_at_ms as i64
                ]))
            .map_err(sql("update the job"))?;
        Ok(())
    }

    /// Every provider's record, as verification left it.
    pub fn reputations(&self) -> Result<Vec<(String, Reputation)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT peer, verified, disagreed, timed_out, streak FROM reputation")
            .map_err(sql("read reputation"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    Reputation {
                        verified: r.get::<_, i64>(1)? as u64,
                        disagreed: r.get::<_, i64>(2)? as u64,
                        timed_out: r.get::<_, i64>(3)? as u64,
                        streak: r.get::<_, i64>(4)? as u64,
                    },
                ))
            })
            .map_err(sql("read reputation"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql("read reputation"))?;
        Ok(rows)
    }

    pub fn set_reputation(&self, peer: &str, r: &Reputation) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("INSERT INTO reputation (peer, verified, disagreed, timed_out, streak) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(peer) DO UPDATE SET verified = ?2, disagreed = ?3, timed_out = ?4, streak = ?5")
            .and_then(|mut s| s.execute(params![peer, r.verified as i64, r.disagreed as i64, r.timed_out as i64, r.streak as i64]))
            .map_err(sql("record reputation"))?;
        Ok(())
    }

    /// Keeps a signed result the ground truth contradicted: proof of a
    /// fault, for the ledger to slash with later.
    pub fn insert_evidence(
        &self,
        job: &str,
        task: u64,
        peer: &str,
        signed_body: &[u8],
        signature: &[u8],
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("INSERT INTO evidence (job, task, peer, signed_body, signature, recorded_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")
            .and_then(|mut s| s.execute(params![job, task as i64, peer, signed_body, signature, now_ms as i64]))
            .map_err(sql("record evidence"))?;
        Ok(())
    }

    /// (peer, task) of the evidence kept for a job.
    pub fn evidence(&self, job: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT peer, task FROM evidence WHERE job = ?1 ORDER BY task, peer")
            .map_err(sql("read evidence"))?;
        let rows = stmt
            .query_map([job], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))
            .map_err(sql("read evidence"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql("read evidence"))?;
        Ok(rows)
    }

    /// (id, name, state) of every job, oldest first.
    pub fn jobs(&self) -> Result<Vec<(String, String, String)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, name, state FROM jobs ORDER BY submitted_at_ms, id")
            .map_err(sql("list jobs"))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(sql("list jobs"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql("list jobs"))?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str) -> JobRecord {
        JobRecord {
            id: id.into(),
            name: "render".into(),
            job_toml: "name = \"render\"".into(),
            base_dir: "/tmp".into(),
            tasks: 64,
            module: BlobHash::of(b"module"),
            program: "render".into(),
            inputs: vec![("scene.gltf".into(), BlobHash::of(b"scene"))],
            submitted_at_ms: 1,
            end: None,
        }
    }

    fn ended(state: &str) -> JobEnd {
        JobEnd {
            state: state.into(),
            error: None,
            result: Some("/r/render.png".into()),
            checksum: Some(7),
            finished_at_ms: 9,
        }
    }

    #[test]
    fn a_running_job_its_attempts_and_results_survive_reopening_the_database() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("plexus.db");
        let db = Db::open(&path).expect("open");
        db.insert_job(&job("j1")).expect("insert");
        db.insert_job(&job("j2")).expect("insert");
        db.end_job("j2", &ended("completed")).expect("update");
        db.insert_attempt("j1", 3, 1, "p1", 10).expect("attempt");
        db.insert_attempt("j1", 3, 2, "p2", 11).expect("attempt");
        db.end_attempt("j1", 3, 1, "no answer").expect("end");
        db.insert_attempt("j1", 4, 1, "p1", 12).expect("attempt");
        let settled = SettledTask {
            task: 3,
            fuel: 42,
            outputs: vec![OutputFile {
                name: "tile.png".into(),
                size_bytes: 5,
                hash: BlobHash::of(b"tile"),
            }],
            method: "Replicas".into(),
            payees: vec![("p2".into(), 42), ("p3".into(), 42)],
        };
        db.settle_task("j1", &settled).expect("settle");
        db.settle_task(
            "j1",
            &SettledTask {
                task: 4,
                ..settled.clone()
            },
        )
        .expect("settle");
        db.reopen_task("j1", 4).expect("reopen");
        drop(db);

        let db = Db::open(&path).expect("reopen");
        assert_eq!(db.unfinished_jobs().expect("jobs"), vec![job("j1")]);
        assert_eq!(db.settled_tasks("j1").expect("results"), vec![settled]);
        assert_eq!(
            db.last_attempts("j1").expect("attempts"),
            vec![(3, 2), (4, 1)]
        );
        assert_eq!(
            db.abandon_open_attempts("j1", "restarted")
                .expect("abandon"),
            2
        );
        assert_eq!(
            db.abandon_open_attempts("j1", "restarted")
                .expect("abandon"),
            0
        );
        assert_eq!(
            db.attempt_ends("j1").expect("ends"),
            vec![("no answer".into(), 1), ("restarted".into(), 2)]
        );
        assert_eq!(
            db.job_state("j2").expect("state").as_deref(),
            Some("completed")
        );
        let all = db.recent_jobs(10).expect("jobs");
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].end, Some(ended("completed")));
        assert_eq!(db.recent_jobs(1).expect("jobs")[0].id, "j2", "the newest");
    }

    #[test]
    fn a_rolled_back_step_leaves_none_of_its_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("plexus.db")).expect("open");
        db.insert_job(&job("j1")).expect("insert");
        db.begin().expect("begin");
        db.insert_attempt("j1", 0, 1, "p1", 10).expect("attempt");
        db.begin().expect("nested");
        db.insert_attempt("j1", 1, 1, "p1", 10).expect("attempt");
        db.rollback().expect("rollback");
        assert!(!db.in_transaction());
        assert_eq!(db.last_attempts("j1").expect("attempts"), vec![]);
        assert!(db.rollback().is_err(), "nothing left to roll back");
        db.transaction(|db| db.insert_attempt("j1", 2, 1, "p1", 10))
            .expect("a later step")
            .expect("attempt");
        assert_eq!(db.last_attempts("j1").expect("attempts"), vec![(2, 1)]);
    }

    #[test]
    fn nested_transactions_commit_once_at_the_outermost_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("plexus.db");
        let db = Db::open(&path).expect("open");
        let reader = Db::open(&path).expect("a second connection");
        db.begin().expect("outer");
        db.insert_job(&job("j1")).expect("insert");
        db.transaction(|db| db.insert_attempt("j1", 0, 1, "p1", 10))
            .expect("inner")
            .expect("attempt");
        assert_eq!(
            reader.job_state("j1").expect("read"),
            None,
            "an inner commit writes nothing yet"
        );
        db.commit().expect("outer commit");
        assert_eq!(
            reader.job_state("j1").expect("read").as_deref(),
            Some("running")
        );
        assert_eq!(reader.last_attempts("j1").expect("read"), vec![(0, 1)]);
        assert!(db.commit().is_err(), "a commit without a begin is refused");
        db.transaction(|db| db.end_job("j1", &ended("completed")))
            .expect("a transaction after it")
            .expect("end");
        assert_eq!(
            reader.job_state("j1").expect("read").as_deref(),
            Some("completed")
        );
    }

    #[test]
    fn the_provider_side_keeps_what_it_ran() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("plexus.db");
        let db = Db::open(&path).expect("open");
        let run = Run {
            requester: "r".into(),
            job: "j1".into(),
            task: 0,
            attempt: 1,
            fuel: 100,
            outcome: "exited 0".into(),
            finished_at_ms: 1,
        };
        db.insert_run(&run).expect("run");
        db.insert_run(&Run {
            task: 1,
            fuel: 50,
            ..run
        })
        .expect("run");
        drop(db);
        let db = Db::open(&path).expect("reopen");
        assert_eq!(
            db.run_totals().expect("totals"),
            RunTotals {
                tasks: 2,
                fuel: 150
            }
        );
    }

    #[test]
    fn a_database_from_before_durable_tasks_is_upgraded_and_its_running_jobs_failed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("plexus.db");
        let conn = Connection::open(&path).expect("open");
        conn.execute_batch(
            "CREATE TABLE jobs (id TEXT PRIMARY KEY, name TEXT NOT NULL, job_toml TEXT NOT NULL,
               base_dir TEXT NOT NULL, tasks INTEGER NOT NULL, state TEXT NOT NULL, error TEXT,
               submitted_at_ms INTEGER NOT NULL);
             INSERT INTO jobs VALUES ('old', 'render', '', '/', 4, 'running', NULL, 1);",
        )
        .expect("old schema");
        drop(conn);
        let db = Db::open(&path).expect("upgrade");
        assert!(db.unfinished_jobs().expect("jobs").is_empty());
        assert_eq!(
            db.job_state("old").expect("state").as_deref(),
            Some("failed")
        );
        db.insert_job(&job("new")).expect("the new columns exist");
    }

    #[test]
    fn jobs_survive_reopening_the_database() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("plexus.db");
        let db = Db::open(&path).expect("open");
        db.insert_job(&job("j1")).expect("insert");
        db.end_job("j1", &ended("completed")).expect("update");
        drop(db);
        let db = Db::open(&path).expect("reopen");
        assert_eq!(
            db.jobs().expect("jobs"),
            vec![("j1".to_owned(), "render".to_owned(), "completed".to_owned())]
        );
        assert!(db.insert_job(&job("j1")).is_err(), "ids are unique");
    }

    #[test]
    fn reputation_and_evidence_survive_reopening_the_database() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("plexus.db");
        let db = Db::open(&path).expect("open");
        let first = Reputation {
            verified: 3,
            disagreed: 0,
            timed_out: 1,
            streak: 3,
        };
        db.set_reputation("p1", &first).expect("set");
        let caught = Reputation {
            disagreed: 1,
            streak: 0,
            ..first
        };
        db.set_reputation("p1", &caught).expect("update");
        db.insert_evidence("j1", 7, "p1", b"body", b"sig", 5)
            .expect("evidence");
        drop(db);
        let db = Db::open(&path).expect("reopen");
        assert_eq!(
            db.reputations().expect("read"),
            vec![("p1".to_owned(), caught)]
        );
        assert_eq!(db.evidence("j1").expect("read"), vec![("p1".to_owned(), 7)]);
        assert!(db.evidence("j2").expect("read").is_empty());
    }
}
