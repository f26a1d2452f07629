//! The task that owns the swarm. Commands come in over a bounded channel,
//! events go out over another; outbound requests are answered through
//! oneshot channels, inbound ones through an [`InboundId`] the node replies to.

use crate::NetError;
use crate::wire::{self, BlobRequest, BlobResponse, Offer, TaskRequest, TaskResponse};
use futures::StreamExt;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, gossipsub, identify, identity::Keypair, mdns, ping,
};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Commands waiting for the swarm task.
pub const COMMAND_QUEUE_MAX: usize = 1024;
/// Events waiting for the node.
pub const EVENT_QUEUE_MAX: usize = 4096;
/// Inbound requests awaiting the node's answer; more are refused.
pub const INBOUND_PENDING_MAX: usize = 4096;
const BLOB_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const BOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(10);
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(120);
/// A peer is pinged this often; one not heard from (no ping answered) for
/// SILENT_PEER_MAX is taken for gone (cut off, asleep, crashed without a
/// reset): its connections are closed so its tasks go elsewhere at once
/// rather than at their attempt timeout. libp2p's ping reports only the
/// second failure, after a substream timeout, so the count is ours.
const PING_INTERVAL: Duration = Duration::from_secs(1);
const PING_TIMEOUT: Duration = Duration::from_secs(4);
const SILENT_PEER_MAX: Duration = Duration::from_secs(5);
/// A dial into a silent network (packets dropped, no reset) hangs for the
/// kernel's SYN retries, minutes; past this another dial is started beside it.
const REDIAL_AFTER: Duration = Duration::from_secs(5);
/// How often a bootstrap peer the node has lost (it restarted, or the
/// network between was cut and healed) is dialled again; one dial at a time.
const REDIAL_INTERVAL: Duration = Duration::from_secs(1);
const BLOB_PROTOCOL: &str = "/plexus/blob/1";
/// Opening a blob stream (a dial included, when not connected) takes at most this.
const BLOB_STREAM_OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// A whole blob on one stream: the request, then its size and bytes.
const BLOB_STREAM_PROTOCOL: StreamProtocol = StreamProtocol::new("/plexus/blob-stream/1");

#[derive(NetworkBehaviour)]
struct Behaviour {
    /// Every libp2p limit is opt-in: connections in total, inbound, per
    /// peer and pending (`types::limits::CONNECTIONS_*`).
    limits: libp2p::connection_limits::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    mdns: libp2p::swarm::behaviour::toggle::Toggle<mdns::tokio::Behaviour>,
    gossipsub: gossipsub::Behaviour,
    blob: request_response::cbor::Behaviour<BlobRequest, BlobResponse>,
    streams: libp2p_stream::Behaviour,
}

pub struct NetConfig {
    pub keypair: Keypair,
    pub listen: Vec<Multiaddr>,
    pub bootstrap: Vec<Multiaddr>,
    pub mdns: bool,
}

/// Identifies an inbound request the node must answer.
pub type InboundId = u64;

#[derive(Debug)]
pub enum Event {
    Listening(Multiaddr),
    Connected(PeerId),
    Disconnected(PeerId),
    /// The address a connection to `peer` goes to (for placement rules
    /// such as replicas in distinct address ranges).
    Address {
        peer: PeerId,
        address: Multiaddr,
    },
    Offer {
        from: PeerId,
        offer: Offer,
    },
    TaskRequested {
        from: PeerId,
        id: InboundId,
        request: TaskRequest,
    },
    BlobRequested {
        from: PeerId,
        id: InboundId,
        request: BlobRequest,
    },
    RoundTrip {
        peer: PeerId,
        rtt: Duration,
    },
}

enum Command {
    PublishOffer(Offer),
    SendBlob {
        peer: PeerId,
        request: BlobRequest,
        reply: oneshot::Sender<Result<BlobResponse, NetError>>,
    },
    RespondBlob {
        id: InboundId,
        response: BlobResponse,
    },
    Dial(Multiaddr),
    ConnectedPeers(oneshot::Sender<Vec<PeerId>>),
}

/// A cheap, cloneable handle to the swarm task.
#[derive(Clone)]
pub struct NetHandle {
    commands: mpsc::Sender<Command>,
    /// Opens and accepts raw streams without going through the swarm task.
    streams: libp2p_stream::Control,
    /// Task requests and answers, on streams of their own.
    tasks: Arc<crate::tasks::TaskLinks>,
    pub local_peer_id: PeerId,
    /// Connections refused by a limit so far (for metrics).
    denied: Arc<std::sync::atomic::AtomicU64>,
    /// The per-peer limit on blob requests, chunks and streams together.
    blob_rate: Arc<crate::rate::BlobRate>,
}

impl NetHandle {
    async fn send(&self, command: Command) -> Result<(), NetError> {
        self.commands
            .send(command)
            .await
            .map_err(|_| NetError::Stopped)
    }
    /// A stream to `peer` for one blob (see `node::blobs`).
    pub async fn open_blob_stream(&self, peer: PeerId) -> Result<libp2p::Stream, NetError> {
        crate::tasks::open_stream(
            &self.streams,
            peer,
            BLOB_STREAM_PROTOCOL,
            BLOB_STREAM_OPEN_TIMEOUT,
            "blob",
        )
        .await
    }

    /// The blob streams other peers open to this node; once per node.
    pub fn accept_blob_streams(&self) -> Result<libp2p_stream::IncomingStreams, NetError> {
        self.streams
            .clone()
            .accept(BLOB_STREAM_PROTOCOL)
            .map_err(|e| NetError::Setup(format!("accept blob streams: {e}")))
    }

    pub async fn publish_offer(&self, offer: Offer) -> Result<(), NetError> {
        self.send(Command::PublishOffer(offer)).await
    }
    /// Sends a task request to `peer` on the task stream between the two
    /// (see [`crate::tasks`]) and waits for the answer.
    pub async fn send_task(
        &self,
        peer: PeerId,
        request: TaskRequest,
    ) -> Result<TaskResponse, NetError> {
        self.tasks.send(peer, request).await
    }
    pub async fn fetch_blob_chunk(
        &self,
        peer: PeerId,
        request: BlobRequest,
    ) -> Result<BlobResponse, NetError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::SendBlob {
            peer,
            request,
            reply,
        })
        .await?;
        rx.await.map_err(|_| NetError::Stopped)?
    }
    /// Answers a [`Event::TaskRequested`]. An answer whose stream has gone
    /// (the requester disconnected) is dropped: its attempt goes elsewhere.
    pub async fn respond_task(
        &self,
        id: InboundId,
        response: TaskResponse,
    ) -> Result<(), NetError> {
        if !self.tasks.respond(id, response).await {
            tracing::debug!(target: "plexus::net", "answer {id} has no stream to go to");
        }
        Ok(())
    }
    pub async fn respond_blob(
        &self,
        id: InboundId,
        response: BlobResponse,
    ) -> Result<(), NetError> {
        self.send(Command::RespondBlob { id, response }).await
    }
    /// Connections refused so far because a limit was reached.
    pub fn connections_denied(&self) -> u64 {
        self.denied.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Task and blob requests refused so far by the per-peer rate limits.
    pub fn requests_rate_limited(&self) -> u64 {
        self.tasks
            .rate_limited
            .load(std::sync::atomic::Ordering::Relaxed)
            + self.blob_rate.refused()
    }

    /// Whether `peer` may open one more blob stream now (the node's stream
    /// server asks before serving one); a refusal is counted.
    pub fn allow_blob_request(&self, peer: PeerId) -> bool {
        self.blob_rate.allow(peer)
    }

    pub async fn dial(&self, addr: Multiaddr) -> Result<(), NetError> {
        self.send(Command::Dial(addr)).await
    }
    pub async fn connected_peers(&self) -> Result<Vec<PeerId>, NetError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::ConnectedPeers(reply)).await?;
        rx.await.map_err(|_| NetError::Stopped)
    }
}

/// Builds the swarm, starts listening and dialling, and spawns its task.
/// Returns once every listen address is bound (or failed).
pub async fn spawn(
    config: NetConfig,
) -> Result<(NetHandle, mpsc::Receiver<Event>, Vec<Multiaddr>), NetError> {
    let setup = |e: &dyn std::fmt::Display| NetError::Setup(e.to_string());
    let use_mdns = config.mdns;
    let keypair = config.keypair.clone();
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(config.keypair)
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default().nodelay(true),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )
        .map_err(|e| setup(&e))?
        .with_quic()
        .with_behaviour(|key| {
            let peer_id = key.public().to_peer_id();
            let gossip_config = gossipsub::ConfigBuilder::default()
                .heartbeat_interval(Duration::from_millis(500))
                .max_transmit_size(wire::CONTROL_MESSAGE_BYTES_MAX as usize)
                // Anonymous messages, named by their content, forwarded only
                // once we have checked the offer's own signature (SignedOffer):
                // a forged copy has another id and cannot shadow the real one.
                .validation_mode(gossipsub::ValidationMode::Anonymous)
                .message_id_fn(|m| {
                    gossipsub::MessageId::from(types::BlobHash::of(&m.data).0.to_vec())
                })
                .validate_messages()
                .build()
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            let gossipsub =
                gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Anonymous, gossip_config)
                    .map_err(std::io::Error::other)?;
            let mdns = if use_mdns {
                Some(mdns::tokio::Behaviour::new(
                    mdns::Config::default(),
                    peer_id,
                )?)
            } else {
                None
            };
            let blob_codec = request_response::cbor::codec::Codec::default()
                .set_request_size_maximum(4096)
                .set_response_size_maximum(wire::BLOB_RESPONSE_BYTES_MAX);
            Ok(Behaviour {
                limits: libp2p::connection_limits::Behaviour::new(connection_limits()),
                identify: identify::Behaviour::new(identify::Config::new(
                    "/plexus/1".into(),
                    key.public(),
                )),
                ping: ping::Behaviour::new(
                    ping::Config::new()
                        .with_interval(PING_INTERVAL)
                        .with_timeout(PING_TIMEOUT),
                ),
                mdns: mdns.into(),
                gossipsub,
                blob: request_response::Behaviour::with_codec(
                    blob_codec,
                    [(StreamProtocol::new(BLOB_PROTOCOL), ProtocolSupport::Full)],
                    request_response::Config::default().with_request_timeout(BLOB_REQUEST_TIMEOUT),
                ),
                streams: libp2p_stream::Behaviour::new(),
            })
        })
        .map_err(|e| setup(&e))?
        .with_swarm_config(|c| {
            c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT)
                // Every peer speaks every protocol of ours: a request goes out
                // with its protocol's name instead of after a round trip that
                // confirms it (multistream-select V1 lazy), a whole round trip
                // less per task and per blob chunk.
                .with_substream_upgrade_protocol_override(libp2p::core::upgrade::Version::V1Lazy)
        })
        .build();

    let topic = gossipsub::IdentTopic::new(wire::OFFER_TOPIC);
    swarm
        .behaviour_mut()
        .gossipsub
        .subscribe(&topic)
        .map_err(|e| setup(&e))?;

    let mut listeners = Vec::new();
    for addr in &config.listen {
        ensure_port_free(addr)?;
        let id = swarm
            .listen_on(addr.clone())
            .map_err(|e| NetError::Listen {
                addr: addr.to_string(),
                message: e.to_string(),
            })?;
        listeners.push((id, addr.clone()));
    }
    // Wait until each listener is bound or has failed, so a busy port is an error here.
    let mut bound = Vec::new();
    let mut pending: HashSet<_> = listeners.iter().map(|(id, _)| *id).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !pending.is_empty() {
        let event = tokio::time::timeout_at(deadline, swarm.select_next_some())
            .await
            .map_err(|_| NetError::Setup("timed out binding the listen addresses".into()))?;
        match event {
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                pending.remove(&listener_id);
                bound.push(address);
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                let addr = listeners
                    .iter()
                    .find(|(id, _)| *id == listener_id)
                    .map(|(_, a)| a.to_string())
                    .unwrap_or_default();
                let message = match reason {
                    Err(e) => e.to_string(),
                    Ok(()) => "closed".into(),
                };
                return Err(NetError::Listen { addr, message });
            }
            SwarmEvent::ListenerError { listener_id, error } => {
                let addr = listeners
                    .iter()
                    .find(|(id, _)| *id == listener_id)
                    .map(|(_, a)| a.to_string())
                    .unwrap_or_default();
                return Err(NetError::Listen {
                    addr,
                    message: error.to_string(),
                });
            }
            _ => {}
        }
    }
    // Dial the bootstrap peers and wait for each to connect or fail: a
    // network joined through nothing but unreachable addresses is an error.
    let mut dials = HashMap::new();
    let mut bootstrap = Vec::new();
    for addr in &config.bootstrap {
        let opts = libp2p::swarm::dial_opts::DialOpts::unknown_peer_id()
            .address(addr.clone())
            .build();
        dials.insert(opts.connection_id(), addr.clone());
        bootstrap.push(BootstrapPeer {
            addr: addr.clone(),
            peer: None,
            dialing: None,
        });
        swarm.dial(opts).map_err(|e| NetError::Bootstrap {
            addr: addr.to_string(),
            message: e.to_string(),
        })?;
    }
    let mut joined = Vec::new();
    let mut failures = Vec::new();
    let deadline = tokio::time::Instant::now() + BOOTSTRAP_TIMEOUT;
    while !dials.is_empty() {
        let Ok(event) = tokio::time::timeout_at(deadline, swarm.select_next_some()).await else {
            failures.extend(dials.drain().map(|(_, a)| (a, "timed out".to_owned())));
            break;
        };
        match event {
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                ..
            } => {
                if let Some(addr) = dials.remove(&connection_id)
                    && let Some(b) = bootstrap.iter_mut().find(|b| b.addr == addr)
                {
                    b.peer = Some(peer_id);
                }
                if !joined.contains(&peer_id) {
                    joined.push(peer_id);
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                error,
                ..
            } => {
                if let Some(addr) = dials.remove(&connection_id) {
                    failures.push((addr, error.to_string().replace('\n', " ")));
                }
            }
            _ => {}
        }
    }
    if !config.bootstrap.is_empty() && joined.is_empty() {
        let (addr, message) = failures
            .into_iter()
            .next()
            .map(|(a, m)| (a.to_string(), m))
            .unwrap_or_default();
        return Err(NetError::Bootstrap {
            addr,
            message: format!("unreachable: {message}"),
        });
    }

    let local_peer_id = *swarm.local_peer_id();
    let streams = swarm.behaviour().streams.new_control();
    let (command_tx, command_rx) = mpsc::channel(COMMAND_QUEUE_MAX);
    let (event_tx, event_rx) = mpsc::channel(EVENT_QUEUE_MAX);
    let denied = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let blob_rate = Arc::new(crate::rate::BlobRate::new());
    let actor = Actor {
        denied: denied.clone(),
        blob_rate: blob_rate.clone(),
        swarm,
        keypair,
        topic,
        commands: command_rx,
        events: event_tx.clone(),
        blob_replies: HashMap::new(),
        blob_channels: HashMap::new(),
        next_inbound: 0,
        bootstrap,
        last_heard: HashMap::new(),
    };
    let tasks = crate::tasks::TaskLinks::new(streams.clone());
    tasks.accept(event_tx.clone())?;
    tokio::spawn(actor.run(joined));
    Ok((
        NetHandle {
            commands: command_tx,
            streams,
            tasks,
            local_peer_id,
            denied,
            blob_rate,
        },
        event_rx,
        bound,
    ))
}

/// The connection bounds of every node, from `types::limits`.
fn connection_limits() -> libp2p::connection_limits::ConnectionLimits {
    use types::limits::*;
    libp2p::connection_limits::ConnectionLimits::default()
        .with_max_established(Some(CONNECTIONS_MAX))
        .with_max_established_incoming(Some(CONNECTIONS_INBOUND_MAX))
        .with_max_established_per_peer(Some(CONNECTIONS_PER_PEER_MAX))
        .with_max_pending_incoming(Some(CONNECTIONS_PENDING_MAX))
        .with_max_pending_outgoing(Some(CONNECTIONS_PENDING_MAX))
}

/// libp2p binds listening sockets with SO_REUSEPORT (so dials can reuse the
/// port), which lets a second node silently share a busy port. A plain bind
/// first turns that into the error a user expects.
fn ensure_port_free(addr: &Multiaddr) -> Result<(), NetError> {
    use libp2p::multiaddr::Protocol;
    let mut ip = None;
    for p in addr.iter() {
        let busy = |e: std::io::Error| NetError::Listen {
            addr: addr.to_string(),
            message: format!("port in use: {e}"),
        };
        match p {
            Protocol::Ip4(a) => ip = Some(std::net::IpAddr::V4(a)),
            Protocol::Ip6(a) => ip = Some(std::net::IpAddr::V6(a)),
            Protocol::Tcp(port) if port != 0 => {
                if let Some(ip) = ip {
                    std::net::TcpListener::bind((ip, port)).map_err(busy)?;
                }
            }
            Protocol::Udp(port) if port != 0 => {
                if let Some(ip) = ip {
                    std::net::UdpSocket::bind((ip, port)).map_err(busy)?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

struct Actor {
    swarm: Swarm<Behaviour>,
    /// Signs this node's offers.
    keypair: Keypair,
    topic: gossipsub::IdentTopic,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    blob_replies: HashMap<OutboundRequestId, oneshot::Sender<Result<BlobResponse, NetError>>>,
    blob_channels: HashMap<InboundId, ResponseChannel<BlobResponse>>,
    next_inbound: InboundId,
    bootstrap: Vec<BootstrapPeer>,
    /// When each connected peer last answered a ping.
    last_heard: HashMap<PeerId, std::time::Instant>,
    denied: Arc<std::sync::atomic::AtomicU64>,
    blob_rate: Arc<crate::rate::BlobRate>,
}

/// A bootstrap address, the peer found there, and the dial out to it.
struct BootstrapPeer {
    addr: Multiaddr,
    peer: Option<PeerId>,
    /// The dial out to it and when it began.
    dialing: Option<(libp2p::swarm::ConnectionId, std::time::Instant)>,
}

impl Actor {
    async fn run(mut self, already_connected: Vec<PeerId>) {
        for peer in already_connected {
            self.last_heard.insert(peer, std::time::Instant::now());
            self.emit(Event::Connected(peer)).await;
        }
        let mut redial = tokio::time::interval(REDIAL_INTERVAL);
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event).await,
                _ = redial.tick() => {
                    self.drop_silent_peers();
                    self.redial_bootstrap();
                }
                command = self.commands.recv() => match command {
                    Some(c) => self.on_command(c),
                    None => return, // every handle dropped: the node is shutting down
                },
            }
        }
    }

    /// Closes the connections of peers that stopped answering pings.
    fn drop_silent_peers(&mut self) {
        let silent: Vec<PeerId> = self
            .last_heard
            .iter()
            .filter(|(_, at)| at.elapsed() > SILENT_PEER_MAX)
            .map(|(p, _)| *p)
            .collect();
        for peer in silent {
            tracing::info!(target: "plexus::net", %peer, "silent for {SILENT_PEER_MAX:?}: disconnecting");
            self.last_heard.remove(&peer);
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }

    /// Dials every bootstrap peer the node is not connected to, so a node
    /// finds its network again after a restart on either side or a partition.
    fn redial_bootstrap(&mut self) {
        for b in &mut self.bootstrap {
            let dialing = b
                .dialing
                .is_some_and(|(_, since)| since.elapsed() < REDIAL_AFTER);
            if dialing || b.peer.is_some_and(|p| self.swarm.is_connected(&p)) {
                continue;
            }
            let opts = libp2p::swarm::dial_opts::DialOpts::unknown_peer_id()
                .address(b.addr.clone())
                .build();
            let id = opts.connection_id();
            match self.swarm.dial(opts) {
                Ok(()) => b.dialing = Some((id, std::time::Instant::now())),
                Err(e) => tracing::debug!(target: "plexus::net", "redial {}: {e}", b.addr),
            }
        }
    }

    async fn emit(&mut self, event: Event) {
        // The node consuming events is gone only at shutdown.
        let _ = self.events.send(event).await;
    }

    fn on_command(&mut self, command: Command) {
        let b = self.swarm.behaviour_mut();
        match command {
            Command::PublishOffer(offer) => match wire::SignedOffer::sign(&self.keypair, &offer)
                .and_then(|signed| wire::encode(&signed))
            {
                Ok(bytes) => {
                    // No subscribed peer yet is normal at start; the next round reaches them.
                    if let Err(e) = b.gossipsub.publish(self.topic.clone(), bytes) {
                        tracing::debug!(target: "plexus::net", "offer not published: {e}");
                    }
                }
                Err(e) => tracing::warn!(target: "plexus::net", "offer not encoded: {e}"),
            },
            Command::SendBlob {
                peer,
                request,
                reply,
            } => {
                let id = b.blob.send_request(&peer, request);
                self.blob_replies.insert(id, reply);
            }
            Command::RespondBlob { id, response } => {
                if let Some(channel) = self.blob_channels.remove(&id) {
                    let _ = b.blob.send_response(channel, response);
                }
            }
            Command::Dial(addr) => {
                if let Err(e) = self.swarm.dial(addr.clone()) {
                    tracing::warn!(target: "plexus::net", "dial {addr}: {e}");
                }
            }
            Command::ConnectedPeers(reply) => {
                let _ = reply.send(self.swarm.connected_peers().copied().collect());
            }
        }
    }

    fn inbound_id(&mut self) -> Option<InboundId> {
        if self.blob_channels.len() >= INBOUND_PENDING_MAX {
            return None;
        }
        self.next_inbound += 1;
        Some(self.next_inbound)
    }

    async fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => self.emit(Event::Listening(address)).await,
            SwarmEvent::ConnectionEstablished {
                peer_id,
                num_established,
                endpoint,
                connection_id,
                ..
            } => {
                if let Some(b) = self
                    .bootstrap
                    .iter_mut()
                    .find(|b| b.dialing.is_some_and(|(id, _)| id == connection_id))
                {
                    b.dialing = None;
                    b.peer = Some(peer_id);
                }
                self.last_heard.insert(peer_id, std::time::Instant::now());
                let address = endpoint.get_remote_address().clone();
                if num_established.get() == 1 {
                    self.emit(Event::Connected(peer_id)).await;
                }
                self.emit(Event::Address {
                    peer: peer_id,
                    address,
                })
                .await;
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                error,
                ..
            } => {
                if let libp2p::swarm::DialError::Denied { cause } = &error {
                    self.denied
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::info!(target: "plexus::net", "connection not made: {cause}");
                }
                if let Some(b) = self
                    .bootstrap
                    .iter_mut()
                    .find(|b| b.dialing.is_some_and(|(id, _)| id == connection_id))
                {
                    b.dialing = None;
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                cause,
                ..
            } => {
                tracing::debug!(target: "plexus::net", %peer_id, num_established, "connection closed: {cause:?}");
                if num_established == 0 {
                    self.last_heard.remove(&peer_id);
                    self.emit(Event::Disconnected(peer_id)).await;
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                for (peer, addr) in found {
                    if !self.swarm.is_connected(&peer) {
                        let _ = self.swarm.dial(addr);
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                for addr in info.listen_addrs {
                    self.swarm.add_peer_address(peer_id, addr);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event {
                peer,
                result: Ok(rtt),
                ..
            })) => {
                self.last_heard.insert(peer, std::time::Instant::now());
                self.emit(Event::RoundTrip { peer, rtt }).await
            }

            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => {
                let checked = wire::decode::<wire::SignedOffer>(&message.data)
                    .and_then(|signed| signed.verify());
                let verdict = match &checked {
                    Ok(_) => gossipsub::MessageAcceptance::Accept,
                    Err(e) => {
                        tracing::warn!(target: "plexus::net", from = %propagation_source, "rejected an offer: {e}");
                        gossipsub::MessageAcceptance::Reject
                    }
                };
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&message_id, &propagation_source, verdict);
                if let Ok((from, offer)) = checked {
                    self.emit(Event::Offer { from, offer }).await;
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Blob(e)) => self.on_blob_event(e).await,
            SwarmEvent::IncomingConnectionError {
                error: libp2p::swarm::ListenError::Denied { cause },
                send_back_addr,
                ..
            } => {
                self.denied
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(target: "plexus::net", from = %send_back_addr, "connection refused: {cause}");
            }
            _ => {}
        }
    }

    async fn on_blob_event(&mut self, event: request_response::Event<BlobRequest, BlobResponse>) {
        match split("blob", event) {
            Rr::Inbound { peer, channel, .. } if !self.blob_rate.allow(peer) => {
                let refused = BlobResponse::Refused {
                    reason: crate::rate::BlobRate::reason(),
                };
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .blob
                    .send_response(channel, refused);
            }
            Rr::Inbound {
                peer,
                request,
                channel,
            } => match self.inbound_id() {
                Some(id) => {
                    self.blob_channels.insert(id, channel);
                    self.emit(Event::BlobRequested {
                        from: peer,
                        id,
                        request,
                    })
                    .await;
                }
                None => {
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .blob
                        .send_response(channel, BlobResponse::NotFound);
                }
            },
            Rr::Answered { request_id, result } => {
                if let Some(reply) = self.blob_replies.remove(&request_id) {
                    let _ = reply.send(result);
                }
            }
            Rr::Nothing => {}
        }
    }
}

/// What a request-response event means to the actor, whatever the protocol.
enum Rr<Req, Resp> {
    Inbound {
        peer: PeerId,
        request: Req,
        channel: ResponseChannel<Resp>,
    },
    Answered {
        request_id: OutboundRequestId,
        result: Result<Resp, NetError>,
    },
    Nothing,
}

fn split<Req, Resp>(protocol: &str, event: request_response::Event<Req, Resp>) -> Rr<Req, Resp> {
    use request_response::{Event as E, Message as M};
    match event {
        E::Message {
            peer,
            message: M::Request {
                request, channel, ..
            },
            ..
        } => Rr::Inbound {
            peer,
            request,
            channel,
        },
        E::Message {
            message:
                M::Response {
                    request_id,
                    response,
                },
            ..
        } => Rr::Answered {
            request_id,
            result: Ok(response),
        },
        E::OutboundFailure {
            peer,
            request_id,
            error,
            ..
        } => Rr::Answered {
            request_id,
            result: Err(NetError::Request {
                peer: peer.to_string(),
                message: error.to_string(),
            }),
        },
        E::InboundFailure { peer, error, .. } => {
            // Oversized or malformed messages end here: dropped, and said so.
            tracing::warn!(target: "plexus::net", %peer, "inbound {protocol} request failed: {error}");
            Rr::Nothing
        }
        E::ResponseSent { .. } => Rr::Nothing,
    }
}
