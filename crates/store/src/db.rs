//! The node's SQLite database (WAL mode, `synchronous=FULL`): the jobs
//! submitted and how they ended, each provider's verification record, and
//! the evidence against providers caught cheating. Durable task state and
//! resumption after a crash build on it next.

use crate::StoreError;
use rusqlite::{Connection, params};
use std::path::Path;

pub struct Db {
    conn: Connection,
}

/// A provider's verification record (the `verify` crate's `Record`, stored).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reputation {
    pub verified: u64,
    pub disagreed: u64,
    pub timed_out: u64,
    pub streak: u64,
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
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sql("set synchronous"))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS jobs (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                job_toml TEXT NOT NULL,
                base_dir TEXT NOT NULL,
                tasks INTEGER NOT NULL,
                state TEXT NOT NULL,
                error TEXT,
                submitted_at_ms INTEGER NOT NULL
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
        Ok(Db { conn })
    }

    /// Records a job before its submission is acknowledged.
    pub fn insert_job(
        &self,
        id: &str,
        name: &str,
        job_toml: &str,
        base_dir: &str,
        tasks: u64,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO jobs (id, name, job_toml, base_dir, tasks, state, submitted_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, 'running', ?6)",
                params![id, name, job_toml, base_dir, tasks as i64, now_ms as i64],
            )
            .map_err(sql("record the job"))?;
        Ok(())
    }

    pub fn set_job_state(
        &self,
        id: &str,
        state: &str,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE jobs SET state = ?2, error = ?3 WHERE id = ?1",
                params![id, state, error],
            )
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
            .execute(
                "INSERT INTO reputation (peer, verified, disagreed, timed_out, streak) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(peer) DO UPDATE SET verified = ?2, disagreed = ?3, timed_out = ?4, streak = ?5",
                params![peer, r.verified as i64, r.disagreed as i64, r.timed_out as i64, r.streak as i64],
            )
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
            .execute(
                "INSERT INTO evidence (job, task, peer, signed_body, signature, recorded_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![job, task as i64, peer, signed_body, signature, now_ms as i64],
            )
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

    #[test]
    fn jobs_survive_reopening_the_database() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("plexus.db");
        let db = Db::open(&path).expect("open");
        db.insert_job("j1", "render", "name = \"render\"", "/tmp", 64, 1)
            .expect("insert");
        db.set_job_state("j1", "completed", None).expect("update");
        drop(db);
        let db = Db::open(&path).expect("reopen");
        assert_eq!(
            db.jobs().expect("jobs"),
            vec![("j1".to_owned(), "render".to_owned(), "completed".to_owned())]
        );
        assert!(
            db.insert_job("j1", "again", "", "", 1, 2).is_err(),
            "ids are unique"
        );
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
