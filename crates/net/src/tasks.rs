//! Tasks and their results on one long-lived stream per pair of peers
//! (`/plexus/task-stream/1`), instead of a request-response substream per
//! request.
//!
//! Why not request-response: each request there opens a yamux substream,
//! names its protocol, half-closes it to mark the end of the request, and
//! passes through the swarm task and its per-request timers on both sides.
//! Measured on loopback, that made each direction of a one-task job take
//! 250–350 µs; here a request is one length-prefixed frame on a stream that
//! is already open, read by a task of our own that hands it to the node.
//!
//! Frames: a 4-byte big-endian length, then CBOR of [`TaskFrame`]; a frame
//! over CONTROL_MESSAGE_BYTES_MAX ends the stream when it is read. The
//! requester matches answers to requests by the id it gave them; the
//! provider answers through the [`InboundId`] its node got with the request.

use crate::NetError;
use crate::actor::{Event, InboundId};
use crate::rate::RateLimit;
use crate::wire::{self, TaskRequest, TaskResponse};
use futures::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use libp2p::{PeerId, Stream, StreamProtocol};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

pub(crate) const TASK_STREAM_PROTOCOL: StreamProtocol =
    StreamProtocol::new("/plexus/task-stream/1");
/// Opening a task stream (a dial included, when not connected) takes at most this.
const TASK_STREAM_OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests one link has sent and not had answered; more are refused.
pub const TASK_STREAM_PENDING_MAX: usize = 1024;
/// Requests from other peers awaiting this node's answer; more are refused.
pub const TASK_INBOUND_PENDING_MAX: usize = 4096;

#[derive(Serialize, Deserialize)]
enum TaskFrame {
    Request { id: u64, request: TaskRequest },
    Response { id: u64, response: TaskResponse },
}

type Reply = oneshot::Sender<Result<TaskResponse, NetError>>;
type Writer = Arc<tokio::sync::Mutex<WriteHalf<Stream>>>;

/// A stream this node opened to a provider: requests go out on it, its
/// reader task hands the answers back.
struct OutLink {
    writer: Writer,
    pending: Arc<Mutex<HashMap<u64, Reply>>>,
}

/// Both directions of task traffic for one node; shared by its handles.
pub(crate) struct TaskLinks {
    control: libp2p_stream::Control,
    /// The links this node opened, by provider.
    outbound: Mutex<HashMap<PeerId, Arc<OutLink>>>,
    /// Requests received and not answered yet: where their answer goes.
    inbound: Mutex<HashMap<InboundId, (Writer, u64)>>,
    next_request: AtomicU64,
    next_inbound: AtomicU64,
    /// Task requests per peer (`TASK_REQUESTS_PER_PEER_PER_SEC`), over all
    /// the streams a peer opens.
    rate: Mutex<RateLimit<PeerId>>,
    /// Requests refused by it so far (for metrics).
    pub(crate) rate_limited: AtomicU64,
}

fn failed(peer: PeerId, message: impl Into<String>) -> NetError {
    NetError::Request {
        peer: peer.to_string(),
        message: message.into(),
    }
}

/// The maps here hold no invariant a panic elsewhere could break halfway.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl TaskLinks {
    pub(crate) fn new(control: libp2p_stream::Control) -> Arc<TaskLinks> {
        Arc::new(TaskLinks {
            control,
            outbound: Mutex::new(HashMap::new()),
            inbound: Mutex::new(HashMap::new()),
            next_request: AtomicU64::new(1),
            next_inbound: AtomicU64::new(1),
            rate: Mutex::new(RateLimit::new(
                types::limits::TASK_REQUESTS_PER_PEER_PER_SEC,
                types::limits::TASK_REQUESTS_BURST_PER_PEER,
                types::limits::RATE_LIMITED_PEERS_MAX,
            )),
            rate_limited: AtomicU64::new(0),
        })
    }

    /// Sends `request` to `peer` and waits for its answer. A link that has
    /// failed is opened again once.
    pub(crate) async fn send(
        self: &Arc<Self>,
        peer: PeerId,
        request: TaskRequest,
    ) -> Result<TaskResponse, NetError> {
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let frame = encode_frame(&TaskFrame::Request { id, request })?;
        let mut tries = 0;
        loop {
            tries += 1;
            let link = self.link(peer).await?;
            let (reply, answer) = oneshot::channel();
            {
                let mut pending = lock(&link.pending);
                if pending.len() >= TASK_STREAM_PENDING_MAX {
                    // Requests given up on (timed out) leave their entry
                    // behind: swept when the bound is reached, not per send.
                    pending.retain(|_, r| !r.is_closed());
                }
                if pending.len() >= TASK_STREAM_PENDING_MAX {
                    return Err(failed(
                        peer,
                        format!(
                            "{TASK_STREAM_PENDING_MAX} requests unanswered (TASK_STREAM_PENDING_MAX)"
                        ),
                    ));
                }
                pending.insert(id, reply);
            }
            let written = write_whole(link.writer.clone(), frame.clone()).await;
            if let Err(e) = written {
                lock(&link.pending).remove(&id);
                self.forget(peer, &link);
                if tries < 2 {
                    continue;
                }
                return Err(failed(peer, format!("task stream: {e}")));
            }
            return answer
                .await
                .unwrap_or_else(|_| Err(failed(peer, "task stream closed")));
        }
    }

    /// The open link to `peer`, or a new one.
    async fn link(self: &Arc<Self>, peer: PeerId) -> Result<Arc<OutLink>, NetError> {
        if let Some(link) = lock(&self.outbound).get(&peer) {
            return Ok(link.clone());
        }
        // Opened with no lock held: a peer slow to answer must not stall the
        // requests to every other. Two senders may open one each; the first
        // kept wins and the other stream is dropped (its reader sees it end).
        let stream = open_stream(
            &self.control,
            peer,
            TASK_STREAM_PROTOCOL,
            TASK_STREAM_OPEN_TIMEOUT,
            "task",
        )
        .await?;
        let (reader, writer) = stream.split();
        let link = Arc::new(OutLink {
            writer: Arc::new(tokio::sync::Mutex::new(writer)),
            pending: Arc::new(Mutex::new(HashMap::new())),
        });
        {
            let mut outbound = lock(&self.outbound);
            if let Some(first) = outbound.get(&peer) {
                return Ok(first.clone());
            }
            outbound.insert(peer, link.clone());
        }
        let (links, read_link) = (self.clone(), link.clone());
        tokio::spawn(async move {
            let error = read_answers(reader, &read_link.pending).await;
            tracing::debug!(target: "plexus::net", %peer, "task stream ended: {error}");
            links.forget(peer, &read_link);
            for (_, reply) in lock(&read_link.pending).drain() {
                let _ = reply.send(Err(failed(peer, format!("task stream: {error}"))));
            }
        });
        Ok(link)
    }

    /// Drops `link` from the open ones, if it is still the one for `peer`.
    fn forget(&self, peer: PeerId, link: &Arc<OutLink>) {
        let mut outbound = lock(&self.outbound);
        if outbound.get(&peer).is_some_and(|l| Arc::ptr_eq(l, link)) {
            outbound.remove(&peer);
        }
    }

    /// Sends the node's answer to an inbound request. False when the
    /// request is not one of this layer's (or its stream is gone).
    pub(crate) async fn respond(&self, id: InboundId, response: TaskResponse) -> bool {
        let Some((writer, remote_id)) = lock(&self.inbound).remove(&id) else {
            return false;
        };
        write_response(&writer, remote_id, response).await;
        true
    }

    /// Accepts the task streams other peers open, and reads each in a task
    /// of its own: every request becomes an [`Event::TaskRequested`].
    pub(crate) fn accept(self: &Arc<Self>, events: mpsc::Sender<Event>) -> Result<(), NetError> {
        let mut incoming = self
            .control
            .clone()
            .accept(TASK_STREAM_PROTOCOL)
            .map_err(|e| NetError::Setup(format!("accept task streams: {e}")))?;
        let links = self.clone();
        tokio::spawn(async move {
            use futures::StreamExt;
            // Always waiting here: libp2p-stream drops a stream that finds
            // this loop busy.
            while let Some((peer, stream)) = incoming.next().await {
                let (links, events) = (links.clone(), events.clone());
                tokio::spawn(async move {
                    let error = links.read_requests(peer, stream, events).await;
                    tracing::debug!(target: "plexus::net", %peer, "inbound task stream ended: {error}");
                });
            }
        });
        Ok(())
    }

    async fn read_requests(
        &self,
        peer: PeerId,
        stream: Stream,
        events: mpsc::Sender<Event>,
    ) -> String {
        let (mut reader, writer) = stream.split();
        let writer: Writer = Arc::new(tokio::sync::Mutex::new(writer));
        loop {
            let (remote_id, request) = match read_frame(&mut reader).await {
                Ok(TaskFrame::Request { id, request }) => (id, request),
                Ok(TaskFrame::Response { .. }) => return "an answer where a request goes".into(),
                Err(e) => return e,
            };
            if !lock(&self.rate).allow(peer, std::time::Instant::now()) {
                self.rate_limited.fetch_add(1, Ordering::Relaxed);
                let limited = TaskResponse::Refused {
                    reason: format!(
                        "rate limit: {} task requests a second per peer (TASK_REQUESTS_PER_PEER_PER_SEC)",
                        types::limits::TASK_REQUESTS_PER_PEER_PER_SEC
                    ),
                };
                write_response(&writer, remote_id, limited).await;
                continue;
            }
            let id = {
                let mut inbound = lock(&self.inbound);
                if inbound.len() >= TASK_INBOUND_PENDING_MAX {
                    None
                } else {
                    let id = self.next_inbound.fetch_add(1, Ordering::Relaxed);
                    inbound.insert(id, (writer.clone(), remote_id));
                    Some(id)
                }
            };
            let Some(id) = id else {
                let busy = TaskResponse::Refused {
                    reason: format!(
                        "too many pending requests (TASK_INBOUND_PENDING_MAX {TASK_INBOUND_PENDING_MAX})"
                    ),
                };
                write_response(&writer, remote_id, busy).await;
                continue;
            };
            let event = Event::TaskRequested {
                from: peer,
                id,
                request,
            };
            if events.send(event).await.is_err() {
                return "the node has stopped".into();
            }
        }
    }
}

async fn write_response(writer: &Writer, remote_id: u64, response: TaskResponse) {
    let frame = match encode_frame(&TaskFrame::Response {
        id: remote_id,
        response,
    }) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(target: "plexus::net", "answer not encoded: {e}");
            return;
        }
    };
    let written = write_whole(writer.clone(), frame).await;
    // The requester's attempt times out and goes elsewhere.
    if let Err(e) = written {
        tracing::debug!(target: "plexus::net", "answer not sent: {e}");
    }
}

/// Opens a raw stream of `protocol` to `peer` (a dial included, when not
/// connected) within `timeout`; `what` names it in errors.
pub(crate) async fn open_stream(
    control: &libp2p_stream::Control,
    peer: PeerId,
    protocol: StreamProtocol,
    timeout: Duration,
    what: &str,
) -> Result<Stream, NetError> {
    tokio::time::timeout(timeout, control.clone().open_stream(peer, protocol))
        .await
        .map_err(|_| failed(peer, format!("no {what} stream within {timeout:?}")))?
        .map_err(|e| failed(peer, format!("open a {what} stream: {e}")))
}

/// Writes one frame whole, even if the caller gives up waiting (an attempt
/// that timed out) halfway: half a frame would garble every later one. The
/// write is tried here first (it usually goes straight into the stream's
/// buffer); one that must wait finishes in a task of its own.
async fn write_whole(writer: Writer, frame: Vec<u8>) -> std::io::Result<()> {
    let mut write = Box::pin(async move {
        let mut writer = writer.lock().await;
        writer.write_all(&frame).await?;
        writer.flush().await
    });
    match futures::poll!(write.as_mut()) {
        std::task::Poll::Ready(written) => written,
        std::task::Poll::Pending => tokio::spawn(write)
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e))),
    }
}

/// Reads answers until the stream fails; the reason it ended.
async fn read_answers(
    mut reader: ReadHalf<Stream>,
    pending: &Mutex<HashMap<u64, Reply>>,
) -> String {
    loop {
        match read_frame(&mut reader).await {
            Ok(TaskFrame::Response { id, response }) => {
                if let Some(reply) = lock(pending).remove(&id) {
                    let _ = reply.send(Ok(response));
                }
            }
            Ok(TaskFrame::Request { .. }) => return "a request where answers go".into(),
            Err(e) => return e,
        }
    }
}

/// The reader enforces CONTROL_MESSAGE_BYTES_MAX (a frame over it ends the
/// stream and fails its requests, as an oversized request-response message
/// failed its request); the writer only checks the length fits its prefix.
/// Answers are bounded where they are made (BATCH_BYTES_BUDGET).
fn encode_frame(frame: &TaskFrame) -> Result<Vec<u8>, NetError> {
    let body = wire::encode(frame)?;
    if u32::try_from(body.len()).is_err() {
        return Err(NetError::Encode(format!(
            "a task message of {} bytes does not fit a frame",
            body.len()
        )));
    }
    let mut framed = Vec::with_capacity(4 + body.len());
    framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
    framed.extend_from_slice(&body);
    Ok(framed)
}

async fn read_frame(reader: &mut ReadHalf<Stream>) -> Result<TaskFrame, String> {
    let mut size = [0u8; 4];
    reader
        .read_exact(&mut size)
        .await
        .map_err(|e| e.to_string())?;
    let size = u32::from_be_bytes(size) as u64;
    if size > wire::CONTROL_MESSAGE_BYTES_MAX {
        return Err(format!(
            "a task message of {size} bytes is over CONTROL_MESSAGE_BYTES_MAX"
        ));
    }
    let mut body = vec![0u8; size as usize];
    reader
        .read_exact(&mut body)
        .await
        .map_err(|e| e.to_string())?;
    wire::decode(&body)
}

#[cfg(test)]
mod tests {
    use crate::wire::{TaskRequest, TaskResponse};
    use crate::{Event, NetConfig, NetHandle};
    use libp2p::identity::Keypair;
    use tokio::sync::mpsc;

    /// A node on loopback with a fresh identity, found by dialling only.
    fn config() -> NetConfig {
        NetConfig {
            keypair: Keypair::generate_ed25519(),
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("addr")],
            bootstrap: Vec::new(),
            mdns: false,
        }
    }

    async fn pair() -> (NetHandle, NetHandle, mpsc::Receiver<Event>) {
        let (provider, provider_events, addrs) = crate::spawn(config()).await.expect("net");
        let (requester, mut events, _) = crate::spawn(config()).await.expect("net");
        requester.dial(addrs[0].clone()).await.expect("dial");
        while let Some(event) = events.recv().await {
            if matches!(event, Event::Connected(p) if p == provider.local_peer_id) {
                break;
            }
        }
        tokio::spawn(async move { while events.recv().await.is_some() {} });
        (requester, provider, provider_events)
    }

    fn cancel(job: &str) -> TaskRequest {
        TaskRequest::Cancel {
            job_id: job.into(),
            attempts: Vec::new(),
        }
    }

    /// Connections past CONNECTIONS_PER_PEER_MAX between two nodes are
    /// refused by the limit, and counted. Each end holds its own limit, so
    /// one connection past the bound may be refused by both ends at once
    /// (the dialler's as it is established, the listener's as it arrives):
    /// every extra one is refused at least once and at most twice.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_past_the_per_peer_bound_are_refused_and_counted() {
        let (provider, _provider_events, addrs) = crate::spawn(config()).await.expect("net");
        let (requester, mut events, _) = crate::spawn(config()).await.expect("net");
        tokio::spawn(async move { while events.recv().await.is_some() {} });
        let extra = 3;
        for _ in 0..types::limits::CONNECTIONS_PER_PEER_MAX + extra {
            requester.dial(addrs[0].clone()).await.expect("dial");
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let denied = || requester.connections_denied() + provider.connections_denied();
        while denied() < u64::from(extra) && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        // Let any second refusal of the same connections be counted too.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let refused = denied();
        assert!(
            (u64::from(extra)..=2 * u64::from(extra)).contains(&refused),
            "each of the {extra} connections past the bound refused by one end or both, \
             counted {refused}"
        );
        let peers = requester.connected_peers().await.expect("peers");
        assert_eq!(
            peers,
            vec![provider.local_peer_id],
            "the first ones stay up"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn answers_given_out_of_order_reach_their_own_requests() {
        let (requester, provider, mut provider_events) = pair().await;
        let to = provider.local_peer_id;
        let answer = async {
            // Both requests arrive; the second is answered first.
            let mut got = Vec::new();
            while got.len() < 2 {
                match provider_events.recv().await {
                    Some(Event::TaskRequested {
                        id,
                        request: TaskRequest::Cancel { job_id, .. },
                        ..
                    }) => got.push((id, job_id)),
                    Some(_) => {}
                    None => panic!("the provider's network stopped"),
                }
            }
            got.sort_by(|a, b| b.1.cmp(&a.1));
            for (id, job) in got {
                let count = if job == "first" { 1 } else { 2 };
                provider
                    .respond_task(id, TaskResponse::Cancelled { count })
                    .await
                    .expect("respond");
            }
            provider_events
        };
        let (first, second, mut provider_events) = tokio::join!(
            requester.send_task(to, cancel("first")),
            requester.send_task(to, cancel("second")),
            answer
        );
        assert!(
            matches!(first, Ok(TaskResponse::Cancelled { count: 1 })),
            "{first:?}"
        );
        assert!(
            matches!(second, Ok(TaskResponse::Cancelled { count: 2 })),
            "{second:?}"
        );

        // A request its provider drops (the node gone) fails when the
        // stream does, rather than waiting for ever.
        let pending = tokio::spawn({
            let requester = requester.clone();
            async move { requester.send_task(to, cancel("third")).await }
        });
        while !matches!(
            provider_events.recv().await,
            Some(Event::TaskRequested { .. })
        ) {}
        drop(provider_events);
        drop(provider);
        let third = tokio::time::timeout(std::time::Duration::from_secs(20), pending)
            .await
            .expect("the request ends when its provider does")
            .expect("joined");
        assert!(third.is_err(), "{third:?}");
    }
}
