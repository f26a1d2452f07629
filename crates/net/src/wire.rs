//! Messages on the wire, and their bounds. Everything here arrives from other
//! peers: decode, bound, verify, then use.

use libp2p::PeerId;
use libp2p::identity::{Keypair, PublicKey};
use serde::{Deserialize, Serialize};
use types::{BlobHash, Outcome, OutputFile, TaskLimits};

pub const OFFER_TOPIC: &str = "plexus/offers/v1";
/// Control messages (offers, task requests and responses).
pub use types::limits::CONTROL_MESSAGE_BYTES_MAX;
/// One chunk of a blob per response.
pub const BLOB_CHUNK_BYTES_MAX: u64 = 1 << 20;
/// A blob response is a chunk plus a small envelope.
pub const BLOB_RESPONSE_BYTES_MAX: u64 = BLOB_CHUNK_BYTES_MAX + 4096;
/// The offer is the market's vocabulary (`types`); the wire carries it signed.
pub use types::offer::{OFFER_TTL_MS, Offer};

/// One task, as the requester hands it to a provider.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskAssignment {
    pub job_id: String,
    pub task_index: u64,
    pub attempt: u32,
    pub module: BlobHash,
    pub program: String,
    pub inputs: Vec<(String, BlobHash)>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub seed: u64,
    pub limits: TaskLimits,
    pub entry: Option<String>,
    pub canonicalize_nans: bool,
}

/// Attempts one cancel message may name; more go in several messages.
pub const CANCEL_ATTEMPTS_MAX: usize = 1024;

/// Tasks one request ([`TaskRequest::RunBatch`]) may carry, and what its
/// request and answer may hold: the requester's core decides batches, so
/// the bounds live in `types`.
pub use types::limits::{BATCH_BYTES_BUDGET, BATCH_TASKS_MAX};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum TaskRequest {
    Run(TaskAssignment),
    /// Several tasks of one requester, run one after the other on one slot;
    /// answered with [`TaskResponse::Batch`], one answer per task in order.
    RunBatch(Vec<TaskAssignment>),
    /// The requester no longer wants these attempts of its job (task,
    /// attempt), or, when the list is empty, any of the job's tasks: the
    /// provider stops them, queued or running. Only the requester that sent
    /// a task can cancel it.
    Cancel {
        job_id: String,
        attempts: Vec<(u64, u32)>,
    },
}

/// Output bytes a result may carry inline (small outputs: a tile, a noop's
/// empty stdout), sparing the requester a blob request per output.
pub const INLINE_OUTPUT_BYTES_MAX: u64 = 256 << 10;
const _: () = assert!(INLINE_OUTPUT_BYTES_MAX * 2 < CONTROL_MESSAGE_BYTES_MAX);

/// An output's bytes sent with its result; checked against the hash the
/// signed result names, like any blob.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InlineOutput {
    pub hash: BlobHash,
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum TaskResponse {
    /// The signed result, and the bytes of its outputs that fit
    /// INLINE_OUTPUT_BYTES_MAX together (the others are fetched as blobs).
    Done(SignedResult, Vec<InlineOutput>),
    /// The provider would not take the task (busy, limits); try elsewhere.
    Refused { reason: String },
    /// The provider took it but could not run it (fetch failed, sandbox error).
    Failed { reason: String },
    /// The answer to a cancel: how many attempts were stopped.
    Cancelled { count: u32 },
    /// The answers to a [`TaskRequest::RunBatch`], in its order; inline
    /// outputs share one INLINE_OUTPUT_BYTES_MAX across the batch.
    Batch(Vec<TaskResponse>),
}

impl TaskAssignment {
    /// A generous estimate of its encoded size, for [`BATCH_BYTES_BUDGET`].
    pub fn size_estimate(&self) -> u64 {
        let strings: usize = self.job_id.len()
            + self.program.len()
            + self.args.iter().map(|a| a.len() + 2).sum::<usize>()
            + self
                .env
                .iter()
                .map(|(k, v)| k.len() + v.len() + 4)
                .sum::<usize>()
            + self.inputs.iter().map(|(n, _)| n.len() + 40).sum::<usize>()
            + self.entry.as_ref().map_or(0, |e| e.len());
        strings as u64 + 256
    }
}

impl ResultBody {
    /// A generous estimate of its signed, encoded size (without inline
    /// outputs), for [`BATCH_BYTES_BUDGET`].
    pub fn size_estimate(&self) -> u64 {
        let strings: usize = self.job_id.len()
            + self.engine.len()
            + self.stderr_tail.len()
            + self.inputs.iter().map(|(n, _)| n.len() + 40).sum::<usize>()
            + self
                .outputs
                .iter()
                .map(|o| o.name.len() + 56)
                .sum::<usize>();
        strings as u64 + 512
    }
}

/// What a provider attests: everything that identifies the task, and what it
/// produced. Signed whole, so it cannot be replayed for another task or attempt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResultBody {
    pub job_id: String,
    pub task_index: u64,
    pub attempt: u32,
    pub module: BlobHash,
    pub inputs: Vec<(String, BlobHash)>,
    pub seed: u64,
    pub limits: TaskLimits,
    pub engine: String,
    pub outcome: Outcome,
    pub fuel_used: Option<u64>,
    pub outputs: Vec<OutputFile>,
    #[serde(with = "serde_bytes")]
    pub stderr_tail: Vec<u8>,
    pub run_ms: u64,
}

/// Whether a (signature-checked) result answers exactly this assignment:
/// same job, task, attempt, module, inputs, seed and limits. A result
/// replayed from another task, attempt or job fails here.
pub fn check_binding(expected: &TaskAssignment, body: &ResultBody) -> Result<(), String> {
    let mismatch = if body.job_id != expected.job_id {
        "job"
    } else if body.task_index != expected.task_index {
        "task"
    } else if body.attempt != expected.attempt {
        "attempt"
    } else if body.module != expected.module {
        "module"
    } else if body.inputs != expected.inputs {
        "inputs"
    } else if body.seed != expected.seed {
        "seed"
    } else if body.limits != expected.limits {
        "limits"
    } else {
        return Ok(());
    };
    Err(format!(
        "result is bound to another {mismatch} (job {} task {} attempt {})",
        body.job_id, body.task_index, body.attempt
    ))
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SignedResult {
    /// CBOR of [`ResultBody`].
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

impl SignedResult {
    pub fn sign(keypair: &Keypair, body: &ResultBody) -> Result<SignedResult, crate::NetError> {
        let bytes = encode(body)?;
        let signature = keypair
            .sign(&bytes)
            .map_err(|e| crate::NetError::Encode(e.to_string()))?;
        Ok(SignedResult {
            body: bytes,
            signature,
        })
    }

    /// Checks the signature against the sender's key and decodes the body.
    pub fn verify(&self, signer: &PeerId) -> Result<ResultBody, String> {
        let key = public_key_of(signer).ok_or("the peer id does not embed a public key")?;
        if !key.verify(&self.body, &self.signature) {
            return Err("bad signature".into());
        }
        decode(&self.body)
    }
}

/// An offer signed by its provider. Gossip carries it without gossipsub's
/// own signature (that one is checked on every copy a node receives, before
/// duplicates are dropped: with 50 nodes it took more CPU than two cores
/// have, benchmark B6); this one is checked once per node, on the first copy.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SignedOffer {
    /// The provider's peer id (which embeds its public key).
    #[serde(with = "serde_bytes")]
    pub provider: Vec<u8>,
    /// CBOR of [`Offer`].
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

impl SignedOffer {
    pub fn sign(keypair: &Keypair, offer: &Offer) -> Result<SignedOffer, crate::NetError> {
        let body = encode(offer)?;
        let signature = keypair
            .sign(&body)
            .map_err(|e| crate::NetError::Encode(e.to_string()))?;
        Ok(SignedOffer {
            provider: keypair.public().to_peer_id().to_bytes(),
            body,
            signature,
        })
    }

    /// The provider and its offer, once the signature is checked.
    pub fn verify(&self) -> Result<(PeerId, Offer), String> {
        let provider =
            PeerId::from_bytes(&self.provider).map_err(|e| format!("provider id: {e}"))?;
        let key = public_key_of(&provider).ok_or("the peer id does not embed a public key")?;
        if !key.verify(&self.body, &self.signature) {
            return Err("bad signature".into());
        }
        Ok((provider, decode(&self.body)?))
    }
}

/// Public keys decoded from peer ids, kept per thread: decoding one
/// decompresses a curve point, about a fifth of checking a signature, and a
/// requester checks every result of the same few providers.
const PUBLIC_KEYS_CACHED_MAX: usize = 1024;

thread_local! {
    static PUBLIC_KEYS: std::cell::RefCell<std::collections::HashMap<PeerId, PublicKey>> =
        Default::default();
}

/// Ed25519 peer ids embed their public key (an identity multihash).
pub fn public_key_of(peer: &PeerId) -> Option<PublicKey> {
    if let Some(key) = PUBLIC_KEYS.with_borrow(|keys| keys.get(peer).cloned()) {
        return Some(key);
    }
    let multihash: &libp2p::multihash::Multihash<64> = peer.as_ref();
    if multihash.code() != 0 {
        return None;
    }
    let key = PublicKey::try_decode_protobuf(multihash.digest()).ok()?;
    PUBLIC_KEYS.with_borrow_mut(|keys| {
        if keys.len() >= PUBLIC_KEYS_CACHED_MAX {
            keys.clear();
        }
        keys.insert(*peer, key.clone());
    });
    Some(key)
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BlobRequest {
    pub hash: BlobHash,
    pub offset: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum BlobResponse {
    // As a CBOR byte string: a plain Vec<u8> is an array of integers, near
    // twice the size, and a full chunk would not fit its limit.
    Chunk {
        total_bytes: u64,
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
    NotFound,
    /// Not served: the asking peer is over a bound (the reason names it).
    Refused {
        reason: String,
    },
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, crate::NetError> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).map_err(|e| crate::NetError::Encode(e.to_string()))?;
    Ok(out)
}

/// The framing of a blob stream (one request, one answer), as plain
/// functions so that every decoder of it is fuzzed: the request is its
/// length (4 bytes, little-endian, at most `REQUEST_BYTES_MAX`) and its CBOR
/// `BlobRequest`; the answer is the blob's size (8 bytes, little-endian;
/// `NOT_FOUND` when the server does not have it) and its bytes from the
/// request's offset on.
pub mod blob_stream {
    use super::BlobRequest;

    /// Largest request a blob stream opens with (an encoded `BlobRequest`:
    /// a hash and an offset, some 50 bytes).
    pub const REQUEST_BYTES_MAX: usize = 4096;
    /// The size a server sends for a blob it does not have.
    pub const NOT_FOUND: u64 = u64::MAX;

    /// The request as it goes on the stream.
    pub fn request_frame(request: &BlobRequest) -> Result<Vec<u8>, crate::NetError> {
        let body = super::encode(request)?;
        let mut frame = Vec::with_capacity(4 + body.len());
        frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
        frame.extend_from_slice(&body);
        Ok(frame)
    }

    /// The length a request's prefix announces, refused over its bound
    /// before anything is read or allocated.
    pub fn request_len(prefix: [u8; 4]) -> Result<usize, String> {
        let len = u32::from_le_bytes(prefix) as usize;
        if len > REQUEST_BYTES_MAX {
            return Err(format!(
                "a blob request of {len} bytes, over REQUEST_BYTES_MAX ({REQUEST_BYTES_MAX})"
            ));
        }
        Ok(len)
    }

    /// A whole request frame (prefix and body), as a server reads it.
    pub fn decode_request_frame(frame: &[u8]) -> Result<BlobRequest, String> {
        let (prefix, body) = frame
            .split_first_chunk::<4>()
            .ok_or("a blob request shorter than its prefix")?;
        let len = request_len(*prefix)?;
        if body.len() != len {
            return Err(format!(
                "a blob request of {} bytes where its prefix says {len}",
                body.len()
            ));
        }
        super::decode(body)
    }

    /// What an answer's header says.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Answer {
        NotFound,
        Size(u64),
    }

    /// The header a server answers with.
    pub fn answer_header(size: Option<u64>) -> [u8; 8] {
        size.unwrap_or(NOT_FOUND).to_le_bytes()
    }

    /// An answer's header as the fetcher reads it: a size over
    /// `bytes_max` is refused before anything is stored.
    pub fn decode_answer(header: [u8; 8], bytes_max: u64) -> Result<Answer, String> {
        match u64::from_le_bytes(header) {
            NOT_FOUND => Ok(Answer::NotFound),
            size if size > bytes_max => Err(format!(
                "a blob of {size} bytes, over its bound of {bytes_max}"
            )),
            size => Ok(Answer::Size(size)),
        }
    }
}

pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, String> {
    if bytes.len() as u64 > CONTROL_MESSAGE_BYTES_MAX {
        return Err(format!(
            "message of {} bytes over CONTROL_MESSAGE_BYTES_MAX",
            bytes.len()
        ));
    }
    ciborium::from_reader(bytes).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> ResultBody {
        ResultBody {
            job_id: "j".into(),
            task_index: 3,
            attempt: 1,
            module: BlobHash::of(b"m"),
            inputs: vec![],
            seed: 9,
            limits: TaskLimits::default(),
            engine: "e".into(),
            outcome: Outcome::Exited { code: 0 },
            fuel_used: Some(5),
            outputs: vec![],
            stderr_tail: vec![],
            run_ms: 1,
        }
    }

    fn assignment_for(body: &ResultBody) -> TaskAssignment {
        TaskAssignment {
            job_id: body.job_id.clone(),
            task_index: body.task_index,
            attempt: body.attempt,
            module: body.module,
            program: "p".into(),
            inputs: body.inputs.clone(),
            args: vec![],
            env: vec![],
            seed: body.seed,
            limits: body.limits,
            entry: None,
            canonicalize_nans: false,
        }
    }

    #[test]
    fn replayed_results_are_rejected_for_every_other_task_attempt_and_job() {
        let key = Keypair::generate_ed25519();
        let signer = key.public().to_peer_id();
        let original = body();
        let signed = SignedResult::sign(&key, &original).expect("sign");
        let replayed = signed.verify(&signer).expect("valid signature");
        assert_eq!(check_binding(&assignment_for(&original), &replayed), Ok(()));
        let mut accepted = 0;
        for i in 0..1000_u64 {
            let mut other = assignment_for(&original);
            match i % 3 {
                0 => other.task_index = original.task_index + 1 + i,
                1 => other.attempt = original.attempt + 1 + i as u32,
                _ => other.job_id = format!("job-{i}"),
            }
            if check_binding(&other, &replayed).is_ok() {
                accepted += 1;
            }
        }
        assert_eq!(accepted, 0, "replays accepted out of 1,000");
        let mut other = assignment_for(&original);
        other.seed += 1;
        assert!(check_binding(&other, &replayed).is_err());
        // Rebinding a replay means re-signing: with another key it no longer
        // verifies as the provider's own.
        let mut forged = original.clone();
        forged.task_index = 99;
        let resigned = SignedResult::sign(&Keypair::generate_ed25519(), &forged).expect("sign");
        assert!(resigned.verify(&signer).is_err());
    }

    #[test]
    fn a_full_blob_chunk_fits_the_response_limit() {
        let chunk = BlobResponse::Chunk {
            total_bytes: u64::MAX,
            bytes: vec![0xff; BLOB_CHUNK_BYTES_MAX as usize],
        };
        let encoded = encode(&chunk).expect("encode");
        assert!(
            encoded.len() as u64 <= BLOB_RESPONSE_BYTES_MAX,
            "{} bytes",
            encoded.len()
        );
    }

    #[test]
    fn a_signed_result_verifies_only_for_its_signer_and_bytes() {
        let key = Keypair::generate_ed25519();
        let signed = SignedResult::sign(&key, &body()).expect("sign");
        assert_eq!(
            signed.verify(&key.public().to_peer_id()).expect("valid"),
            body()
        );
        let other = Keypair::generate_ed25519().public().to_peer_id();
        assert!(signed.verify(&other).is_err(), "another peer's key");
        let mut tampered = signed.clone();
        let last = tampered.body.len() - 1;
        tampered.body[last] ^= 1;
        assert!(
            tampered.verify(&key.public().to_peer_id()).is_err(),
            "changed bytes"
        );
    }
}
