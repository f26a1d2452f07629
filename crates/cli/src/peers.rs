//! `plexus peers`: the peers the local node knows, their offers and round
//! trips, and with `--job`, which of that job's requirements each meets.

use crate::client::{Client, default_api};
use clap::Args;
use node::PeerInfo;
use std::path::PathBuf;

#[derive(Args)]
#[command(
    about = "List the peers the local node knows, with their offers and round-trip times",
    after_help = "Examples:\n  plexus peers\n  plexus peers --job examples/render.toml   (which requirements each provider meets)\n  plexus peers --json"
)]
pub struct PeersArgs {
    #[arg(long, value_name = "URL", default_value_t = default_api())]
    api: String,
    /// A job file: show, for each provider, which of its requirements
    /// (price, memory, engine, verified record) the provider's offer meets
    #[arg(long, value_name = "JOB.toml")]
    job: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

/// A peer and the requirements of the job its offer falls short of.
#[derive(serde::Serialize)]
struct Fit {
    #[serde(flatten)]
    peer: PeerInfo,
    /// None: no live offer to judge. Empty: it meets every requirement.
    unmet: Option<Vec<&'static str>>,
}

pub fn peers(a: PeersArgs) -> anyhow::Result<u8> {
    let job = match &a.job {
        Some(path) => {
            let (name, text) = crate::local::read_job_file(path)?;
            Some(types::Job::parse(&name, &text)?)
        }
        None => None,
    };
    let peers: Vec<PeerInfo> = Client::new(&a.api).get("/api/peers")?;
    let fits: Vec<Fit> = peers
        .into_iter()
        .map(|peer| {
            let unmet = job.as_ref().and_then(|job| {
                let needs = market::Needs {
                    requirements: &job.requirements,
                    task_memory_bytes: job.limits.memory_bytes_max,
                };
                let offer = peer.offer.as_ref()?;
                let mut unmet: Vec<&'static str> = needs
                    .unmet(offer, peer.verified)
                    .into_iter()
                    .map(market::Mismatch::as_str)
                    .collect();
                if peer.disagreed > 0 {
                    unmet.push(market::Mismatch::Excluded.as_str());
                }
                Some(unmet)
            });
            Fit { peer, unmet }
        })
        .collect();
    if a.json {
        if job.is_some() {
            println!("{}", serde_json::to_string_pretty(&fits)?);
        } else {
            let peers: Vec<&PeerInfo> = fits.iter().map(|f| &f.peer).collect();
            println!("{}", serde_json::to_string_pretty(&peers)?);
        }
        return Ok(0);
    }
    let meets = if job.is_some() { "  meets the job" } else { "" };
    println!(
        "{:<54} {:>9} {:>8} {:>6} {:>8} {:>14}{meets}",
        "peer", "connected", "rtt ms", "slots", "price", "fuel/s"
    );
    for Fit { peer: p, unmet } in fits {
        let rtt = p.rtt_ms.map_or("-".into(), |r| format!("{r:.2}"));
        let (slots, price, speed) = match &p.offer {
            Some(o) => (
                format!("{}/{}", o.slots_free, o.slots_total),
                o.price_per_gfuel.to_string(),
                o.fuel_per_sec.to_string(),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        let fit = match (&job, unmet) {
            (None, _) => String::new(),
            (Some(_), None) => "  no live offer".into(),
            (Some(_), Some(unmet)) if unmet.is_empty() => "  yes".into(),
            (Some(_), Some(unmet)) => format!("  no: {}", unmet.join(", ")),
        };
        println!(
            "{:<54} {:>9} {:>8} {:>6} {:>8} {:>14}{fit}",
            p.peer_id, p.connected, rtt, slots, price, speed
        );
    }
    Ok(0)
}
