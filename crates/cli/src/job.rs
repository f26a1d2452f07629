//! `plexus job`: submit jobs to the local node and follow them.

use crate::client::{Client, default_api};
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use node::{JobStatus, JobSubmission};
use std::path::PathBuf;
use std::time::Duration;
use types::JobPhase;

#[derive(Args)]
#[command(about = "Submit jobs to the local node and follow them")]
pub struct JobArgs {
    /// The node's API
    #[arg(long, global = true, value_name = "URL", default_value_t = default_api())]
    api: String,
    #[command(subcommand)]
    command: JobCommand,
}

#[derive(Subcommand)]
enum JobCommand {
    /// Submit a job file; with --wait, follow it to the end
    Submit {
        job: PathBuf,
        #[arg(long)]
        wait: bool,
        #[arg(long)]
        json: bool,
    },
    /// Show a job's progress and providers
    Status {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Fetch a completed job's result into DIR
    Results {
        id: String,
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// List the node's jobs
    List {
        #[arg(long)]
        json: bool,
    },
    /// Stop a running job: nothing more is dispatched
    Cancel {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

pub fn job(a: JobArgs) -> anyhow::Result<u8> {
    let client = Client::new(&a.api);
    match a.command {
        JobCommand::Submit { job, wait, json } => {
            let id = submit(&client, &job)?;
            if !wait {
                if json {
                    println!("{}", serde_json::json!({ "id": id }));
                } else {
                    println!("{id}");
                }
                return Ok(0);
            }
            let status = follow(&client, &id, !json)?;
            print_status(&status, json)?;
            Ok(if status.state == JobPhase::Completed {
                0
            } else {
                crate::EXIT_TASK_FAILED
            })
        }
        JobCommand::Status { id, json } => {
            let status: JobStatus = client.get(&format!("/api/jobs/{id}"))?;
            print_status(&status, json)?;
            Ok(0)
        }
        JobCommand::Results { id, out } => {
            let status: JobStatus = client.get(&format!("/api/jobs/{id}"))?;
            let path = results(&client, &status, &out)?;
            println!("{}", path.display());
            Ok(0)
        }
        JobCommand::Cancel { id, json } => {
            let status: JobStatus =
                client.post(&format!("/api/jobs/{id}/cancel"), &serde_json::json!({}))?;
            print_status(&status, json)?;
            Ok(0)
        }
        JobCommand::List { json } => {
            let jobs: Vec<JobStatus> = client.get("/api/jobs")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&jobs)?);
            } else {
                for j in jobs {
                    println!(
                        "{}  {:<10} {:>6}/{:<6} {}",
                        j.id, j.state, j.tasks_done, j.tasks_total, j.name
                    );
                }
            }
            Ok(0)
        }
    }
}

pub fn submit(client: &Client, job: &std::path::Path) -> anyhow::Result<String> {
    submit_and_wait(client, &prepare(job)?, None).map(|(id, _)| id)
}

/// A job file read and checked here, so that a bad file fails before
/// reaching the node; ready to submit (as many times as wanted).
pub fn prepare(job: &std::path::Path) -> anyhow::Result<JobSubmission> {
    let (shown, job_toml) = crate::local::read_job_file(job)?;
    types::Job::parse(&shown, &job_toml)?;
    let base = std::fs::canonicalize(job)?
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();
    Ok(JobSubmission {
        job_file: shown,
        job_toml,
        base_dir: base.display().to_string(),
    })
}

/// Submits a job and, with `wait`, has the node answer once the job has
/// ended (or `wait` has passed) with its status: one request from a job
/// to its result.
pub fn submit_and_wait(
    client: &Client,
    submission: &JobSubmission,
    wait: Option<std::time::Duration>,
) -> anyhow::Result<(String, Option<JobStatus>)> {
    let reply: api::Submitted = match wait {
        // A little longer than the node waits, so that its answer comes first.
        Some(wait) => client.post_within(
            &format!("/api/jobs?wait_s={}", wait.as_secs()),
            submission,
            Some(wait + std::time::Duration::from_secs(10)),
        )?,
        None => client.post("/api/jobs", submission)?,
    };
    Ok((reply.id, reply.status))
}

/// Polls a job to its end, with a progress bar naming the providers at work.
pub fn follow(client: &Client, id: &str, progress: bool) -> anyhow::Result<JobStatus> {
    let bar = if progress {
        ProgressBar::new(0)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{bar:32}] {pos}/{len} tasks {elapsed}  {msg}")
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    loop {
        let status: JobStatus = client.get(&format!("/api/jobs/{id}"))?;
        bar.set_length(status.tasks_total);
        bar.set_position(status.tasks_done);
        let at_work: Vec<String> = status
            .providers
            .iter()
            .filter(|p| p.in_flight > 0)
            .map(|p| format!("{}×{}", short(&p.peer_id), p.in_flight))
            .collect();
        bar.set_message(if let Some(why) = &status.no_match {
            format!("waiting, no match: {why}")
        } else if at_work.is_empty() {
            status.state.to_string()
        } else {
            format!("at work: {}", at_work.join(" "))
        });
        if matches!(status.state, JobPhase::Completed | JobPhase::Failed) {
            bar.finish_and_clear();
            return Ok(status);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn results(
    client: &Client,
    status: &JobStatus,
    out: &std::path::Path,
) -> anyhow::Result<PathBuf> {
    if status.state != JobPhase::Completed {
        bail!("job {} is {}: no result", status.id, status.state);
    }
    let name = status
        .result
        .as_deref()
        .and_then(|p| std::path::Path::new(p).file_name().map(|n| n.to_owned()))
        .context("the job has no result file")?;
    let bytes = client.get_bytes(&format!("/api/jobs/{}/result", status.id))?;
    std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    let path = out.join(name);
    std::fs::write(&path, bytes).with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}

pub fn short(peer: &str) -> String {
    peer.get(peer.len().saturating_sub(6)..)
        .unwrap_or(peer)
        .to_owned()
}

pub fn print_verification(v: &node::VerificationStatus) {
    if !v.enabled {
        println!("verified  no: the job turned verification off; every result taken as it came");
        return;
    }
    let s = &v.summary;
    println!(
        "verified  {} by replicas, {} by spot check, {} by the requester's own run, {} on reputation",
        s.by_replicas, s.by_spot_check, s.by_ground_truth, s.on_reputation
    );
    println!(
        "checks    {} executions, {} disagreements, {} re-verified, floor {} with {} replicas",
        s.executions, s.disagreements, s.reverified, v.floor, v.replicas
    );
    if s.excluded.is_empty() {
        println!("excluded  none");
    }
    for peer in &s.excluded {
        println!("excluded  {peer} (caught: its results were contradicted and re-verified)");
    }
    if let Some(b) = &v.bound {
        let chance = if b.per_replicated_task > 0.0 {
            format!("a {:.2e} chance", b.per_replicated_task)
        } else {
            "no chance".to_owned()
        };
        println!(
            "bound     if {:.0}% of the {} providers ({}) cheated together, each of the {} tasks run {}× \
             had {chance} that they held every replica: at most {:.3} wrong results expected \
             (results taken on reputation rest on spot checks at the floor)",
            b.assumed_cheater_share * 100.0,
            b.providers,
            b.cheaters,
            b.replicated_tasks,
            b.replicas,
            b.expected_wrong_at_most
        );
    }
}

pub fn print_status(s: &JobStatus, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(s)?);
        return Ok(());
    }
    println!("job       {} ({})", s.id, s.name);
    println!("state     {}", s.state);
    println!(
        "tasks     {}/{} done, {} in flight, {} retried",
        s.tasks_done, s.tasks_total, s.tasks_in_flight, s.retries
    );
    if let Some(why) = &s.no_match {
        println!("waiting   no match: {why}");
    }
    println!("fuel      {}", s.fuel);
    if let Some(budget) = s.budget {
        println!(
            "budget    {} of {budget} credits committed (what is out at its worst, and every result come back)",
            s.committed
        );
    }
    println!("time      {:.1} s", s.elapsed_s);
    for p in &s.providers {
        println!(
            "  provider …{}  {:>5} tasks  {:>16} fuel  {:>8.1} s busy",
            short(&p.peer_id),
            p.tasks_done,
            p.fuel,
            p.busy_ms as f64 / 1000.0
        );
    }
    print_verification(&s.verification);
    if let Some(e) = &s.error {
        println!("error     {e}");
    }
    if let Some(c) = s.checksum {
        println!("checksum  {c}");
    }
    Ok(())
}
