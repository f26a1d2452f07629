//! The node's SQLite database (WAL mode, `synchronous=FULL`): for now the
//! record of jobs submitted and how they ended. Durable task state and
//! resumption after a crash build on it next.

use crate::StoreError;
use rusqlite::{Connection, params};
use std::path::Path;

pub struct Db {
    conn: Connection,
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
}
