//! Fuzzing of every decoder the network reaches, on stable Rust: property
//! tests that feed arbitrary bytes, and valid messages mutated (bytes
//! flipped, cut, inserted), to the CBOR decoder of each wire type and to the
//! signature checks of results and offers. Each must answer with a value or
//! an error, never a panic; a mutated signed message must never verify as
//! something else. The number of cases bounds their time in CI (a few
//! seconds); a finding becomes a named regression test below.

use crate::wire::{
    self, BlobRequest, BlobResponse, ResultBody, SignedOffer, SignedResult, TaskAssignment,
    TaskRequest, TaskResponse,
};
use libp2p::identity::Keypair;
use proptest::prelude::*;
use types::{BlobHash, Offer, Outcome, OutputFile, TaskLimits, Trap};

fn body() -> ResultBody {
    ResultBody {
        job_id: "j-1".into(),
        task_index: 3,
        attempt: 2,
        module: BlobHash::of(b"m"),
        inputs: vec![("scene".into(), BlobHash::of(b"s"))],
        seed: 9,
        limits: TaskLimits::default(),
        engine: "wasmtime-48".into(),
        outcome: Outcome::Trapped {
            trap: Trap::OutOfFuel { fuel_limit: 7 },
        },
        fuel_used: Some(5),
        outputs: vec![OutputFile {
            name: "tile".into(),
            size_bytes: 3,
            hash: BlobHash::of(b"abc"),
        }],
        stderr_tail: b"oops".to_vec(),
        run_ms: 1,
    }
}

fn offer() -> Offer {
    Offer {
        cores: 4,
        memory_bytes: 8 << 30,
        task_memory_bytes_max: 1 << 30,
        slots_total: 4,
        slots_free: 2,
        price_per_gfuel: 3,
        fuel_per_sec: 1_000_000_000,
        engine: "wasmtime-48".into(),
        expires_at_ms: 60_000,
    }
}

fn assignment() -> TaskAssignment {
    let b = body();
    TaskAssignment {
        job_id: b.job_id,
        task_index: b.task_index,
        attempt: b.attempt,
        module: b.module,
        program: "render".into(),
        inputs: b.inputs,
        args: vec!["--tile".into(), "3".into()],
        env: vec![("K".into(), "V".into())],
        seed: b.seed,
        limits: b.limits,
        entry: Some("run".into()),
        canonicalize_nans: true,
    }
}

/// Valid encodings of every wire message, as mutation seeds.
fn valid_messages() -> Vec<Vec<u8>> {
    let key = Keypair::generate_ed25519();
    let signed = SignedResult::sign(&key, &body()).expect("sign");
    let enc = |r| wire::encode(&r).expect("encode");
    vec![
        enc(TaskRequest::Run(assignment())),
        enc(TaskRequest::RunBatch(vec![assignment(), assignment()])),
        enc(TaskRequest::Cancel {
            job_id: "j".into(),
            attempts: vec![(1, 2)],
        }),
        wire::encode(&TaskResponse::Done(signed.clone(), vec![])).expect("encode"),
        wire::encode(&TaskResponse::Batch(vec![TaskResponse::Refused {
            reason: "busy".into(),
        }]))
        .expect("encode"),
        wire::encode(&SignedOffer::sign(&key, &offer()).expect("sign")).expect("encode"),
        wire::encode(&BlobRequest {
            hash: BlobHash::of(b"x"),
            offset: 9,
        })
        .expect("encode"),
        wire::encode(&BlobResponse::Chunk {
            total_bytes: 3,
            bytes: vec![1, 2, 3],
        })
        .expect("encode"),
        wire::encode(&BlobResponse::Refused {
            reason: "rate limit".into(),
        })
        .expect("encode"),
        signed.body,
    ]
}

/// Every decoder a peer's bytes can reach.
fn decode_all(bytes: &[u8]) {
    let _ = wire::decode::<TaskRequest>(bytes);
    let _ = wire::decode::<TaskResponse>(bytes);
    let _ = wire::decode::<ResultBody>(bytes);
    let _ = wire::decode::<BlobRequest>(bytes);
    let _ = wire::decode::<BlobResponse>(bytes);
    let _ = wire::decode::<Offer>(bytes);
    if let Ok(signed) = wire::decode::<SignedOffer>(bytes) {
        let _ = signed.verify();
    }
    if let Ok(signed) = wire::decode::<SignedResult>(bytes) {
        let _ = signed.verify(&Keypair::generate_ed25519().public().to_peer_id());
    }
}

#[derive(Clone, Debug)]
enum Mutation {
    Flip { at: usize, bits: u8 },
    Cut { at: usize },
    Insert { at: usize, byte: u8 },
    Remove { at: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(at, bits)| Mutation::Flip { at, bits }),
        any::<usize>().prop_map(|at| Mutation::Cut { at }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Insert { at, byte }),
        any::<usize>().prop_map(|at| Mutation::Remove { at }),
    ]
}

fn mutate(bytes: &mut Vec<u8>, m: &Mutation) {
    if bytes.is_empty() {
        return;
    }
    let n = bytes.len();
    match *m {
        Mutation::Flip { at, bits } => bytes[at % n] ^= bits,
        Mutation::Cut { at } => bytes.truncate(at % n),
        Mutation::Insert { at, byte } => bytes.insert(at % (n + 1), byte),
        Mutation::Remove { at } => {
            bytes.remove(at % n);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn arbitrary_bytes_never_panic_a_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..2_048)) {
        decode_all(&bytes);
    }

    #[test]
    fn mutated_messages_never_panic_a_decoder(
        which in any::<usize>(),
        mutations in proptest::collection::vec(mutation(), 1..6),
    ) {
        let seeds = valid_messages();
        let mut bytes = seeds[which % seeds.len()].clone();
        for m in &mutations {
            mutate(&mut bytes, m);
        }
        decode_all(&bytes);
    }

    /// A signed result whose body or signature changed never verifies: a
    /// provider's signature binds every byte of what it reported.
    #[test]
    fn a_mutated_signed_result_never_verifies(
        in_body in any::<bool>(),
        mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        let key = Keypair::generate_ed25519();
        let peer = key.public().to_peer_id();
        let signed = SignedResult::sign(&key, &body()).expect("sign");
        let mut changed = signed.clone();
        let target = if in_body { &mut changed.body } else { &mut changed.signature };
        for m in &mutations {
            mutate(target, m);
        }
        prop_assume!(changed.body != signed.body || changed.signature != signed.signature);
        prop_assert!(changed.verify(&peer).is_err());
    }

    /// Likewise an offer: changed bytes never verify as the provider's.
    #[test]
    fn a_mutated_signed_offer_never_verifies(mutations in proptest::collection::vec(mutation(), 1..4)) {
        let key = Keypair::generate_ed25519();
        let signed = SignedOffer::sign(&key, &offer()).expect("sign");
        let mut changed = signed.clone();
        for m in &mutations {
            mutate(&mut changed.body, m);
        }
        prop_assume!(changed.body != signed.body);
        prop_assert!(changed.verify().is_err());
    }
}

#[test]
fn a_message_over_the_control_bound_is_refused_before_decoding() {
    let big = vec![0u8; wire::CONTROL_MESSAGE_BYTES_MAX as usize + 1];
    let err = wire::decode::<TaskRequest>(&big).expect_err("refused");
    assert!(err.contains("CONTROL_MESSAGE_BYTES_MAX"), "{err}");
}

fn blob_request_frame() -> Vec<u8> {
    let request = BlobRequest {
        hash: BlobHash::of(b"blob"),
        offset: 1 << 20,
    };
    wire::blob_stream::request_frame(&request).expect("encodes")
}

proptest! {
    /// The blob stream's framing: arbitrary bytes, and a valid request's
    /// frame mutated, decode to a request or an error, never a panic; a
    /// prefix over the bound is refused whatever follows; any answer header
    /// is a size within the bound, "not found", or an error naming it.
    #[test]
    fn blob_stream_frames_of_any_bytes_decode_or_fail_cleanly(
        bytes in proptest::collection::vec(any::<u8>(), 0..256),
        mutations in proptest::collection::vec(mutation(), 1..4),
        header in any::<[u8; 8]>(),
        bound in any::<u64>(),
    ) {
        let _ = wire::blob_stream::decode_request_frame(&bytes);
        let mut frame = blob_request_frame();
        for m in &mutations {
            mutate(&mut frame, m);
        }
        if let Ok(request) = wire::blob_stream::decode_request_frame(&frame) {
            // What decodes re-encodes within the bound.
            let again = wire::blob_stream::request_frame(&request).expect("encodes");
            prop_assert!(again.len() <= 4 + wire::blob_stream::REQUEST_BYTES_MAX);
        }
        let size = u64::from_le_bytes(header);
        match wire::blob_stream::decode_answer(header, bound) {
            Ok(wire::blob_stream::Answer::NotFound) => prop_assert_eq!(size, wire::blob_stream::NOT_FOUND),
            Ok(wire::blob_stream::Answer::Size(s)) => prop_assert!(s == size && s <= bound),
            Err(e) => prop_assert!(size > bound && e.contains("over its bound"), "{}", e),
        }
    }

    #[test]
    fn a_blob_request_prefix_over_its_bound_is_refused_before_any_read(len in (wire::blob_stream::REQUEST_BYTES_MAX as u32 + 1)..) {
        let err = wire::blob_stream::request_len(len.to_le_bytes()).expect_err("over the bound");
        prop_assert!(err.contains("REQUEST_BYTES_MAX"), "{}", err);
    }
}

#[test]
fn a_blob_request_frame_round_trips_and_an_answer_header_says_not_found() {
    let frame = blob_request_frame();
    let request = wire::blob_stream::decode_request_frame(&frame).expect("decodes");
    assert_eq!(request.hash, BlobHash::of(b"blob"));
    assert_eq!(request.offset, 1 << 20);
    // A frame cut short, or longer than its prefix says, is refused.
    assert!(wire::blob_stream::decode_request_frame(&frame[..frame.len() - 1]).is_err());
    let mut long = frame.clone();
    long.push(0);
    assert!(wire::blob_stream::decode_request_frame(&long).is_err());
    assert_eq!(
        wire::blob_stream::decode_answer(wire::blob_stream::answer_header(None), 10),
        Ok(wire::blob_stream::Answer::NotFound)
    );
    assert_eq!(
        wire::blob_stream::decode_answer(wire::blob_stream::answer_header(Some(10)), 10),
        Ok(wire::blob_stream::Answer::Size(10))
    );
}
