//! `plexus peers`: the peers the local node knows, their offers and round trips.

use crate::client::{Client, default_api};
use clap::Args;
use node::PeerInfo;

#[derive(Args)]
#[command(about = "List the peers the local node knows, with their offers and round-trip times")]
pub struct PeersArgs {
    #[arg(long, value_name = "URL", default_value_t = default_api())]
    api: String,
    #[arg(long)]
    json: bool,
}

pub fn peers(a: PeersArgs) -> anyhow::Result<u8> {
    let peers: Vec<PeerInfo> = Client::new(&a.api).get("/api/peers")?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&peers)?);
        return Ok(0);
    }
    println!(
        "{:<54} {:>9} {:>8} {:>6} {:>8} {:>14}",
        "peer", "connected", "rtt ms", "slots", "price", "fuel/s"
    );
    for p in peers {
        let rtt = p.rtt_ms.map_or("-".into(), |r| format!("{r:.2}"));
        let (slots, price, speed) = match &p.offer {
            Some(o) => (
                format!("{}/{}", o.slots_free, o.slots_total),
                o.price_per_gfuel.to_string(),
                o.fuel_per_sec.to_string(),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        println!(
            "{:<54} {:>9} {:>8} {:>6} {:>8} {:>14}",
            p.peer_id, p.connected, rtt, slots, price, speed
        );
    }
    Ok(0)
}
