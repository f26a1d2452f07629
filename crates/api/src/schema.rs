//! The shapes of the API's JSON as the OpenAPI document describes them.
//!
//! What a route serialises is the node's own type (`node::JobStatus`,
//! `node::TaskInfo`, ...): one type, built by the node, read by the CLI.
//! The node carries no HTTP dependency, so its types cannot derive
//! utoipa's `ToSchema`; these mirrors describe them here instead, under
//! the same names (`#[schema(as = ...)]`). A test (`tests` below) serialises
//! a value of each node type and checks that its mirror names exactly the
//! same fields, so the document cannot drift from what is sent.

use utoipa::ToSchema;

/// A job submission: the job file's text and where its paths start.
#[derive(ToSchema)]
#[schema(as = JobSubmission)]
#[allow(dead_code)]
pub struct JobSubmissionDoc {
    /// The job file's name, for error messages.
    job_file: String,
    job_toml: String,
    /// Where the job file's relative paths start (module, inputs).
    base_dir: String,
}

/// One provider's part in a job.
#[derive(ToSchema)]
#[schema(as = ProviderShare)]
#[allow(dead_code)]
pub struct ProviderShareDoc {
    peer_id: String,
    /// Its results that were accepted (alone or as an agreeing replica).
    tasks_done: u64,
    in_flight: u64,
    /// Fuel of its accepted results: what it is owed for this job.
    fuel: u64,
    /// Time its sandboxes spent running this job's tasks.
    busy_ms: u64,
}

/// Where one task of a job stands.
#[derive(ToSchema)]
#[schema(as = TaskInfo)]
#[allow(dead_code)]
pub struct TaskInfoDoc {
    index: u64,
    /// pending, running or settled.
    state: String,
    /// Providers running it now (replicas run at once).
    running_on: Vec<String>,
    /// Executions handed out so far.
    attempts: u32,
    /// How its accepted result was established (Replicas, SpotCheck,
    /// GroundTruth, Reputation; Unverified when the job turned checks off).
    method: Option<String>,
}

/// What a selective coalition could have slipped through unanimity.
#[derive(ToSchema)]
#[schema(as = CoalitionBound)]
#[allow(dead_code)]
pub struct CoalitionBoundDoc {
    assumed_cheater_share: f64,
    /// Providers that took part in the job, and the cheaters assumed among them.
    providers: u64,
    cheaters: u64,
    replicas: u64,
    /// C(c,k)/C(N,k): the chance the coalition held every replica of a task.
    per_replicated_task: f64,
    replicated_tasks: u64,
    expected_wrong_at_most: f64,
}

/// How a job's results were verified, and what verification found.
#[derive(ToSchema)]
#[schema(as = VerificationStatus)]
#[allow(dead_code)]
pub struct VerificationStatusDoc {
    enabled: bool,
    floor: f64,
    replicas: u8,
    /// Tasks accepted because their replicas agreed.
    by_replicas: u64,
    by_spot_check: u64,
    /// Settled by the requester's own run.
    by_ground_truth: u64,
    on_reputation: u64,
    /// Tasks whose results disagreed.
    disagreements: u64,
    /// Accepted tasks reopened because one who vouched for them was caught.
    reverified: u64,
    /// Executions handed to providers (all replicas, failures included).
    executions: u64,
    ground_truth_runs: u64,
    /// Tasks whose first round went to more than one provider at once.
    replicated_tasks: u64,
    /// Providers caught: their results void, their offers ignored.
    excluded: Vec<String>,
    bound: Option<CoalitionBoundDoc>,
}

/// A job and where it stands.
#[derive(ToSchema)]
#[schema(as = JobStatus)]
#[allow(dead_code)]
pub struct JobStatusDoc {
    id: String,
    name: String,
    /// running, assembling, completed, failed or cancelled.
    state: String,
    tasks_total: u64,
    tasks_done: u64,
    tasks_in_flight: u64,
    retries: u64,
    /// Fuel of the accepted result of each task, summed: the job's work.
    fuel: u64,
    /// The most the job may cost, in credits (`requirements.budget`).
    budget: Option<u64>,
    /// Credits it has committed: the worst case of every execution out
    /// plus the cost of every result come back, so at least what it will
    /// pay (an ended job: its accepted results at its highest price).
    committed: u64,
    providers: Vec<ProviderShareDoc>,
    verification: VerificationStatusDoc,
    result: Option<String>,
    checksum: Option<u64>,
    error: Option<String>,
    elapsed_s: f64,
    /// While the job waits with nothing out: the offers its last dispatch
    /// saw, counted per reason none of them could take a task
    /// (offers_seen, expired, price, memory, engine, record, excluded, busy).
    #[schema(value_type = Option<Object>)]
    no_match: Option<()>,
}

/// A peer this node knows.
#[derive(ToSchema)]
#[schema(as = PeerInfo)]
#[allow(dead_code)]
pub struct PeerInfoDoc {
    peer_id: String,
    connected: bool,
    rtt_ms: Option<f64>,
    /// Its live offer: cores, memory_bytes, task_memory_bytes_max,
    /// slots_total, slots_free, price_per_gfuel, fuel_per_sec, engine,
    /// expires_at_ms.
    #[schema(value_type = Option<Object>)]
    offer: Option<()>,
    /// What this node's verification has recorded of it.
    verified: u64,
    disagreed: u64,
    timed_out: u64,
}

/// This node's provider side.
#[derive(ToSchema)]
#[schema(as = ProviderStatus)]
#[allow(dead_code)]
pub struct ProviderStatusDoc {
    slots_total: u32,
    slots_free: u32,
    tasks_run: u64,
    fuel_used: u64,
    fuel_per_sec: u64,
    price_per_gfuel: u64,
}

/// This node: its peer id, its addresses, and its provider side if it provides.
#[derive(ToSchema)]
#[schema(as = NodeInfo)]
#[allow(dead_code)]
pub struct NodeInfoDoc {
    peer_id: String,
    listen: Vec<String>,
    provider: Option<ProviderStatusDoc>,
}

#[cfg(test)]
mod tests {
    use crate::ApiDoc;
    use node::*;
    use serde_json::Value;
    use std::collections::BTreeSet;
    use utoipa::OpenApi;

    /// The property names of component `name` in the document.
    fn documented(doc: &Value, name: &str) -> BTreeSet<String> {
        let schema = &doc["components"]["schemas"][name];
        schema["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("{name} is not documented with properties: {schema}"))
            .keys()
            .cloned()
            .collect()
    }

    fn sent(value: &impl serde::Serialize) -> BTreeSet<String> {
        let json = serde_json::to_value(value).expect("serialise");
        json.as_object()
            .expect("an object")
            .keys()
            .cloned()
            .collect()
    }

    #[test]
    fn the_document_names_exactly_the_fields_each_type_sends() {
        let doc = serde_json::to_value(ApiDoc::openapi()).expect("the document");
        let share = ProviderShare {
            peer_id: "p".into(),
            tasks_done: 1,
            in_flight: 0,
            fuel: 2,
            busy_ms: 3,
        };
        let bound = CoalitionBound {
            assumed_cheater_share: 0.2,
            providers: 5,
            cheaters: 1,
            replicas: 2,
            per_replicated_task: 0.0,
            replicated_tasks: 1,
            expected_wrong_at_most: 0.0,
        };
        let verification = VerificationStatus {
            enabled: true,
            floor: 0.1,
            replicas: 2,
            summary: verify::Summary::default(),
            bound: Some(bound.clone()),
        };
        let status = JobStatus {
            id: "j".into(),
            name: "n".into(),
            state: types::JobPhase::Running,
            tasks_total: 1,
            tasks_done: 0,
            tasks_in_flight: 0,
            retries: 0,
            fuel: 0,
            budget: Some(10),
            committed: 0,
            providers: vec![share.clone()],
            verification: verification.clone(),
            result: None,
            checksum: None,
            error: None,
            elapsed_s: 0.0,
            no_match: None,
        };
        let task = TaskInfo {
            index: 0,
            state: "pending".into(),
            running_on: Vec::new(),
            attempts: 0,
            method: None,
        };
        let provider = ProviderStatus {
            slots_total: 1,
            slots_free: 1,
            tasks_run: 0,
            fuel_used: 0,
            fuel_per_sec: 1,
            price_per_gfuel: 100,
        };
        let info = NodeInfo {
            peer_id: "p".into(),
            listen: Vec::new(),
            provider: Some(provider.clone()),
        };
        let peer = PeerInfo {
            peer_id: "p".into(),
            connected: true,
            rtt_ms: None,
            offer: None,
            verified: 0,
            disagreed: 0,
            timed_out: 0,
        };
        let submission = JobSubmission {
            job_file: "f".into(),
            job_toml: String::new(),
            base_dir: ".".into(),
        };
        let cases: [(&str, BTreeSet<String>); 9] = [
            ("JobStatus", sent(&status)),
            ("ProviderShare", sent(&share)),
            ("VerificationStatus", sent(&verification)),
            ("CoalitionBound", sent(&bound)),
            ("TaskInfo", sent(&task)),
            ("ProviderStatus", sent(&provider)),
            ("NodeInfo", sent(&info)),
            ("PeerInfo", sent(&peer)),
            ("JobSubmission", sent(&submission)),
        ];
        for (name, fields) in cases {
            assert_eq!(documented(&doc, name), fields, "{name}");
        }
    }
}
