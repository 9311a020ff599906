//! The wire protocol between coordinator and workers: message types, their encoding, and the
//! NATS subjects and stream names they travel on. No other module knows any of these.
//!
//! A message is a 5-byte header (`HX`, protocol version as u16 little-endian, message kind)
//! followed by a bincode body. Decoding checks the size limit before anything else and treats
//! every malformed, truncated, oversized or wrong-version message as a typed [`Error`]; a
//! harness inside a message is validated as it is decoded, so a worker cannot hand the
//! coordinator an invalid one.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::harness::{Edit, Harness, HarnessId};
use crate::task::{TaskBatch, TaskRef};

/// The protocol version this build speaks. Bump on any change to a message's shape.
pub const VERSION: u16 = 3;

/// Largest message, header included, that is encoded or decoded: `nats-server`'s default
/// `max_payload`, so anything encoded can be published.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

const MAGIC: [u8; 2] = *b"HX";

/// The header every message of `kind` starts with, at this [`VERSION`].
pub fn header(kind: MessageKind) -> [u8; HEADER_LEN] {
    let v = VERSION.to_le_bytes();
    [MAGIC[0], MAGIC[1], v[0], v[1], kind as u8]
}

/// Bytes in a message's header: the magic `HX`, the version (little-endian), the kind.
pub const HEADER_LEN: usize = 5;

fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_MESSAGE_BYTES>()
}

/// What a message is; the header's last byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum MessageKind {
    /// A [`Job`].
    Job = 1,
    /// A [`JobResult`].
    JobResult = 2,
    /// A [`WorkerBeat`].
    WorkerBeat = 3,
}

impl MessageKind {
    fn from_byte(b: u8) -> Option<MessageKind> {
        match b {
            1 => Some(MessageKind::Job),
            2 => Some(MessageKind::JobResult),
            3 => Some(MessageKind::WorkerBeat),
            _ => None,
        }
    }
}

/// A type that travels on the wire.
pub trait Message: Serialize + DeserializeOwned {
    /// Its kind byte.
    const KIND: MessageKind;
}

/// Why a message could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// Shorter than the header.
    #[error("message of {len} bytes is shorter than the {HEADER_LEN}-byte header")]
    Truncated {
        /// Its length.
        len: usize,
    },
    /// Does not start with `HX`.
    #[error("message does not start with the hx magic bytes")]
    BadMagic,
    /// Another protocol version.
    #[error("message is protocol version {found}; this build speaks version {supported}")]
    WrongVersion {
        /// The version in the header.
        found: u16,
        /// The version this build speaks.
        supported: u16,
    },
    /// A kind byte this build does not know.
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    /// A message of another kind than expected.
    #[error("expected a {expected:?} message, got a {found:?}")]
    WrongKind {
        /// The kind asked for.
        expected: MessageKind,
        /// The kind in the header.
        found: MessageKind,
    },
    /// Over [`MAX_MESSAGE_BYTES`].
    #[error("message of {len} bytes is over the {max}-byte limit")]
    Oversized {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The body does not decode, or a harness in it is invalid.
    #[error("malformed {kind:?} body: {reason}")]
    Malformed {
        /// The kind being decoded.
        kind: MessageKind,
        /// The decoder's reason.
        reason: String,
    },
    /// Bytes left over after the body.
    #[error("{extra} bytes after the end of the {kind:?} body")]
    TrailingBytes {
        /// The kind decoded.
        kind: MessageKind,
        /// How many bytes were left.
        extra: usize,
    },
    /// A message could not be encoded.
    #[error("cannot encode {kind:?}: {reason}")]
    Encode {
        /// The kind being encoded.
        kind: MessageKind,
        /// Why.
        reason: String,
    },
}

/// Encodes a message with its header; refuses one over the size limit.
pub fn encode<M: Message>(msg: &M) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(&header(M::KIND));
    bincode::serde::encode_into_std_write(msg, &mut out, bincode_config()).map_err(|e| {
        Error::Encode {
            kind: M::KIND,
            reason: e.to_string(),
        }
    })?;
    if out.len() > MAX_MESSAGE_BYTES {
        return Err(Error::Oversized {
            len: out.len(),
            max: MAX_MESSAGE_BYTES,
        });
    }
    Ok(out)
}

/// Reads a message's header: its version must be ours, its kind known.
pub fn peek_kind(bytes: &[u8]) -> Result<MessageKind, Error> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(Error::Oversized {
            len: bytes.len(),
            max: MAX_MESSAGE_BYTES,
        });
    }
    if bytes.len() < HEADER_LEN {
        return Err(Error::Truncated { len: bytes.len() });
    }
    if bytes[..2] != MAGIC {
        return Err(Error::BadMagic);
    }
    let version = u16::from_le_bytes([bytes[2], bytes[3]]);
    if version != VERSION {
        return Err(Error::WrongVersion {
            found: version,
            supported: VERSION,
        });
    }
    MessageKind::from_byte(bytes[4]).ok_or(Error::UnknownKind(bytes[4]))
}

/// Decodes a message of type `M`, checking its header, size and every byte of its body.
pub fn decode<M: Message>(bytes: &[u8]) -> Result<M, Error> {
    let found = peek_kind(bytes)?;
    if found != M::KIND {
        return Err(Error::WrongKind {
            expected: M::KIND,
            found,
        });
    }
    let body = &bytes[HEADER_LEN..];
    let (msg, read) = bincode::serde::decode_from_slice(body, bincode_config()).map_err(|e| {
        Error::Malformed {
            kind: M::KIND,
            reason: e.to_string(),
        }
    })?;
    if read != body.len() {
        return Err(Error::TrailingBytes {
            kind: M::KIND,
            extra: body.len() - read,
        });
    }
    Ok(msg)
}

/// A job's number, unique within its run and stable across redeliveries and restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct JobId(pub u64);

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "job-{}", self.0)
    }
}

/// How a worker is to change a parent before evaluating the child.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MutationOp {
    /// Add, remove or replace a component.
    Structural,
    /// Move a numeric or choice parameter within its range.
    Parametric,
    /// Have the model rewrite a prompt text using the parent's failure digest; `component`
    /// picks which text, or the worker chooses.
    Text {
        /// The component whose text to rewrite.
        component: Option<String>,
    },
    /// Apply these edits, e.g. in-task rewrites that helped (Lamarckian adoption).
    Apply {
        /// The edits, in order.
        edits: Vec<Edit>,
    },
    /// Reflective mutation: a proposer model digests the parent's failures, proposes edits
    /// in the algebra's vocabulary as JSON, each is checked by the algebra, and a child must
    /// pass a gate (replays of failures it claims to fix and of a task the parent won)
    /// before its evaluation.
    Reflect {
        /// How to ask the proposer.
        proposer: ProposerSpec,
        /// The parent's episodes on the search split, for the digest and the gate.
        episodes: Vec<ParentEpisode>,
    },
}

/// How a proposer answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProposerMode {
    /// It writes proposals as JSON edits (a model that can write JSON).
    #[default]
    Write,
    /// It picks the edits it finds most likely from a menu of single edits the search could
    /// make, by log-likelihood (a model too small to write JSON, such as the embedded one).
    Choose,
}

impl std::str::FromStr for ProposerMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "write" => Ok(ProposerMode::Write),
            "choose" => Ok(ProposerMode::Choose),
            _ => Err(format!("{s:?} is not a proposer mode (write or choose)")),
        }
    }
}

/// How a reflective mutation asks its proposer (the model itself is the worker's: its
/// `[proposer]` section, or the agents' model).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ProposerSpec {
    /// Whether it writes proposals or chooses them from a menu.
    pub mode: ProposerMode,
    /// Proposals asked for in one answer.
    pub proposals: u32,
    /// Sampling temperature.
    pub temperature: f32,
    /// Tokens the proposer may write per call.
    pub max_tokens: u32,
    /// Gated children at most (each gate costs up to three episodes).
    pub max_gates: u32,
}

/// One of the parent's episodes as the reflective operator sees it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ParentEpisode {
    /// The task's seed on the job's suite and search split.
    pub seed: u64,
    /// Whether the parent won it.
    pub won: bool,
    /// The parent's final progress there.
    pub score: f32,
    /// Steps it took.
    pub steps: u32,
}

/// The mutation a mutate-and-evaluate job asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MutationSpec {
    /// The operator.
    pub op: MutationOp,
    /// Seeds the operator's choices, so a redelivered job makes the same child.
    pub seed: u64,
    /// The parent's failure digest, for model-guided mutation.
    pub failure_digest: String,
}

/// What a job asks a worker to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobKind {
    /// Evaluate a harness as it is.
    Evaluate {
        /// The harness.
        harness: Harness,
    },
    /// Mutate a parent, then evaluate the child.
    MutateAndEvaluate {
        /// The parent.
        parent: Harness,
        /// The mutation.
        mutation: MutationSpec,
    },
    /// Recombine two parents by role, then evaluate the child.
    CrossoverAndEvaluate {
        /// The two parents.
        parents: Box<[Harness; 2]>,
        /// Seeds which parent each role is taken from.
        seed: u64,
    },
}

/// Limits on a job's work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobBudget {
    /// Steps per episode at most (the harness's own step budget may be lower).
    pub max_steps: u32,
    /// Model tokens for the whole job at most.
    pub max_tokens: u64,
    /// Wall time for the whole job at most, in milliseconds.
    pub wall_ms: u64,
}

/// A unit of work for a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// The job's number within its run.
    pub id: JobId,
    /// The run it belongs to.
    pub run: String,
    /// What to do.
    pub kind: JobKind,
    /// The tasks to evaluate on.
    pub tasks: TaskBatch,
    /// Limits.
    pub budget: JobBudget,
    /// 1 for the first delivery, counting up on each retry.
    pub attempt: u32,
}

impl Message for Job {
    const KIND: MessageKind = MessageKind::Job;
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobStatus {
    /// The child was made and evaluated.
    Completed,
    /// The mutation or crossover made no valid child; nothing was evaluated.
    InvalidChild {
        /// Why.
        reason: String,
    },
    /// The worker could not finish (model backend down, environment crashed, budget hit).
    Failed {
        /// Why.
        reason: String,
    },
}

/// One task's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskOutcome {
    /// The task.
    pub task: TaskRef,
    /// Whether the goal was reached.
    pub won: bool,
    /// Partial credit in `[0, 1]` where the world gives it, else 0 or 1.
    pub score: f32,
    /// Steps taken.
    pub steps: u32,
    /// Model tokens spent.
    pub tokens: u64,
    /// Wall time in milliseconds.
    pub wall_ms: u64,
    /// How certain the model was of the commands it chose: their mean log-likelihood per
    /// token over the episode. `None` where no model chose (the random floor) and in records
    /// made before it was kept. A best-of keeps its most certain episode by it.
    #[serde(default)]
    pub confidence: Option<f64>,
}

impl TaskOutcome {
    /// A best-of's outcome on a task from its first episode (`first`, the base harness's) and
    /// the best of the others (`rest`, [`Harness::best_of_rest`]'s): the more certain one,
    /// the first among equals, as the best-of picks when it plays them all; its cost is both.
    /// `None` where either lacks its certainty, or they are not of one task.
    ///
    /// [`Harness::best_of_rest`]: crate::harness::Harness::best_of_rest
    pub fn best_of(first: &TaskOutcome, rest: &TaskOutcome) -> Option<TaskOutcome> {
        if first.task != rest.task {
            return None;
        }
        let kept = if rest.confidence? > first.confidence? {
            rest
        } else {
            first
        };
        Some(TaskOutcome {
            tokens: first.tokens + rest.tokens,
            wall_ms: first.wall_ms + rest.wall_ms,
            ..kept.clone()
        })
    }
}

/// One mid-task rewrite the agent made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RewriteRecord {
    /// The task it happened in.
    pub task: TaskRef,
    /// The step at which it fired.
    pub step: u32,
    /// What fired it (e.g. `no-progress`, `invalid-commands`, `loop`, `asked`).
    pub trigger: String,
    /// The operation applied.
    pub edit: Edit,
    /// The episode's harness before.
    pub before: HarnessId,
    /// And after.
    pub after: HarnessId,
    /// Whether it was kept (not rolled back).
    pub kept: bool,
}

/// Token counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens read by the model.
    pub prompt_tokens: u64,
    /// Tokens written by the model.
    pub completion_tokens: u64,
}

/// A worker's answer to a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    /// The job answered.
    pub job: JobId,
    /// Its run.
    pub run: String,
    /// The delivery attempt that produced this.
    pub attempt: u32,
    /// The worker that ran it.
    pub worker: String,
    /// How it ended.
    pub status: JobStatus,
    /// The child a mutate or crossover job made and evaluated. `None` for an evaluate job
    /// (the coordinator holds its harness; a worker that sends it back must send it
    /// unchanged) and for a job that made no child.
    pub child: Option<Harness>,
    /// Per-task results.
    pub outcomes: Vec<TaskOutcome>,
    /// Tokens the agents' model spent on the whole job, gate episodes and text mutation
    /// included.
    pub usage: Usage,
    /// Tokens a reflective mutation's proposer spent (counted apart: it may be another,
    /// larger model).
    #[serde(default)]
    pub proposer_usage: Usage,
    /// Wall time of the whole job, in milliseconds.
    pub wall_ms: u64,
    /// Mid-task rewrites, in order.
    pub rewrites: Vec<RewriteRecord>,
    /// A short account of what went wrong, to guide the next mutation.
    pub failure_digest: String,
    /// What the worker refused on the way to its child, each with its reason (a reflective
    /// mutation's malformed proposals and failed gates), whether or not a child came of it.
    #[serde(default)]
    pub refusals: Vec<String>,
}

impl Message for JobResult {
    const KIND: MessageKind = MessageKind::JobResult;
}

impl JobResult {
    /// An answer to `job` from `worker` with `status` and nothing else yet: no child, no
    /// outcomes, no usage.
    pub fn new(job: &Job, worker: &str, status: JobStatus) -> JobResult {
        JobResult {
            job: job.id,
            run: job.run.clone(),
            attempt: job.attempt,
            worker: worker.to_owned(),
            status,
            child: None,
            outcomes: Vec::new(),
            usage: Usage::default(),
            proposer_usage: Usage::default(),
            wall_ms: 0,
            rewrites: Vec::new(),
            failure_digest: String::new(),
            refusals: Vec::new(),
        }
    }
}

/// A worker's registration and heartbeat, kept under its id in the workers bucket, which
/// forgets it when the beats stop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerBeat {
    /// The worker's name.
    pub worker: String,
    /// Its model backend, as the backend describes itself.
    pub model: String,
    /// Jobs it runs at once.
    pub slots: u32,
    /// Jobs running now.
    pub busy: u32,
    /// Jobs answered since it started.
    pub jobs_done: u64,
    /// Episodes run since it started.
    pub episodes: u64,
    /// When it started, in milliseconds since the Unix epoch.
    pub started_ms: u64,
    /// When this beat was sent, in milliseconds since the Unix epoch.
    pub sent_ms: u64,
}

impl Message for WorkerBeat {
    const KIND: MessageKind = MessageKind::WorkerBeat;
}

/// Checks a run name: it appears in NATS subjects, so 1 to 64 characters of `a-z`, `0-9`, `-`
/// and `_`.
pub fn check_run_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} must be 1 to 64 characters of a-z, 0-9, '-' and '_' (it is used in NATS subjects)"
        ))
    }
}

/// NATS names. Distributed mode uses these and only these.
pub mod subjects {
    use super::JobId;

    /// The work-queue stream holding jobs, for every run.
    pub const JOBS_STREAM: &str = "HX_JOBS";
    /// The subjects [`JOBS_STREAM`] holds.
    pub const JOBS_ALL: &str = "hx.jobs.>";
    /// The durable pull consumer every worker shares.
    pub const WORKERS_CONSUMER: &str = "hx-workers";
    /// The work-queue stream holding results, for every run.
    pub const RESULTS_STREAM: &str = "HX_RESULTS";
    /// The subjects [`RESULTS_STREAM`] holds.
    pub const RESULTS_ALL: &str = "hx.results.>";
    /// The stream of dead-lettered jobs: ones no worker could decode, and ones delivered the
    /// maximum number of times without an answer.
    pub const DEAD_STREAM: &str = "HX_DEAD";
    /// The subjects [`DEAD_STREAM`] holds.
    pub const DEAD_ALL: &str = "hx.dead.>";
    /// The key-value bucket where workers register and heartbeat.
    pub const WORKERS_BUCKET: &str = "hx_workers";
    /// Header carrying the job id, so a job can be followed across machines in logs.
    pub const JOB_HEADER: &str = "Hx-Job";
    /// Header on a dead letter saying why it died.
    pub const REASON_HEADER: &str = "Hx-Reason";
    /// The advisory JetStream sends when a job reached the workers' delivery limit.
    pub const MAX_DELIVERIES_ADVISORY: &str =
        "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.HX_JOBS.hx-workers";

    /// The subject a run's jobs are published on.
    pub fn jobs(run: &str) -> String {
        format!("hx.jobs.{run}")
    }

    /// The subject a run's results are published on.
    pub fn results(run: &str) -> String {
        format!("hx.results.{run}")
    }

    /// The subject a run's dead letters are kept on.
    pub fn dead(run: &str) -> String {
        format!("hx.dead.{run}")
    }

    /// The run a job subject belongs to, if it is one.
    pub fn run_of_job_subject(subject: &str) -> Option<&str> {
        subject
            .strip_prefix("hx.jobs.")
            .filter(|r| super::check_run_name(r).is_ok())
    }

    /// The durable consumer through which a run's coordinator reads its results.
    pub fn coordinator_consumer(run: &str) -> String {
        format!("hx-coordinator-{run}")
    }

    /// The message id a job is published under: a job published twice (a coordinator that
    /// resumed, a publish retried) is stored once.
    pub fn job_msg_id(run: &str, job: JobId) -> String {
        format!("{run}.job.{}", job.0)
    }

    /// The message id a result is published under: the first answer to a job is stored, a
    /// second one (a redelivered job answered twice) is dropped by the server.
    pub fn result_msg_id(run: &str, job: JobId) -> String {
        format!("{run}.result.{}", job.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::{Component, HarnessDoc, Kind};
    use crate::task::Split;

    fn job() -> Job {
        let harness = Harness::from_doc(HarnessDoc {
            components: vec![Component::new("act", Kind::FreeGeneration)],
            edges: vec![],
        })
        .expect("valid");
        Job {
            id: JobId(7),
            run: "quickstart".into(),
            kind: JobKind::Evaluate { harness },
            tasks: TaskBatch {
                suite: "household".into(),
                split: Split::Train,
                seeds: vec![1, 2],
            },
            budget: JobBudget {
                max_steps: 30,
                max_tokens: 100_000,
                wall_ms: 60_000,
            },
            attempt: 1,
        }
    }

    #[test]
    fn wire_format_is_pinned() {
        // A change here breaks every deployed worker: bump VERSION along with it.
        let bytes = encode(&job()).expect("encodes");
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        expect_test::expect!["4858030001070a717569636b73746172740001036163740d0202030306666f726d6174030572656163740a6d61782d746f6b656e7301800b74656d70657261747572650200000000000000000009686f757365686f6c64000201021efca0860100fb60ea01"]
            .assert_eq(&hex);
        assert_eq!(decode::<Job>(&bytes), Ok(job()));
    }

    #[test]
    fn a_best_of_keeps_the_more_certain_part_and_pays_for_both() {
        let t = |seed| TaskRef {
            suite: "household".into(),
            split: Split::Test,
            seed,
        };
        let o = |won, confidence| TaskOutcome {
            task: t(3),
            won,
            score: f32::from(u8::from(won)),
            steps: 4,
            tokens: 100,
            wall_ms: 5,
            confidence,
        };
        let both = TaskOutcome::best_of(&o(false, Some(-1.0)), &o(true, Some(-0.5)));
        assert_eq!(
            both,
            Some(TaskOutcome {
                tokens: 200,
                wall_ms: 10,
                ..o(true, Some(-0.5))
            })
        );
        // The first among equals, as a best-of that plays them in order keeps.
        let tie = TaskOutcome::best_of(&o(false, Some(-1.0)), &o(true, Some(-1.0)));
        assert!(tie.is_some_and(|x| !x.won));
        // Without a certainty, or of two tasks, nothing to compare.
        assert_eq!(
            TaskOutcome::best_of(&o(false, None), &o(true, Some(0.0))),
            None
        );
        assert_eq!(
            TaskOutcome::best_of(&o(false, Some(0.0)), &o(true, None)),
            None
        );
        let other = TaskOutcome {
            task: t(4),
            ..o(true, Some(0.0))
        };
        assert_eq!(TaskOutcome::best_of(&o(false, Some(-1.0)), &other), None);
    }

    #[test]
    fn header_errors_are_typed() {
        let bytes = encode(&job()).expect("encodes");
        assert_eq!(decode::<Job>(&bytes[..3]), Err(Error::Truncated { len: 3 }));
        let mut wrong = bytes.clone();
        wrong[2] = 9;
        assert!(matches!(
            decode::<Job>(&wrong),
            Err(Error::WrongVersion { found: 9, .. })
        ));
        assert!(matches!(
            decode::<JobResult>(&bytes),
            Err(Error::WrongKind { .. })
        ));
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(matches!(
            decode::<Job>(&extra),
            Err(Error::TrailingBytes { extra: 1, .. })
        ));
        assert!(matches!(
            decode::<Job>(&bytes[..bytes.len() - 1]),
            Err(Error::Malformed { .. })
        ));
        let huge = vec![0u8; MAX_MESSAGE_BYTES + 1];
        assert!(matches!(decode::<Job>(&huge), Err(Error::Oversized { .. })));
    }

    #[test]
    fn an_invalid_harness_does_not_decode() {
        // A worker that sends a harness with no action selector is refused at decode.
        let mut bytes = encode(&job()).expect("encodes");
        let at = bytes
            .windows(4)
            .position(|w| w == b"\x03act")
            .expect("the component name is in the body");
        // Kind index of free-generation (13) -> system-prompt (0) keeps the shape but breaks
        // two rules: no action selector, and a required text parameter missing.
        let kind_at = at + 4;
        assert_eq!(bytes[kind_at], 13);
        bytes[kind_at] = 0;
        let err = decode::<Job>(&bytes).expect_err("invalid harness");
        assert!(err.to_string().contains("action selector"), "{err}");
    }
}
