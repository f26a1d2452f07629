//! The yardstick for the blob protocol (benchmark B5): one bare libp2p
//! stream (`libp2p-stream`) carrying bytes between two swarms on loopback,
//! over the same transport stack as the node's (TCP with Noise and Yamux, or
//! QUIC, with the node's settings), with nothing of ours on top.

use crate::NetError;
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, StreamProtocol, Swarm};
use std::time::{Duration, Instant};

const PROTOCOL: StreamProtocol = StreamProtocol::new("/plexus/bench-stream/1");
/// Bytes written per call.
const WRITE_BYTES: usize = 1 << 20;
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Quic,
}

impl Transport {
    /// A loopback listen address on a free port.
    pub fn loopback(self) -> Multiaddr {
        let text = match self {
            Transport::Tcp => "/ip4/127.0.0.1/tcp/0",
            Transport::Quic => "/ip4/127.0.0.1/udp/0/quic-v1",
        };
        text.parse().unwrap_or_else(|_| Multiaddr::empty())
    }
}

fn swarm() -> Result<Swarm<libp2p_stream::Behaviour>, NetError> {
    let setup = |e: &dyn std::fmt::Display| NetError::Setup(e.to_string());
    Ok(libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default().nodelay(true),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )
        .map_err(|e| setup(&e))?
        .with_quic()
        .with_behaviour(|_| libp2p_stream::Behaviour::new())
        .map_err(|e| setup(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build())
}

/// Sends `bytes` on one stream from a fresh swarm to another; the time from
/// opening the stream (connection already up) to the last byte read.
pub async fn bare_stream(transport: Transport, bytes: u64) -> Result<Duration, NetError> {
    let setup = |e: &dyn std::fmt::Display| NetError::Setup(e.to_string());
    let mut receiver = swarm()?;
    let mut sender = swarm()?;
    let receiver_id = *receiver.local_peer_id();
    receiver
        .listen_on(transport.loopback())
        .map_err(|e| setup(&e))?;
    let address = tokio::time::timeout(SETUP_TIMEOUT, async {
        loop {
            if let SwarmEvent::NewListenAddr { address, .. } = receiver.select_next_some().await {
                return address;
            }
        }
    })
    .await
    .map_err(|_| NetError::Setup("the bench stream's listener did not bind".into()))?;
    let mut incoming = receiver
        .behaviour()
        .new_control()
        .accept(PROTOCOL)
        .map_err(|e| setup(&e))?;
    let mut control = sender.behaviour().new_control();
    sender.dial(address).map_err(|e| setup(&e))?;
    let drive = |mut swarm: Swarm<libp2p_stream::Behaviour>| {
        tokio::spawn(async move {
            loop {
                swarm.select_next_some().await;
            }
        })
    };
    let (receiving, sending) = (drive(receiver), drive(sender));
    let read = tokio::spawn(async move {
        let (_, mut stream) = incoming.next().await.ok_or(NetError::Stopped)?;
        let mut buf = vec![0u8; WRITE_BYTES];
        let mut total = 0u64;
        loop {
            let n = stream
                .read(&mut buf)
                .await
                .map_err(|e| NetError::Setup(e.to_string()))?;
            if n == 0 {
                return Ok::<u64, NetError>(total);
            }
            total += n as u64;
        }
    });
    // The dial completes as the stream opens: wait for it outside the timing.
    let mut stream = tokio::time::timeout(SETUP_TIMEOUT, async {
        loop {
            match control.open_stream(receiver_id, PROTOCOL).await {
                Ok(s) => return Ok(s),
                Err(libp2p_stream::OpenStreamError::UnsupportedProtocol(p)) => {
                    return Err(NetError::Setup(format!("unsupported protocol {p}")));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    })
    .await
    .map_err(|_| NetError::Setup("the bench stream did not open".into()))??;
    stream.write_all(&[0u8]).await.map_err(|e| setup(&e))?;
    let started = Instant::now();
    let chunk = vec![0x5au8; WRITE_BYTES];
    let mut left = bytes.saturating_sub(1);
    while left > 0 {
        let n = left.min(WRITE_BYTES as u64) as usize;
        stream.write_all(&chunk[..n]).await.map_err(|e| setup(&e))?;
        left -= n as u64;
    }
    stream.close().await.map_err(|e| setup(&e))?;
    let received = read.await.map_err(|e| setup(&e))??;
    let took = started.elapsed();
    receiving.abort();
    sending.abort();
    if received != bytes {
        return Err(NetError::Setup(format!(
            "the bench stream carried {received} of {bytes} bytes"
        )));
    }
    Ok(took)
}
