//! `plexus`: the one binary. One file per subcommand; errors become one line
//! on stderr and a non-zero exit code.

mod bench;
mod client;
mod demo;
mod exec;
mod job;
mod ledger;
mod local;
mod node;
mod peers;
mod run;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "plexus",
    version,
    about = "A decentralised compute network: run WASM tasks in a deterministic sandbox"
)]
struct Cli {
    /// Where Plexus keeps its caches and blobs
    /// [default: $PLEXUS_DATA_DIR, or $XDG_DATA_HOME/plexus, or ~/.local/share/plexus]
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Demo(demo::DemoArgs),
    Bench(bench::BenchArgs),
    Run(run::RunArgs),
    Exec(exec::ExecArgs),
    Node(node::NodeArgs),
    Job(job::JobArgs),
    Peers(peers::PeersArgs),
    Balance(ledger::BalanceArgs),
    Ledger(ledger::LedgerArgs),
}

/// Exit codes: 0 success, 1 the task or job failed, 2 bad input or setup.
pub const EXIT_TASK_FAILED: u8 = 1;
pub const EXIT_ERROR: u8 = 2;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PLEXUS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let data_dir = cli.data_dir.unwrap_or_else(local::default_data_dir);
    let result = match cli.command {
        Command::Run(args) => run::run(args, &data_dir),
        Command::Exec(args) => exec::exec(args, &data_dir),
        Command::Node(args) => node::node(args, &data_dir),
        Command::Job(args) => job::job(args),
        Command::Peers(args) => peers::peers(args),
        Command::Balance(args) => ledger::balance(args),
        Command::Ledger(args) => ledger::ledger(args),
        Command::Demo(args) => demo::demo(args),
        Command::Bench(args) => bench::bench(args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // One line: the chain of causes, outermost first.
            eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::from(EXIT_ERROR)
        }
    }
}
