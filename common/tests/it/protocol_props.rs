//! Decoding never panics: random, truncated, oversized, bit-flipped and wrong-version bytes
//! are typed errors; valid messages round trip.

use hx_common::harness::{Edit, Harness, HarnessId};
use hx_common::protocol::{
    self, Error, Job, JobBudget, JobId, JobKind, JobResult, JobStatus, MessageKind, MutationOp,
    MutationSpec, RewriteRecord, TaskOutcome, Usage,
};
use hx_common::task::{Split, TaskBatch};
use proptest::prelude::*;

use crate::arb;

fn job(h: Harness, edits: Vec<Edit>, seeds: Vec<u64>, attempt: u32) -> Job {
    Job {
        id: JobId(u64::from(attempt) * 31),
        run: "prop".into(),
        kind: JobKind::MutateAndEvaluate {
            parent: h,
            mutation: MutationSpec {
                op: MutationOp::Apply { edits },
                seed: 9,
                failure_digest: "took the apple, never found the fridge".into(),
            },
        },
        tasks: TaskBatch {
            suite: "household".into(),
            split: Split::Train,
            seeds,
        },
        budget: JobBudget {
            max_steps: 40,
            max_tokens: 1 << 20,
            wall_ms: 600_000,
        },
        attempt,
    }
}

fn result(j: &Job, h: Harness, edits: Vec<Edit>) -> JobResult {
    let tasks: Vec<_> = j.tasks.tasks().collect();
    JobResult {
        job: j.id,
        run: j.run.clone(),
        attempt: j.attempt,
        worker: "gpu-7".into(),
        status: JobStatus::Completed,
        outcomes: tasks
            .iter()
            .enumerate()
            .map(|(i, t)| TaskOutcome {
                task: t.clone(),
                won: i % 2 == 0,
                score: 0.5,
                steps: i as u32,
                tokens: 1000,
                wall_ms: 20,
                confidence: (i % 3 == 0).then_some(-0.25 * i as f64),
            })
            .collect(),
        rewrites: edits
            .into_iter()
            .zip(tasks.iter().cycle())
            .map(|(edit, task)| RewriteRecord {
                task: task.clone(),
                step: 3,
                trigger: "no-progress".into(),
                edit,
                before: h.id(),
                after: HarnessId([7; 16]),
                kept: true,
            })
            .collect(),
        child: Some(h),
        usage: Usage {
            prompt_tokens: 10,
            completion_tokens: 2,
        },
        proposer_usage: Usage {
            prompt_tokens: 300,
            completion_tokens: 40,
        },
        wall_ms: 99,
        failure_digest: "looped on open fridge 1".into(),
        refusals: vec!["gate: fixed none of tasks 1, 2 (try harder)".into()],
    }
}

fn messages() -> impl Strategy<Value = (Job, JobResult)> {
    (
        arb::valid_harness(),
        arb::raw_edits(),
        prop::collection::vec(any::<u64>(), 0..20),
        1u32..5,
    )
        .prop_map(|(h, raw, seeds, attempt)| {
            let edits: Vec<Edit> = raw.into_iter().map(|r| arb::edit_for(&h, r)).collect();
            let j = job(h.clone(), edits.clone(), seeds, attempt);
            let r = result(&j, h, edits);
            (j, r)
        })
}

proptest! {
    #![proptest_config(proptest::test_runner::Config { cases: 64, ..Default::default() })]

    #[test]
    fn valid_messages_round_trip((j, r) in messages()) {
        // Compared as bytes: edits may carry NaN, which is not equal to itself.
        let bytes = protocol::encode(&j).expect("encodes");
        let back = protocol::decode::<Job>(&bytes).expect("decodes");
        prop_assert_eq!(protocol::encode(&back).expect("encodes"), bytes);
        let bytes = protocol::encode(&r).expect("encodes");
        let back = protocol::decode::<JobResult>(&bytes).expect("decodes");
        prop_assert_eq!(protocol::encode(&back).expect("encodes"), bytes);
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = protocol::decode::<Job>(&bytes);
        let _ = protocol::decode::<JobResult>(&bytes);
        // With a valid header the body decoder itself is exercised.
        let mut framed = protocol::header(MessageKind::Job).to_vec();
        framed.extend_from_slice(&bytes);
        let _ = protocol::decode::<Job>(&framed);
        framed[..protocol::HEADER_LEN].copy_from_slice(&protocol::header(MessageKind::JobResult));
        let _ = protocol::decode::<JobResult>(&framed);
    }

    #[test]
    fn every_truncation_is_an_error((j, r) in messages()) {
        for bytes in [protocol::encode(&j).expect("job"), protocol::encode(&r).expect("result")] {
            // Every cut in the header and first fields, then about 200 spread over the rest.
            let step = (bytes.len() / 200).max(1);
            for len in (0..bytes.len()).filter(|&l| l < 64 || l % step == 0 || l + 1 == bytes.len()) {
                let cut = &bytes[..len];
                prop_assert!(
                    protocol::decode::<Job>(cut).is_err() && protocol::decode::<JobResult>(cut).is_err(),
                    "a {len}-byte prefix of a {}-byte message decoded", bytes.len()
                );
            }
        }
    }

    #[test]
    fn bit_flips_never_panic((j, _r) in messages(), flips in prop::collection::vec(any::<(usize, u8)>(), 1..8)) {
        let mut bytes = protocol::encode(&j).expect("job");
        for (at, bit) in flips {
            let n = bytes.len();
            bytes[at % n] ^= 1 << (bit % 8);
        }
        let _ = protocol::decode::<Job>(&bytes);
    }

    #[test]
    fn other_versions_are_refused((j, _r) in messages(), version in any::<u16>()) {
        prop_assume!(version != protocol::VERSION);
        let mut bytes = protocol::encode(&j).expect("job");
        bytes[2..4].copy_from_slice(&version.to_le_bytes());
        prop_assert_eq!(
            protocol::decode::<Job>(&bytes),
            Err(Error::WrongVersion { found: version, supported: protocol::VERSION })
        );
    }
}

#[test]
fn oversized_messages_are_refused_both_ways() {
    let too_big = vec![0u8; protocol::MAX_MESSAGE_BYTES + 1];
    assert!(matches!(
        protocol::decode::<Job>(&too_big),
        Err(Error::Oversized { .. })
    ));

    // A body that claims a huge length is stopped by the decoder's limit, not by allocating.
    let mut framed = protocol::header(MessageKind::Job).to_vec();
    framed.extend_from_slice(&[7, 0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
    assert!(matches!(
        protocol::decode::<Job>(&framed),
        Err(Error::Malformed { .. })
    ));

    // Encoding refuses too: a result with a huge digest never leaves the worker.
    let h = Harness::from_doc(arb::valid_doc(&(0, vec![], vec![]))).expect("valid");
    let j = job(h.clone(), vec![], vec![1], 1);
    let mut r = result(&j, h, vec![]);
    r.failure_digest = "x".repeat(protocol::MAX_MESSAGE_BYTES);
    assert!(matches!(protocol::encode(&r), Err(Error::Oversized { .. })));
}
