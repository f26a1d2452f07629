//! The node's metrics, in Prometheus text format at `/metrics`
//! (prometheus-client). One `Metrics` per node, shared by its parts.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabel {
    pub direction: &'static str,
}

pub struct Metrics {
    registry: Registry,
    /// Requester side: tasks by what happened to them (submitted, settled,
    /// failed, cancelled) and executions (dispatched, retried).
    pub tasks: Family<StateLabel, Counter>,
    /// Fuel of accepted results (requester) and of tasks run (provider).
    pub fuel_accepted: Counter,
    pub fuel_run: Counter,
    /// Blob bytes fetched from peers and served to them.
    pub blob_bytes: Family<DirectionLabel, Counter>,
    pub peers_connected: Gauge,
    pub offers_live: Gauge,
    /// Connections refused by a limit (`types::limits::CONNECTIONS_*`).
    pub connections_denied: Gauge,
    /// Task and blob requests refused by the per-peer rate limits.
    pub requests_rate_limited: Gauge,
    /// Time an execution waited in its job's queue before going out.
    pub dispatch_latency: Histogram,
    /// From sending a task to holding its checked result.
    pub task_latency: Histogram,
    /// How results were established, and what verification found.
    pub verification: Family<OutcomeLabel, Counter>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("plexus");
        let tasks = Family::<StateLabel, Counter>::default();
        registry.register("tasks", "Tasks and executions by state", tasks.clone());
        let fuel_accepted = Counter::default();
        registry.register(
            "fuel_accepted",
            "Fuel of accepted results (requester)",
            fuel_accepted.clone(),
        );
        let fuel_run = Counter::default();
        registry.register(
            "fuel_run",
            "Fuel of tasks this provider ran",
            fuel_run.clone(),
        );
        let blob_bytes = Family::<DirectionLabel, Counter>::default();
        registry.register(
            "blob_bytes",
            "Blob bytes fetched (in) and served (out)",
            blob_bytes.clone(),
        );
        let peers_connected = Gauge::default();
        registry.register(
            "peers_connected",
            "Connected peers",
            peers_connected.clone(),
        );
        let offers_live = Gauge::default();
        registry.register(
            "offers_live",
            "Live offers from connected peers",
            offers_live.clone(),
        );
        let connections_denied = Gauge::default();
        registry.register(
            "connections_denied",
            "Connections refused by a connection limit, since the node started",
            connections_denied.clone(),
        );
        let requests_rate_limited = Gauge::default();
        registry.register(
            "requests_rate_limited",
            "Task and blob requests refused by the per-peer rate limits, since the node started",
            requests_rate_limited.clone(),
        );
        // 1 ms to about 65 s.
        let dispatch_latency = Histogram::new(exponential_buckets(0.001, 2.0, 17));
        registry.register(
            "dispatch_latency_seconds",
            "Time an execution waited before it was sent",
            dispatch_latency.clone(),
        );
        let task_latency = Histogram::new(exponential_buckets(0.001, 2.0, 17));
        registry.register(
            "task_latency_seconds",
            "From sending a task to holding its checked result",
            task_latency.clone(),
        );
        let verification = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "verification",
            "Results by how they were established, and what was found",
            verification.clone(),
        );
        Metrics {
            registry,
            tasks,
            fuel_accepted,
            fuel_run,
            blob_bytes,
            peers_connected,
            offers_live,
            connections_denied,
            requests_rate_limited,
            dispatch_latency,
            task_latency,
            verification,
        }
    }

    pub fn task(&self, state: &'static str) {
        self.tasks.get_or_create(&StateLabel { state }).inc();
    }

    pub fn verified(&self, outcome: &'static str) {
        self.verification
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    pub fn blob(&self, direction: &'static str, bytes: u64) {
        self.blob_bytes
            .get_or_create(&DirectionLabel { direction })
            .inc_by(bytes);
    }

    pub fn observe(histogram: &Histogram, elapsed: Duration) {
        histogram.observe(elapsed.as_secs_f64());
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
