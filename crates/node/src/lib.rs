//! A Plexus node: the actor that feeds events from the network, the sandbox
//! and the clock into the requester's and the provider's state, and carries
//! out what they decide. One task owns that state; the API reaches it
//! through a [`NodeHandle`] over a bounded channel.
//!
//! Jobs, attempts and accepted results are in SQLite, written before they
//! count: a node killed at any moment takes its jobs up again on restart.

pub mod blobs;
mod metrics;
pub mod pay;
mod provider;
mod requester;

use net::wire::Offer;
use net::{Event, Keypair, NetHandle, PeerId};
pub use net::{Multiaddr, Protocol};
use requester::Requester;
use serde::Serialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

#[cfg(feature = "adversary")]
pub use ::provider::Strategy;
pub use metrics::Metrics;
pub use provider::{ProviderConfig, ProviderStatus};
pub use requester::{
    CoalitionBound, JobStatus, JobSubmission, ProviderShare, TASKS_PAGE_MAX, TaskInfo,
    VerificationStatus,
};

/// API requests waiting for the node.
const API_QUEUE_MAX: usize = 256;
/// Internal completions (tasks run, results fetched) waiting for the node.
const INTERNAL_QUEUE_MAX: usize = 4096;
const TICK: Duration = Duration::from_millis(250);
/// API calls waiting for a job to end ([`NodeHandle::wait_end`]); more are refused.
const JOB_WAITERS_MAX: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Net(#[from] net::NetError),
    #[error(transparent)]
    Sandbox(#[from] sandbox::SandboxError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("identity {path}: {message}")]
    Identity { path: String, message: String },
    #[error("{0}")]
    Job(String),
    #[error("no job {0}")]
    UnknownJob(String),
    /// The request is valid but the job's state does not allow it.
    #[error("{0}")]
    Conflict(String),
    #[error("the node has stopped")]
    Stopped,
}

pub struct NodeConfig {
    pub data_dir: PathBuf,
    pub listen: Vec<Multiaddr>,
    pub bootstrap: Vec<Multiaddr>,
    pub mdns: bool,
    pub provider: Option<ProviderConfig>,
    /// Keep the database in memory: nothing survives a restart. Only for
    /// measuring what durability costs.
    pub in_memory_database: bool,
    /// Run the ledger (the solo chain, in `DATA_DIR/chain.db`) and pay
    /// for jobs with a budget from this node's account.
    pub pay: Option<pay::PayConfig>,
}

#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct PeerInfo {
    pub peer_id: String,
    pub connected: bool,
    pub rtt_ms: Option<f64>,
    /// Its live offer: cores, memory_bytes, slots_total, slots_free,
    /// price_per_gfuel, fuel_per_sec, engine, expires_at_ms.
    pub offer: Option<Offer>,
    /// What this node's verification has recorded of it.
    pub verified: u64,
    pub disagreed: u64,
    pub timed_out: u64,
}

#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct NodeInfo {
    pub peer_id: String,
    pub listen: Vec<String>,
    pub provider: Option<provider::ProviderStatus>,
}

enum ApiRequest {
    Submit(JobSubmission, oneshot::Sender<Result<String, NodeError>>),
    Status(String, oneshot::Sender<Result<JobStatus, NodeError>>),
    List(oneshot::Sender<Vec<JobStatus>>),
    Peers(oneshot::Sender<Vec<PeerInfo>>),
    Info(oneshot::Sender<NodeInfo>),
    Cancel(String, oneshot::Sender<Result<JobStatus, NodeError>>),
    Tasks(
        String,
        u64,
        u64,
        oneshot::Sender<Result<Vec<TaskInfo>, NodeError>>,
    ),
    TaskOutput(String, u64, oneshot::Sender<Result<PathBuf, NodeError>>),
    WaitEnd(String, oneshot::Sender<Result<JobStatus, NodeError>>),
}

type SubmitReply = oneshot::Sender<Result<String, NodeError>>;

impl ApiRequest {
    fn changes_jobs(&self) -> bool {
        matches!(self, ApiRequest::Submit(..) | ApiRequest::Cancel(..))
    }
}

/// Talks to a running node; cheap to clone.
#[derive(Clone)]
pub struct NodeHandle {
    requests: mpsc::Sender<ApiRequest>,
    /// The ledger, when the node runs one.
    pay: Option<pay::Pay>,
    metrics: Arc<Metrics>,
    /// Ticks on every change a job's status could show (see [`NodeHandle::changes`]).
    changes: tokio::sync::watch::Receiver<u64>,
}

impl NodeHandle {
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> ApiRequest,
    ) -> Result<T, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(make(tx))
            .await
            .map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)
    }
    /// The node's ledger and its account, when it runs one.
    pub fn ledger(&self) -> Option<&pay::Pay> {
        self.pay.as_ref()
    }

    pub async fn submit(&self, job: JobSubmission) -> Result<String, NodeError> {
        self.ask(|tx| ApiRequest::Submit(job, tx)).await?
    }
    pub async fn status(&self, id: String) -> Result<JobStatus, NodeError> {
        self.ask(|tx| ApiRequest::Status(id, tx)).await?
    }
    pub async fn jobs(&self) -> Result<Vec<JobStatus>, NodeError> {
        self.ask(ApiRequest::List).await
    }
    pub async fn peers(&self) -> Result<Vec<PeerInfo>, NodeError> {
        self.ask(ApiRequest::Peers).await
    }
    pub async fn info(&self) -> Result<NodeInfo, NodeError> {
        self.ask(ApiRequest::Info).await
    }
    pub async fn cancel(&self, id: String) -> Result<JobStatus, NodeError> {
        self.ask(|tx| ApiRequest::Cancel(id, tx)).await?
    }
    /// Tasks `from..from + limit` of a job (at most [`TASKS_PAGE_MAX`]).
    pub async fn tasks(
        &self,
        id: String,
        from: u64,
        limit: u64,
    ) -> Result<Vec<TaskInfo>, NodeError> {
        self.ask(|tx| ApiRequest::Tasks(id, from, limit, tx))
            .await?
    }
    /// The file of a settled task that its job assembles (a tile).
    pub async fn task_output(&self, id: String, index: u64) -> Result<PathBuf, NodeError> {
        self.ask(|tx| ApiRequest::TaskOutput(id, index, tx)).await?
    }
    /// The job's status once it has ended: answered by the node the moment
    /// it ends, without polling. Bound the wait with a timeout.
    pub async fn wait_end(&self, id: String) -> Result<JobStatus, NodeError> {
        self.ask(|tx| ApiRequest::WaitEnd(id, tx)).await?
    }
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
    /// A receiver that wakes whenever jobs may have changed: status streams
    /// push at once instead of polling.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.clone()
    }
}

/// Things that finished off the node task and come back to it.
pub(crate) enum Internal {
    Requester(requester::Completion),
    /// A provider's request has its module and inputs, or could not get them.
    ProviderFetched(types::RequestId, Result<(), String>),
    /// A provider's request (one slot) is answered: what its tasks ran.
    ProviderDone(types::RequestId, Vec<::provider::Ran>),
    /// A submission's budget is locked in escrow (or could not be).
    Locked(Box<requester::Prepared>, Result<(), NodeError>, SubmitReply),
}

/// Wall-clock milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Writes a secret readable by its owner only, whole or not at all
/// (a temporary file renamed into place).
fn write_secret(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    }
    std::fs::rename(&tmp, path)
}

/// Loads the node's ed25519 identity, creating it on first start.
pub fn load_identity(data_dir: &std::path::Path) -> Result<Keypair, NodeError> {
    let path = data_dir.join("identity.key");
    let err = |message: String| NodeError::Identity {
        path: path.display().to_string(),
        message,
    };
    match std::fs::read(&path) {
        Ok(bytes) => Keypair::from_protobuf_encoding(&bytes).map_err(|e| err(e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Keypair::generate_ed25519();
            let bytes = key.to_protobuf_encoding().map_err(|e| err(e.to_string()))?;
            write_secret(&path, &bytes).map_err(|e| err(e.to_string()))?;
            Ok(key)
        }
        Err(e) => Err(err(e.to_string())),
    }
}

/// The bearer token the API asks of non-loopback clients: `api.token` in
/// the data dir, made on first need from the OS's randomness (32 bytes, hex).
pub fn api_token(data_dir: &std::path::Path) -> Result<String, NodeError> {
    let path = data_dir.join("api.token");
    let err = |message: String| NodeError::Identity {
        path: path.display().to_string(),
        message,
    };
    match std::fs::read_to_string(&path) {
        Ok(token) if token.trim().len() >= 32 => Ok(token.trim().to_owned()),
        Ok(_) => Err(err("the token is shorter than 32 characters".into())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use rand::TryRngCore;
            let mut bytes = [0u8; 32];
            rand::rngs::OsRng
                .try_fill_bytes(&mut bytes)
                .map_err(|e| err(format!("no randomness from the OS: {e}")))?;
            let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            write_secret(&path, token.as_bytes()).map_err(|e| err(e.to_string()))?;
            Ok(token)
        }
        Err(e) => Err(err(e.to_string())),
    }
}

pub struct StartedNode {
    pub handle: NodeHandle,
    pub peer_id: PeerId,
    pub listen: Vec<Multiaddr>,
}

/// Starts the node's tasks on the current tokio runtime.
pub async fn start(config: NodeConfig) -> Result<StartedNode, NodeError> {
    let keypair = load_identity(&config.data_dir)?;
    let blobs = Arc::new(store::BlobStore::open(config.data_dir.join("blobs"))?);
    let open_db = move |data_dir: &std::path::Path| {
        if config.in_memory_database {
            store::Db::open_in_memory()
        } else {
            store::Db::open(&data_dir.join("plexus.db"))
        }
    };
    let db = open_db(&config.data_dir)?;
    let (net, events, listen) = net::spawn(net::NetConfig {
        keypair: keypair.clone(),
        listen: config.listen.clone(),
        bootstrap: config.bootstrap.clone(),
        mdns: config.mdns,
    })
    .await?;
    let peer_id = net.local_peer_id;
    let metrics = Arc::new(Metrics::new());
    let provider = match config.provider {
        // The benchmark runs the sandbox, which must not block the async runtime.
        Some(p) => {
            let (data_dir, keypair, blobs, metrics) = (
                config.data_dir.clone(),
                keypair.clone(),
                blobs.clone(),
                metrics.clone(),
            );
            let made = tokio::task::spawn_blocking(move || {
                let db = open_db(&data_dir)?;
                provider::Provider::new(p, &data_dir, db, keypair, blobs, metrics)
            })
            .await
            .map_err(|e| NodeError::Job(format!("provider setup panicked: {e}")))?;
            Some(made?)
        }
        None => None,
    };
    let corrupt = provider.as_ref().is_some_and(|p| p.corrupts_blobs());
    tokio::spawn(blobs::serve_streams(
        net.accept_blob_streams()?,
        net.clone(),
        blobs.clone(),
        metrics.clone(),
        corrupt,
    ));
    let pay = match &config.pay {
        Some(p) => {
            let key = pay::signing_key(&keypair)?;
            let account = ledger::AccountId::of(&key);
            let genesis = chain::Genesis {
                chain_id: pay::CHAIN_ID.into(),
                allocations: vec![(account, p.mint)],
                validators: vec![account],
            };
            let path = config.data_dir.join("chain.db");
            let validator = key.clone();
            let solo =
                tokio::task::spawn_blocking(move || chain::Solo::open(&path, genesis, validator))
                    .await
                    .map_err(|e| NodeError::Job(format!("the ledger's setup panicked: {e}")))?
                    .map_err(|e| NodeError::Job(format!("the ledger: {e}")))?;
            let chain =
                chain::spawn_solo(solo).map_err(|e| NodeError::Job(format!("the ledger: {e}")))?;
            Some(pay::Pay::spawn(chain, key))
        }
        None => None,
    };
    let (api_tx, api_rx) = mpsc::channel(API_QUEUE_MAX);
    let (internal_tx, internal_rx) = mpsc::channel(INTERNAL_QUEUE_MAX);
    let (changes_tx, changes_rx) = tokio::sync::watch::channel(0u64);
    let mut node = Node {
        net: net.clone(),
        listen: listen.clone(),
        pay: pay.clone(),
        requester: Requester::new(
            config.data_dir.clone(),
            db,
            blobs.clone(),
            net.clone(),
            internal_tx.clone(),
            metrics.clone(),
        )?,
        provider,
        blobs,
        peers: HashMap::new(),
        internal: internal_tx,
        metrics: metrics.clone(),
        changes: changes_tx,
        job_waiters: Vec::new(),
    };
    if let Some(pay) = &pay {
        node.requester.set_pay(pay.clone());
    }
    tokio::spawn(node.run(events, api_rx, internal_rx));
    Ok(StartedNode {
        handle: NodeHandle {
            requests: api_tx,
            pay,
            metrics,
            changes: changes_rx,
        },
        peer_id,
        listen,
    })
}

struct PeerState {
    connected: bool,
    /// Its address range (IPv4 /24, IPv6 /48), from the last connection.
    network: Option<String>,
    rtt: Option<Duration>,
    /// Its last offer and, by our clock, until when it counts
    /// (`market::live_until_ms`). Kept past then, so a job that waits can
    /// count it as expired; replaced by the provider's next.
    offer: Option<(Offer, u64)>,
}

struct Node {
    net: NetHandle,
    listen: Vec<Multiaddr>,
    pay: Option<pay::Pay>,
    requester: Requester,
    provider: Option<provider::Provider>,
    blobs: Arc<store::BlobStore>,
    peers: HashMap<PeerId, PeerState>,
    internal: mpsc::Sender<Internal>,
    metrics: Arc<Metrics>,
    changes: tokio::sync::watch::Sender<u64>,
    /// Callers of [`NodeHandle::wait_end`] and the job each waits for.
    job_waiters: Vec<(String, oneshot::Sender<Result<JobStatus, NodeError>>)>,
}

impl Node {
    async fn run(
        mut self,
        mut events: mpsc::Receiver<Event>,
        mut api: mpsc::Receiver<ApiRequest>,
        mut internal: mpsc::Receiver<Internal>,
    ) {
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(e) => self.on_net_event(e).await,
                    None => return,
                },
                request = api.recv() => match request {
                    Some(r) => {
                        let changes = r.changes_jobs();
                        self.on_api(r);
                        if changes {
                            self.answer_job_waiters();
                            self.changes.send_modify(|n| *n = n.wrapping_add(1));
                        }
                    }
                    None => return,
                },
                Some(done) = internal.recv() => {
                    // A result, the job's end and the dispatch that refills
                    // the credit it freed are one step of the core, and so
                    // one commit.
                    self.on_internal(done);
                    self.requester.flush();
                    self.answer_job_waiters();
                    self.changes.send_modify(|n| *n = n.wrapping_add(1));
                }
                _ = tick.tick() => {
                    self.on_tick().await;
                    self.answer_job_waiters();
                }
            }
        }
    }

    /// Answers the waiters whose job has ended (or is gone).
    fn answer_job_waiters(&mut self) {
        if self.job_waiters.is_empty() {
            return;
        }
        for (id, reply) in std::mem::take(&mut self.job_waiters) {
            if reply.is_closed() {
                continue;
            }
            match self.requester.has_ended(&id) {
                Some(false) => self.job_waiters.push((id, reply)),
                Some(true) => {
                    let status = self.requester.status(&id);
                    let _ = reply.send(status.ok_or(NodeError::UnknownJob(id)));
                }
                None => {
                    let _ = reply.send(Err(NodeError::UnknownJob(id)));
                }
            }
        }
    }

    fn peer(&mut self, peer: PeerId) -> &mut PeerState {
        self.peers.entry(peer).or_insert(PeerState {
            connected: false,
            network: None,
            rtt: None,
            offer: None,
        })
    }

    async fn on_net_event(&mut self, event: Event) {
        match event {
            Event::Listening(addr) => {
                if !self.listen.contains(&addr) {
                    self.listen.push(addr);
                }
            }
            Event::Connected(peer) => {
                tracing::debug!(target: "plexus::net", %peer, "connected");
                self.peer(peer).connected = true;
                if let Some(p) = &mut self.provider {
                    p.on_requester_came(&self.net, &self.internal);
                }
                // An offer heard before the connection counts from now.
                self.offer_to_requester(peer);
            }
            Event::Disconnected(peer) => {
                tracing::debug!(target: "plexus::net", %peer, "disconnected");
                self.peer(peer).connected = false;
                self.requester.on_disconnect(peer);
                self.requester.flush();
                if let Some(p) = &mut self.provider {
                    p.on_requester_gone(peer, &self.net, &self.internal);
                }
            }
            Event::Address { peer, address } => {
                self.peer(peer).network = network_of(&address);
            }
            Event::RoundTrip { peer, rtt } => self.peer(peer).rtt = Some(rtt),
            Event::Offer { from, offer } => {
                let live_until_ms = market::live_until_ms(&offer, now_ms());
                self.peer(from).offer = Some((offer, live_until_ms));
                self.offer_to_requester(from);
            }
            Event::TaskRequested { from, id, request } => match &mut self.provider {
                Some(p) => p.on_task_request(from, id, request, &self.net, &self.internal),
                None => {
                    let refused = net::wire::TaskResponse::Refused {
                        reason: "this node does not provide".into(),
                    };
                    let _ = self.net.respond_task(id, refused).await;
                }
            },
            Event::BlobRequested { from, id, request } => blobs::serve(
                &self.net,
                &self.blobs,
                &self.metrics,
                from,
                id,
                request,
                self.provider.as_ref().is_some_and(|p| p.corrupts_blobs()),
            ),
        }
    }

    fn on_api(&mut self, request: ApiRequest) {
        match request {
            ApiRequest::Submit(job, reply) => {
                let prepared = match self.requester.prepare(job) {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = reply.send(Err(e));
                        return;
                    }
                };
                if let (Some(pay), Some((amount, price))) = (&self.pay, prepared.escrow()) {
                    // Nothing of it is recorded or sent until its budget
                    // is locked; the chain answers within a block.
                    let (pay, internal) = (pay.clone(), self.internal.clone());
                    tokio::spawn(async move {
                        let id = prepared.id().clone();
                        let locked = pay.lock(id, amount, price).await;
                        let _ = internal
                            .send(Internal::Locked(Box::new(prepared), locked, reply))
                            .await;
                    });
                    return;
                }
                let _ = reply.send(self.requester.start(prepared));
                // After the reply: tokio runs the task woken (or spawned)
                // last first, so the first tasks go out before the API's
                // handler takes its turn.
                self.requester.flush();
            }
            ApiRequest::WaitEnd(id, reply) => {
                self.job_waiters.retain(|(_, r)| !r.is_closed());
                if self.job_waiters.len() >= JOB_WAITERS_MAX {
                    let _ = reply.send(Err(NodeError::Conflict(format!(
                        "{JOB_WAITERS_MAX} calls wait on jobs already (JOB_WAITERS_MAX)"
                    ))));
                } else {
                    // Answered at once when the job has ended already.
                    self.job_waiters.push((id, reply));
                    self.answer_job_waiters();
                }
            }
            ApiRequest::Status(id, reply) => {
                let _ = reply.send(self.requester.status(&id).ok_or(NodeError::UnknownJob(id)));
            }
            ApiRequest::List(reply) => {
                let _ = reply.send(self.requester.list());
            }
            ApiRequest::Peers(reply) => {
                let mut peers: Vec<PeerInfo> = self
                    .peers
                    .iter()
                    .map(|(id, p)| {
                        let record = self.requester.record(id);
                        PeerInfo {
                            peer_id: id.to_string(),
                            connected: p.connected,
                            rtt_ms: p.rtt.map(|d| d.as_secs_f64() * 1000.0),
                            offer: p
                                .offer
                                .as_ref()
                                .filter(|(_, until)| now_ms() <= *until)
                                .map(|(o, _)| o.clone()),
                            verified: record.verified,
                            disagreed: record.disagreed,
                            timed_out: record.timed_out,
                        }
                    })
                    .collect();
                peers.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
                let _ = reply.send(peers);
            }
            ApiRequest::Cancel(id, reply) => {
                let _ = reply.send(self.requester.cancel(&id));
                self.requester.flush();
            }
            ApiRequest::Tasks(id, from, limit, reply) => {
                let tasks = self
                    .requester
                    .tasks(&id, from, limit)
                    .ok_or(NodeError::UnknownJob(id));
                let _ = reply.send(tasks);
            }
            ApiRequest::TaskOutput(id, index, reply) => {
                let _ = reply.send(self.requester.task_output(&id, index));
            }
            ApiRequest::Info(reply) => {
                let _ = reply.send(NodeInfo {
                    peer_id: self.net.local_peer_id.to_string(),
                    listen: self.listen.iter().map(|a| a.to_string()).collect(),
                    provider: self.provider.as_ref().map(|p| p.status()),
                });
            }
        }
    }

    fn on_internal(&mut self, done: Internal) {
        match done {
            Internal::Requester(c) => self.requester.on_completion(c),
            Internal::Locked(prepared, locked, reply) => {
                let id = prepared.id().clone();
                let escrow = prepared.escrow();
                let started = locked.and_then(|()| {
                    let started = self.requester.start(*prepared);
                    // Locked for a job that never started: given back.
                    if let (Err(_), Some(pay), Some((_, price))) = (&started, &self.pay, escrow)
                        && let Err(e) = pay.settle(id.clone(), price, Vec::new())
                    {
                        tracing::error!(target: "plexus::pay", job = %id, "{e}");
                    }
                    started
                });
                let _ = reply.send(started);
            }
            Internal::ProviderFetched(request, result) => {
                if let Some(p) = &mut self.provider {
                    p.on_fetched(request, result, &self.net, &self.internal);
                }
            }
            Internal::ProviderDone(request, ran) => {
                if let Some(p) = &mut self.provider {
                    p.on_done(request, ran, &self.net, &self.internal);
                }
            }
        }
    }

    async fn on_tick(&mut self) {
        let now = now_ms();
        if let Some(p) = &mut self.provider {
            p.on_tick(&self.net, &self.internal);
        }
        let connected = self.peers.values().filter(|p| p.connected).count();
        let offers = self
            .peers
            .values()
            .filter(|p| p.connected && p.offer.as_ref().is_some_and(|(_, until)| now <= *until))
            .count();
        self.metrics.peers_connected.set(connected as i64);
        self.metrics.offers_live.set(offers as i64);
        self.metrics
            .connections_denied
            .set(i64::try_from(self.net.connections_denied()).unwrap_or(i64::MAX));
        self.metrics
            .requests_rate_limited
            .set(i64::try_from(self.net.requests_rate_limited()).unwrap_or(i64::MAX));
        self.requester.tick();
        self.requester.flush();
    }

    /// A connected provider's offer goes to the requester's core (which
    /// keeps the book: expiry, ranking, credit); one of a peer reached
    /// only through gossip waits for a connection.
    fn offer_to_requester(&mut self, peer: PeerId) {
        let Some(p) = self.peers.get(&peer) else {
            return;
        };
        let Some((offer, _)) = p.offer.as_ref().filter(|_| p.connected) else {
            return;
        };
        let (offer, rtt, network) = (offer.clone(), p.rtt, p.network.clone());
        self.requester.on_offer(peer, offer, rtt, network);
        self.requester.flush();
    }
}

/// The address range a connection's address belongs to: IPv4 /24, IPv6 /48.
fn network_of(address: &Multiaddr) -> Option<String> {
    use net::Protocol;
    address.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => {
            let [a, b, c, _] = ip.octets();
            Some(format!("{a}.{b}.{c}.0/24"))
        }
        Protocol::Ip6(ip) => {
            let s = ip.segments();
            Some(format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2]))
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_ranges_group_by_24_and_48_bits() {
        let at = |s: &str| network_of(&s.parse::<Multiaddr>().expect("multiaddr"));
        assert_eq!(at("/ip4/10.1.2.3/tcp/1"), Some("10.1.2.0/24".into()));
        assert_eq!(
            at("/ip4/10.1.2.3/tcp/1"),
            at("/ip4/10.1.2.200/udp/9/quic-v1")
        );
        assert_ne!(at("/ip4/10.1.2.3/tcp/1"), at("/ip4/10.1.3.3/tcp/1"));
        assert_eq!(
            at("/ip6/2001:db8:1:2::1/tcp/1"),
            Some("2001:db8:1::/48".into())
        );
        assert_eq!(at("/dns4/example.org/tcp/1"), None);
    }
}
