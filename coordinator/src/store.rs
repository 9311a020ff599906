//! The run store: everything a search knows, on disk in sled, so a killed run resumes.
//!
//! One tree per record kind:
//!
//! | tree | key | value |
//! |---|---|---|
//! | `harnesses` | harness id (16 bytes) | the harness, canonical JSON |
//! | `evaluations` | harness id + task (`household/validation/7`) | the task's outcome, JSON |
//! | `lineage` | harness id | parents, operator, adopted rewrites, the job that made it |
//! | `jobs` | job id (8 bytes, big-endian) | the job (naming its harnesses by id), its state and attempts |
//! | `meta` | a name (`config`, `started`, `best`, ...) | JSON |
//!
//! Values are JSON so a store stays readable across versions and by other tools. Every value
//! read back is decoded and, for harnesses, validated again; a bad value is an [`Error`] naming
//! the tree and key, never a panic.
//!
//! Results are written in batches ([`Writes`]): the answers heard together are gathered, then
//! applied tree by tree with the job records last, and the caller flushes once before it
//! acknowledges them. sled recovers its log in order, so after a crash a job is never marked
//! answered without the outcomes it brought; a batch cut short is simply heard again, since
//! nothing in it was acknowledged.

use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use hx_common::harness::{Harness, HarnessId};
use hx_common::protocol::{
    Job, JobBudget, JobId, JobKind, MutationSpec, RewriteRecord, TaskOutcome,
};
use hx_common::task::{TaskBatch, TaskRef};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// How long [`Store::open`] waits for a lock to clear before it says
/// another process holds the store.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// What went wrong with a store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another process holds the store (sled allows one).
    #[error(
        "the store {path} is in use by another process (a running `hx evolve`?); \
         `hx status` reads its status.json while it runs"
    )]
    Locked {
        /// The store's directory.
        path: PathBuf,
    },
    /// The store could not be opened.
    #[error("cannot open the store {path}: {cause}")]
    Open {
        /// The store's directory.
        path: PathBuf,
        /// Why.
        cause: sled::Error,
    },
    /// A read or write failed.
    #[error("store {path}: {cause}")]
    Db {
        /// The store's directory.
        path: PathBuf,
        /// Why.
        cause: sled::Error,
    },
    /// A line of a dump does not load.
    #[error("{file}, line {line}: {reason}")]
    Dump {
        /// The dump.
        file: String,
        /// Its line, from 1.
        line: usize,
        /// Why.
        reason: String,
    },
    /// A dump loads only into a store that holds nothing.
    #[error("the store {path} already holds {records} records: load a dump into a new directory")]
    NotEmpty {
        /// The store's directory.
        path: PathBuf,
        /// How many records it holds.
        records: usize,
    },
    /// Writing a dump, or a file beside the store, failed.
    #[error("{what}: {cause}")]
    Io {
        /// What was being written.
        what: String,
        /// Why.
        cause: std::io::Error,
    },
    /// A stored value does not decode.
    #[error("store {path}: tree {tree}, key {key}: {reason}")]
    Corrupt {
        /// The store's directory.
        path: PathBuf,
        /// The tree.
        tree: &'static str,
        /// The key, readable.
        key: String,
        /// Why it does not decode.
        reason: String,
    },
}

/// Where a harness came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lineage {
    /// Its parents: none for a seed, one for a mutation, two for a crossover.
    pub parents: Vec<HarnessId>,
    /// The operator that made it (`seed`, `structural`, `parametric`, `text`, `adopt`,
    /// `crossover`).
    pub operator: String,
    /// In-task rewrites adopted into it (Lamarckian inheritance).
    pub adopted: Vec<RewriteRecord>,
    /// The job that made it, if a job did.
    pub job: Option<JobId>,
    /// Milliseconds since the run started.
    pub at_ms: u64,
}

impl Lineage {
    /// A seed's: no parents, made at the start, by `job` if a job carried it.
    pub fn seed(job: Option<JobId>) -> Lineage {
        Lineage {
            parents: vec![],
            operator: "seed".into(),
            adopted: vec![],
            job,
            at_ms: 0,
        }
    }
}

/// Where a job stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "state")]
pub enum JobState {
    /// Made, not yet answered.
    Pending,
    /// Answered with an evaluated child.
    Done,
    /// The mutation made no valid child (recorded, not evaluated).
    Invalid {
        /// Why.
        reason: String,
    },
    /// The worker could not finish, or the job was given up after too many attempts.
    Failed {
        /// Why.
        reason: String,
    },
}

/// A job as the store keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// The job.
    pub job: Job,
    /// Where it stands.
    pub state: JobState,
    /// Deliveries so far.
    pub attempts: u32,
}

/// A job record as stored: the harnesses it names are in the `harnesses` tree, so a record
/// is small however large its harnesses are (it is written twice per job: made and
/// answered).
#[derive(Serialize, Deserialize)]
struct StoredJob {
    id: JobId,
    run: String,
    kind: StoredKind,
    tasks: TaskBatch,
    budget: JobBudget,
    attempt: u32,
    state: JobState,
    attempts: u32,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
enum StoredKind {
    Evaluate {
        harness: HarnessId,
    },
    MutateAndEvaluate {
        parent: HarnessId,
        mutation: MutationSpec,
    },
    CrossoverAndEvaluate {
        parents: [HarnessId; 2],
        seed: u64,
    },
}

impl StoredJob {
    fn of(r: &JobRecord) -> StoredJob {
        let kind = match &r.job.kind {
            JobKind::Evaluate { harness } => StoredKind::Evaluate {
                harness: harness.id(),
            },
            JobKind::MutateAndEvaluate { parent, mutation } => StoredKind::MutateAndEvaluate {
                parent: parent.id(),
                mutation: mutation.clone(),
            },
            JobKind::CrossoverAndEvaluate { parents, seed } => StoredKind::CrossoverAndEvaluate {
                parents: [parents[0].id(), parents[1].id()],
                seed: *seed,
            },
        };
        StoredJob {
            id: r.job.id,
            run: r.job.run.clone(),
            kind,
            tasks: r.job.tasks.clone(),
            budget: r.job.budget,
            attempt: r.job.attempt,
            state: r.state.clone(),
            attempts: r.attempts,
        }
    }
}

/// The harnesses a job names.
fn job_harnesses(job: &Job) -> Vec<&Harness> {
    match &job.kind {
        JobKind::Evaluate { harness } => vec![harness],
        JobKind::MutateAndEvaluate { parent, .. } => vec![parent],
        JobKind::CrossoverAndEvaluate { parents, .. } => parents.iter().collect(),
    }
}

/// What one answered job adds to the store.
#[derive(Debug, Clone)]
pub struct Answer<'a> {
    /// The job's record, in its new state.
    pub record: &'a JobRecord,
    /// The child evaluated, with its lineage, if the job made one.
    pub child: Option<(&'a Harness, &'a Lineage)>,
    /// The outcomes to record for `child` (or for the evaluated harness).
    pub outcomes: &'a [TaskOutcome],
}

/// Writes gathered for one [`Store::apply`]: the records of a batch of answered jobs.
#[derive(Default)]
pub struct Writes {
    evaluations: sled::Batch,
    harnesses: sled::Batch,
    lineage: sled::Batch,
    meta: sled::Batch,
    jobs: sled::Batch,
    /// Keys written in this batch, so a pair or harness twice in one batch is written once.
    eval_keys: HashSet<Vec<u8>>,
    harness_ids: HashSet<HarnessId>,
    lineage_ids: HashSet<HarnessId>,
    records: usize,
}

impl Writes {
    /// Whether nothing is gathered.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Sets a run-level value with the batch.
    pub fn set_meta<T: Serialize>(&mut self, key: &str, value: &T) {
        self.meta.insert(key, json(value));
        self.records += 1;
    }
}

/// The trees of a store, in the order [`Store::load`] writes them (job records last, as
/// [`Store::apply`] writes them).
const TREES: [&str; 5] = ["meta", "harnesses", "lineage", "evaluations", "jobs"];

/// One line of a dump: a record of a tree (its key in hex, its value as JSON), or a JSON
/// file kept beside the store (the search's `status.json`).
#[derive(Serialize, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
enum DumpLine {
    Record {
        tree: String,
        key: String,
        value: serde_json::Value,
    },
    File {
        file: String,
        value: serde_json::Value,
    },
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// An open run store.
pub struct Store {
    path: PathBuf,
    db: sled::Db,
    harnesses: sled::Tree,
    evaluations: sled::Tree,
    lineage: sled::Tree,
    jobs: sled::Tree,
    meta: sled::Tree,
}

fn eval_key(id: &HarnessId, task: &TaskRef) -> Vec<u8> {
    let mut k = id.0.to_vec();
    k.extend_from_slice(task.to_string().as_bytes());
    k
}

fn json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("store records serialize")
}

impl Store {
    /// Opens (or creates) the store in directory `path`.
    ///
    /// A store this process has just closed can stay locked for a moment:
    /// sled's flusher thread releases the file lock after `Drop` returns
    /// (sled issue 1234). So a lock is retried for up to [`LOCK_WAIT`]
    /// before it is reported as held by another process.
    pub fn open(path: &Path) -> Result<Store, Error> {
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        let db = loop {
            match sled::Config::new().path(path).open() {
                Ok(db) => break db,
                Err(cause) => {
                    let locked = matches!(&cause, sled::Error::Io(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock
                            || e.to_string().contains("lock"));
                    if !locked {
                        return Err(Error::Open {
                            path: path.to_owned(),
                            cause,
                        });
                    }
                    if std::time::Instant::now() >= deadline {
                        return Err(Error::Locked {
                            path: path.to_owned(),
                        });
                    }
                    std::thread::sleep(std::time::Duration::from_millis(25));
                }
            }
        };
        let tree = |name: &str| {
            db.open_tree(name).map_err(|cause| Error::Open {
                path: path.to_owned(),
                cause,
            })
        };
        Ok(Store {
            harnesses: tree("harnesses")?,
            evaluations: tree("evaluations")?,
            lineage: tree("lineage")?,
            jobs: tree("jobs")?,
            meta: tree("meta")?,
            db,
            path: path.to_owned(),
        })
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn db(&self, cause: sled::Error) -> Error {
        Error::Db {
            path: self.path.clone(),
            cause,
        }
    }

    fn decode<T: DeserializeOwned>(
        &self,
        tree: &'static str,
        key: String,
        bytes: &[u8],
    ) -> Result<T, Error> {
        serde_json::from_slice(bytes).map_err(|e| Error::Corrupt {
            path: self.path.clone(),
            tree,
            key,
            reason: e.to_string(),
        })
    }

    /// Makes everything written so far durable.
    pub fn flush(&self) -> Result<(), Error> {
        self.db.flush().map(|_| ()).map_err(|e| self.db(e))
    }

    /// A fresh job number (never reused, also across restarts).
    pub fn next_job_id(&self) -> Result<JobId, Error> {
        self.db.generate_id().map(JobId).map_err(|e| self.db(e))
    }

    /// Stores a harness; `false` if it was already there.
    pub fn put_harness(&self, h: &Harness) -> Result<bool, Error> {
        let old = self
            .harnesses
            .insert(h.id().0, json(h))
            .map_err(|e| self.db(e))?;
        Ok(old.is_none())
    }

    /// A stored harness, validated again.
    pub fn harness(&self, id: &HarnessId) -> Result<Option<Harness>, Error> {
        match self.harnesses.get(id.0).map_err(|e| self.db(e))? {
            None => Ok(None),
            Some(v) => self.checked_harness(id, &v).map(Some),
        }
    }

    fn checked_harness(&self, id: &HarnessId, bytes: &[u8]) -> Result<Harness, Error> {
        let h: Harness = self.decode("harnesses", id.to_string(), bytes)?;
        if h.id() != *id {
            return Err(Error::Corrupt {
                path: self.path.clone(),
                tree: "harnesses",
                key: id.to_string(),
                reason: format!("the harness stored there has id {}", h.id()),
            });
        }
        Ok(h)
    }

    /// Every stored harness, in id order.
    pub fn harnesses(&self) -> Result<Vec<Harness>, Error> {
        let mut out = Vec::new();
        for kv in self.harnesses.iter() {
            let (k, v) = kv.map_err(|e| self.db(e))?;
            let id = HarnessId(k.as_ref().try_into().map_err(|_| Error::Corrupt {
                path: self.path.clone(),
                tree: "harnesses",
                key: format!("{k:?}"),
                reason: "a key is not a 16-byte id".into(),
            })?);
            out.push(self.checked_harness(&id, &v)?);
        }
        Ok(out)
    }

    /// Records one task's outcome for harness `id`; `false` (and nothing written) if that
    /// pair was already recorded: an evaluation is never repeated or overwritten.
    pub fn record_evaluation(&self, id: &HarnessId, outcome: &TaskOutcome) -> Result<bool, Error> {
        let r = self
            .evaluations
            .compare_and_swap(
                eval_key(id, &outcome.task),
                None as Option<&[u8]>,
                Some(json(outcome)),
            )
            .map_err(|e| self.db(e))?;
        Ok(r.is_ok())
    }

    /// The recorded outcome of `id` on `task`.
    pub fn evaluation(&self, id: &HarnessId, task: &TaskRef) -> Result<Option<TaskOutcome>, Error> {
        let key = eval_key(id, task);
        match self.evaluations.get(&key).map_err(|e| self.db(e))? {
            None => Ok(None),
            Some(v) => self
                .decode("evaluations", format!("{id}/{task}"), &v)
                .map(Some),
        }
    }

    /// Every recorded outcome of `id`, in task order.
    pub fn evaluations(&self, id: &HarnessId) -> Result<Vec<TaskOutcome>, Error> {
        let mut out = Vec::new();
        for kv in self.evaluations.scan_prefix(id.0) {
            let (k, v) = kv.map_err(|e| self.db(e))?;
            let key = format!("{id}/{}", String::from_utf8_lossy(&k[16..]));
            out.push(self.decode("evaluations", key, &v)?);
        }
        Ok(out)
    }

    /// How many evaluations the store holds, all harnesses together.
    pub fn evaluation_count(&self) -> usize {
        self.evaluations.len()
    }

    /// Records where a harness came from (the first record for an id wins).
    pub fn put_lineage(&self, id: &HarnessId, lineage: &Lineage) -> Result<(), Error> {
        self.lineage
            .compare_and_swap(id.0, None as Option<&[u8]>, Some(json(lineage)))
            .map_err(|e| self.db(e))?
            .ok();
        Ok(())
    }

    /// Where a harness came from.
    pub fn lineage(&self, id: &HarnessId) -> Result<Option<Lineage>, Error> {
        match self.lineage.get(id.0).map_err(|e| self.db(e))? {
            None => Ok(None),
            Some(v) => self.decode("lineage", id.to_string(), &v).map(Some),
        }
    }

    /// Stores a job record (new or updated), and the harnesses it names where the store
    /// lacks them.
    pub fn put_job(&self, record: &JobRecord) -> Result<(), Error> {
        let mut w = Writes::default();
        self.put_job_in(&mut w, record)?;
        self.apply(w)
    }

    /// Gathers a job record (new or updated) into `w`, with the harnesses it names where the
    /// store lacks them.
    pub fn put_job_in(&self, w: &mut Writes, record: &JobRecord) -> Result<(), Error> {
        for h in job_harnesses(&record.job) {
            self.put_harness_in(w, h)?;
        }
        w.jobs
            .insert(&record.job.id.0.to_be_bytes(), json(&StoredJob::of(record)));
        w.records += 1;
        Ok(())
    }

    /// Gathers a harness into `w` where neither the store nor `w` has it; `true` if it did.
    fn put_harness_in(&self, w: &mut Writes, h: &Harness) -> Result<bool, Error> {
        let id = h.id();
        if w.harness_ids.contains(&id) {
            return Ok(false);
        }
        w.harness_ids.insert(id);
        if self.harnesses.get(id.0).map_err(|e| self.db(e))?.is_some() {
            return Ok(false);
        }
        w.harnesses.insert(&id.0, json(h));
        w.records += 1;
        Ok(true)
    }

    /// Every job record, in job order.
    pub fn jobs(&self) -> Result<Vec<JobRecord>, Error> {
        let mut out = Vec::new();
        for kv in self.jobs.iter() {
            let (k, v) = kv.map_err(|e| self.db(e))?;
            let key = <[u8; 8]>::try_from(k.as_ref()).map_or_else(
                |_| format!("{k:?}"),
                |b| JobId(u64::from_be_bytes(b)).to_string(),
            );
            out.push(self.job_record(key, &v)?);
        }
        Ok(out)
    }

    /// One job record.
    pub fn job(&self, id: JobId) -> Result<Option<JobRecord>, Error> {
        match self.jobs.get(id.0.to_be_bytes()).map_err(|e| self.db(e))? {
            None => Ok(None),
            Some(v) => self.job_record(id.to_string(), &v).map(Some),
        }
    }

    /// A stored job with its harnesses filled in from the `harnesses` tree. Stores written
    /// before job records named harnesses by id hold whole records: those read as they are.
    fn job_record(&self, key: String, bytes: &[u8]) -> Result<JobRecord, Error> {
        let stored: StoredJob = match serde_json::from_slice(bytes) {
            Ok(s) => s,
            Err(e) => {
                return serde_json::from_slice::<JobRecord>(bytes).map_err(|_| Error::Corrupt {
                    path: self.path.clone(),
                    tree: "jobs",
                    key,
                    reason: e.to_string(),
                });
            }
        };
        let harness = |id: HarnessId| -> Result<Harness, Error> {
            self.harness(&id)?.ok_or_else(|| Error::Corrupt {
                path: self.path.clone(),
                tree: "jobs",
                key: key.clone(),
                reason: format!("it names harness {id}, which the store does not hold"),
            })
        };
        let kind = match stored.kind {
            StoredKind::Evaluate { harness: id } => JobKind::Evaluate {
                harness: harness(id)?,
            },
            StoredKind::MutateAndEvaluate { parent, mutation } => JobKind::MutateAndEvaluate {
                parent: harness(parent)?,
                mutation,
            },
            StoredKind::CrossoverAndEvaluate { parents, seed } => JobKind::CrossoverAndEvaluate {
                parents: Box::new([harness(parents[0])?, harness(parents[1])?]),
                seed,
            },
        };
        Ok(JobRecord {
            job: Job {
                id: stored.id,
                run: stored.run,
                kind,
                tasks: stored.tasks,
                budget: stored.budget,
                attempt: stored.attempt,
            },
            state: stored.state,
            attempts: stored.attempts,
        })
    }

    /// Sets a run-level value.
    pub fn set_meta<T: Serialize>(&self, key: &str, value: &T) -> Result<(), Error> {
        self.meta.insert(key, json(value)).map_err(|e| self.db(e))?;
        Ok(())
    }

    /// Removes a run-level value (nothing where there is none).
    pub fn remove_meta(&self, key: &str) -> Result<(), Error> {
        self.meta.remove(key).map_err(|e| self.db(e))?;
        Ok(())
    }

    /// A run-level value.
    pub fn meta<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        match self.meta.get(key).map_err(|e| self.db(e))? {
            None => Ok(None),
            Some(v) => self.decode("meta", key.to_owned(), &v).map(Some),
        }
    }

    /// Gathers an answered job into `w` (its new state, the child and its lineage, the
    /// outcomes not yet recorded); [`Store::apply`] writes the batch and [`Store::flush`]
    /// makes it durable. Returns how many outcomes were new: an answer delivered twice
    /// records its outcomes once, in one batch or across batches.
    pub fn record_answer(&self, w: &mut Writes, answer: &Answer<'_>) -> Result<usize, Error> {
        self.put_job_in(w, answer.record)?;
        let mut new = 0;
        if let Some((h, l)) = answer.child {
            let id = h.id();
            self.put_harness_in(w, h)?;
            if w.lineage_ids.insert(id) && self.lineage.get(id.0).map_err(|e| self.db(e))?.is_none()
            {
                w.lineage.insert(&id.0, json(l));
            }
            for o in answer.outcomes {
                let key = eval_key(&id, &o.task);
                if w.eval_keys.contains(&key)
                    || self
                        .evaluations
                        .get(&key)
                        .map_err(|e| self.db(e))?
                        .is_some()
                {
                    continue;
                }
                w.evaluations.insert(key.clone(), json(o));
                w.eval_keys.insert(key);
                new += 1;
            }
            w.records += new;
        }
        Ok(new)
    }

    fn tree(&self, name: &str) -> &sled::Tree {
        match name {
            "meta" => &self.meta,
            "harnesses" => &self.harnesses,
            "lineage" => &self.lineage,
            "evaluations" => &self.evaluations,
            _ => &self.jobs,
        }
    }

    /// Writes the whole store as JSON lines, one record each (`{"tree", "key" (hex),
    /// "value"}`, tree by tree, keys in order), then each of `files` found in the store's
    /// directory (`{"file", "value"}`; the search keeps its `status.json` there). A dump is
    /// the run as text: [`Store::load`] makes it a store again on any machine, so a run can
    /// be kept in git or moved while it is stopped. Returns the lines written.
    pub fn dump(&self, out: &mut dyn Write, files: &[&str]) -> Result<usize, Error> {
        let io = |cause| Error::Io {
            what: "writing the dump".into(),
            cause,
        };
        let mut write = |line: &DumpLine| -> Result<(), Error> {
            serde_json::to_writer(&mut *out, line).map_err(|e| io(e.into()))?;
            out.write_all(b"\n").map_err(io)
        };
        let mut n = 0;
        for name in TREES {
            for kv in self.tree(name).iter() {
                let (k, v) = kv.map_err(|e| self.db(e))?;
                let value: serde_json::Value = self.decode(name, hex(&k), &v)?;
                write(&DumpLine::Record {
                    tree: name.into(),
                    key: hex(&k),
                    value,
                })?;
                n += 1;
            }
        }
        for &file in files {
            let path = self.path.join(file);
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            let value: serde_json::Value =
                serde_json::from_slice(&bytes).map_err(|e| Error::Io {
                    what: format!("reading {}", path.display()),
                    cause: e.into(),
                })?;
            write(&DumpLine::File {
                file: file.into(),
                value,
            })?;
            n += 1;
        }
        out.flush().map_err(io)?;
        Ok(n)
    }

    /// Loads a dump written by [`Store::dump`] into this store, which must hold nothing.
    /// Every line is checked before anything is written: each value must decode as its
    /// tree's record (harnesses are validated and must have the id they are filed under, an
    /// outcome the task its key names), and a file line must name one of `files`. Job
    /// numbers then go on after the highest loaded, so a resumed run never reuses one.
    /// `name` names the dump in errors. Returns the lines loaded.
    pub fn load(
        &self,
        input: &mut dyn BufRead,
        name: &str,
        files: &[&str],
    ) -> Result<usize, Error> {
        let records: usize = TREES.iter().map(|t| self.tree(t).len()).sum();
        if records > 0 {
            return Err(Error::NotEmpty {
                path: self.path.clone(),
                records,
            });
        }
        let mut batches: [sled::Batch; 5] = Default::default();
        let mut kept: Vec<(String, Vec<u8>)> = Vec::new();
        let mut max_job: Option<u64> = None;
        let mut n = 0;
        let mut text = String::new();
        for line in 1.. {
            let bad = |reason: String| Error::Dump {
                file: name.to_owned(),
                line,
                reason,
            };
            text.clear();
            if input.read_line(&mut text).map_err(|e| bad(e.to_string()))? == 0 {
                break;
            }
            if text.trim().is_empty() {
                continue;
            }
            match serde_json::from_str(&text).map_err(|e| bad(e.to_string()))? {
                DumpLine::File { file, value } => {
                    if !files.contains(&file.as_str()) {
                        return Err(bad(format!(
                            "the file `{file}` is not one a store keeps ({})",
                            files.join(", ")
                        )));
                    }
                    kept.push((file, json(&value)));
                }
                DumpLine::Record { tree, key, value } => {
                    let t = TREES.iter().position(|t| *t == tree).ok_or_else(|| {
                        bad(format!(
                            "unknown tree `{tree}` (a store has {})",
                            TREES.join(", ")
                        ))
                    })?;
                    let key = unhex(&key)
                        .ok_or_else(|| bad(format!("the key `{key}` is not hexadecimal")))?;
                    let value = json(&value);
                    if let Some(job) = self.check_record(TREES[t], &key, &value).map_err(bad)? {
                        max_job = max_job.max(Some(job));
                    }
                    batches[t].insert(key, value);
                }
            }
            n += 1;
        }
        for (t, batch) in TREES.iter().zip(batches) {
            self.tree(t).apply_batch(batch).map_err(|e| self.db(e))?;
        }
        if let Some(max) = max_job {
            while self.next_job_id()?.0 <= max {}
        }
        self.flush()?;
        for (file, bytes) in kept {
            let path = self.path.join(&file);
            std::fs::write(&path, bytes).map_err(|cause| Error::Io {
                what: format!("writing {}", path.display()),
                cause,
            })?;
        }
        Ok(n)
    }

    /// Checks a record of a dump as its tree's kind; for a job, returns its number.
    fn check_record(
        &self,
        tree: &'static str,
        key: &[u8],
        value: &[u8],
    ) -> Result<Option<u64>, String> {
        let id = || -> Result<HarnessId, String> {
            key.get(..16)
                .and_then(|k| k.try_into().ok())
                .map(HarnessId)
                .ok_or_else(|| format!("a key of `{tree}` starts with a 16-byte harness id"))
        };
        let err = |e: Error| e.to_string();
        match tree {
            "harnesses" => {
                if key.len() != 16 {
                    return Err("a key of `harnesses` is a 16-byte harness id".into());
                }
                self.checked_harness(&id()?, value).map_err(err)?;
            }
            "evaluations" => {
                let o: TaskOutcome = self.decode(tree, hex(key), value).map_err(err)?;
                id()?;
                let task = String::from_utf8_lossy(&key[16..]).into_owned();
                if task != o.task.to_string() {
                    return Err(format!(
                        "the outcome filed under `{task}` is of `{}`",
                        o.task
                    ));
                }
            }
            "lineage" => {
                id()?;
                self.decode::<Lineage>(tree, hex(key), value).map_err(err)?;
            }
            "jobs" => {
                let n = <[u8; 8]>::try_from(key)
                    .map(u64::from_be_bytes)
                    .map_err(|_| "a key of `jobs` is an 8-byte job number".to_owned())?;
                if serde_json::from_slice::<StoredJob>(value).is_err() {
                    self.decode::<JobRecord>(tree, hex(key), value)
                        .map_err(err)?;
                }
                return Ok(Some(n));
            }
            _ => {}
        }
        Ok(None)
    }

    /// Writes a batch: outcomes, harnesses, lineage and run values first, job records last
    /// (each tree's part atomically). Not yet durable: see [`Store::flush`].
    pub fn apply(&self, w: Writes) -> Result<(), Error> {
        if w.is_empty() {
            return Ok(());
        }
        for (tree, batch) in [
            (&self.evaluations, w.evaluations),
            (&self.harnesses, w.harnesses),
            (&self.lineage, w.lineage),
            (&self.meta, w.meta),
            (&self.jobs, w.jobs),
        ] {
            tree.apply_batch(batch).map_err(|e| self.db(e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hx_common::harness::{Component, HarnessDoc, Kind};
    use hx_common::protocol::{JobBudget, JobKind};
    use hx_common::task::{Split, TaskBatch};

    fn harness(steps: i64) -> Harness {
        Harness::from_doc(HarnessDoc {
            components: vec![
                Component::new("act", Kind::FreeGeneration),
                Component::new("steps", Kind::StepBudget).with("max-steps", steps),
            ],
            edges: vec![],
        })
        .expect("valid")
    }

    fn outcome(seed: u64, won: bool) -> TaskOutcome {
        TaskOutcome {
            task: TaskRef {
                suite: "household".into(),
                split: Split::Validation,
                seed,
            },
            won,
            score: f32::from(u8::from(won)),
            steps: 5,
            tokens: 100,
            wall_ms: 10,
            confidence: None,
        }
    }

    fn job(id: JobId, h: &Harness) -> JobRecord {
        JobRecord {
            job: Job {
                id,
                run: "t".into(),
                kind: JobKind::Evaluate { harness: h.clone() },
                tasks: TaskBatch {
                    suite: "household".into(),
                    split: Split::Validation,
                    seeds: vec![0, 1],
                },
                budget: JobBudget {
                    max_steps: 20,
                    max_tokens: 1000,
                    wall_ms: 1000,
                },
                attempt: 1,
            },
            state: JobState::Pending,
            attempts: 1,
        }
    }

    /// A dump loads into a new store with every record equal, job numbers go on after the
    /// loaded ones, and bad dumps are errors naming the line, with nothing written.
    #[test]
    fn a_dump_loads_into_a_new_store_and_bad_lines_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let h = harness(10);
        let mut text = Vec::new();
        let last;
        {
            let s = Store::open(&a).expect("opens");
            s.put_harness(&h).expect("put");
            s.record_evaluation(&h.id(), &outcome(3, true))
                .expect("put");
            s.record_evaluation(&h.id(), &outcome(4, false))
                .expect("put");
            s.put_lineage(&h.id(), &Lineage::seed(None)).expect("put");
            for _ in 0..5 {
                s.next_job_id().expect("id");
            }
            last = s.next_job_id().expect("id");
            s.put_job(&job(last, &h)).expect("put");
            s.set_meta("best", &h.id()).expect("put");
            std::fs::write(a.join("status.json"), br#"{"phase":"final"}"#).expect("write");
            let n = s.dump(&mut text, &["status.json"]).expect("dumps");
            assert_eq!(
                n, 7,
                "1 harness, 2 outcomes, 1 lineage, 1 job, 1 meta, 1 file"
            );
        }
        let s = Store::open(&b).expect("opens");
        let n = s
            .load(&mut text.as_slice(), "run.jsonl", &["status.json"])
            .expect("loads");
        assert_eq!(n, 7);
        assert_eq!(s.harness(&h.id()).expect("get"), Some(h.clone()));
        assert_eq!(s.evaluations(&h.id()).expect("get").len(), 2);
        assert_eq!(s.job(last).expect("get"), Some(job(last, &h)));
        assert_eq!(s.meta::<HarnessId>("best").expect("get"), Some(h.id()));
        assert_eq!(
            s.lineage(&h.id()).expect("get").map(|l| l.operator),
            Some("seed".into())
        );
        assert_eq!(
            std::fs::read(b.join("status.json")).expect("read"),
            br#"{"phase":"final"}"#
        );
        assert!(s.next_job_id().expect("id").0 > last.0, "job numbers go on");
        let mut again = Vec::new();
        s.dump(&mut again, &["status.json"]).expect("dumps");
        assert_eq!(again, text, "a loaded store dumps the same text");

        // Into a store that holds records: refused.
        let e = s
            .load(&mut text.as_slice(), "run.jsonl", &[])
            .expect_err("not empty");
        assert!(matches!(e, Error::NotEmpty { .. }), "{e}");

        // Bad lines: each named, nothing written.
        let line = String::from_utf8(text.clone()).expect("utf8");
        let first = line.lines().next().expect("a line");
        let cases = [
            ("not json".to_owned(), "line 2"),
            (
                first.replace("\"meta\"", "\"metas\""),
                "unknown tree `metas`",
            ),
            (
                first.replace("\"key\":\"", "\"key\":\"zz"),
                "not hexadecimal",
            ),
            (
                format!(
                    r#"{{"tree":"harnesses","key":"{}","value":{{}}}}"#,
                    hex(&h.id().0)
                ),
                "harnesses",
            ),
            (
                line.lines()
                    .find(|l| l.contains("evaluations"))
                    .expect("an outcome")
                    .replace("\"seed\":3", "\"seed\":9"),
                "filed under",
            ),
            (
                r#"{"file":"../etc","value":{}}"#.to_owned(),
                "not one a store keeps",
            ),
        ];
        for (k, (bad, expect)) in cases.iter().enumerate() {
            let c = dir.path().join(format!("c{k}"));
            let s = Store::open(&c).expect("opens");
            let dump = format!("{first}\n{bad}\n");
            let e = s
                .load(&mut dump.as_bytes(), "bad.jsonl", &["status.json"])
                .expect_err("refused");
            let text = e.to_string();
            assert!(text.starts_with("bad.jsonl, line 2: "), "{text}");
            assert!(text.contains(expect), "{text}");
            assert_eq!(
                s.meta::<HarnessId>("best").expect("get"),
                None,
                "nothing written"
            );
        }
    }

    #[test]
    fn a_store_held_open_is_reported_locked_after_the_wait() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _held = Store::open(dir.path()).expect("opens");
        let started = std::time::Instant::now();
        match Store::open(dir.path()) {
            Err(Error::Locked { path }) => assert_eq!(path, dir.path()),
            Err(other) => panic!("expected Locked, got {other}"),
            Ok(_) => panic!("a held store opened twice"),
        }
        assert!(started.elapsed() >= LOCK_WAIT, "gave up before the wait");
    }

    #[test]
    fn records_survive_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let h = harness(10);
        let id;
        {
            let s = Store::open(dir.path()).expect("opens");
            assert!(s.put_harness(&h).expect("puts"));
            assert!(!s.put_harness(&h).expect("puts"));
            assert!(
                s.record_evaluation(&h.id(), &outcome(1, true))
                    .expect("records")
            );
            s.set_meta("started", &42u64).expect("sets");
            id = s.next_job_id().expect("id");
            s.put_job(&job(id, &h)).expect("puts");
            s.flush().expect("flushes");
        }
        let s = Store::open(dir.path()).expect("reopens");
        assert_eq!(
            s.harness(&h.id()).expect("reads").map(|x| x.id()),
            Some(h.id())
        );
        assert_eq!(s.evaluations(&h.id()).expect("reads"), [outcome(1, true)]);
        assert_eq!(s.meta::<u64>("started").expect("reads"), Some(42));
        assert_eq!(
            s.job(id).expect("reads").map(|j| j.state),
            Some(JobState::Pending)
        );
        assert!(
            s.next_job_id().expect("id") > id,
            "job ids are never reused"
        );
    }

    #[test]
    fn an_evaluation_is_recorded_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).expect("opens");
        let h = harness(10);
        assert!(
            s.record_evaluation(&h.id(), &outcome(1, true))
                .expect("records")
        );
        // A second report of the same pair, even a different one, changes nothing.
        assert!(
            !s.record_evaluation(&h.id(), &outcome(1, false))
                .expect("records")
        );
        assert_eq!(s.evaluations(&h.id()).expect("reads"), [outcome(1, true)]);
        // Another harness's evaluations are apart.
        assert!(s.evaluations(&harness(11).id()).expect("reads").is_empty());
    }

    #[test]
    fn an_answer_delivered_twice_records_its_outcomes_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).expect("opens");
        let h = harness(12);
        let mut record = job(s.next_job_id().expect("id"), &h);
        record.state = JobState::Done;
        let lineage = Lineage::seed(Some(record.job.id));
        let outcomes = [outcome(0, true), outcome(1, false)];
        let answer = Answer {
            record: &record,
            child: Some((&h, &lineage)),
            outcomes: &outcomes,
        };
        // Twice in one batch, then again in a later one.
        let mut w = Writes::default();
        assert_eq!(s.record_answer(&mut w, &answer).expect("records"), 2);
        assert_eq!(s.record_answer(&mut w, &answer).expect("records"), 0);
        assert_eq!(s.evaluation_count(), 0, "nothing written before apply");
        s.apply(w).expect("applies");
        let mut w = Writes::default();
        assert_eq!(s.record_answer(&mut w, &answer).expect("records"), 0);
        s.apply(w).expect("applies");
        assert_eq!(s.evaluation_count(), 2);
        assert_eq!(s.lineage(&h.id()).expect("reads"), Some(lineage));
        assert_eq!(s.job(record.job.id).expect("reads"), Some(record.clone()));
    }

    #[test]
    fn job_records_name_their_harnesses_and_read_back_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).expect("opens");
        let h = harness(13);
        let record = job(s.next_job_id().expect("id"), &h);
        s.put_job(&record).expect("puts");
        // The harness went to its own tree; the record is small and names it.
        assert_eq!(s.harness(&h.id()).expect("reads"), Some(h.clone()));
        let raw = s
            .jobs
            .get(record.job.id.0.to_be_bytes())
            .expect("gets")
            .expect("there");
        let raw = String::from_utf8_lossy(&raw);
        assert!(
            raw.contains(&h.id().to_string()) && !raw.contains("max-steps"),
            "{raw}"
        );
        assert_eq!(s.job(record.job.id).expect("reads"), Some(record.clone()));
        // A record written whole (as stores did before) still reads.
        let old = job(s.next_job_id().expect("id"), &harness(14));
        s.jobs
            .insert(old.job.id.0.to_be_bytes(), json(&old))
            .expect("inserts");
        assert_eq!(s.jobs().expect("reads"), [record.clone(), old]);
        // A record naming a harness the store lacks is an error naming the job.
        s.harnesses.remove(h.id().0).expect("removes");
        let e = s.job(record.job.id).expect_err("dangling");
        assert!(
            e.to_string().contains(&format!("key {}", record.job.id))
                && e.to_string().contains("does not hold"),
            "{e}"
        );
    }

    #[test]
    fn corrupt_values_are_errors_naming_tree_and_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).expect("opens");
        let h = harness(10);
        s.meta
            .insert("best", b"{not json".to_vec())
            .expect("inserts");
        let e = s.meta::<String>("best").expect_err("corrupt");
        assert!(e.to_string().contains("tree meta, key best"), "{e}");
        // A harness stored under another harness's id is caught by its id.
        s.harnesses
            .insert(harness(11).id().0, json(&h))
            .expect("inserts");
        let e = s.harness(&harness(11).id()).expect_err("wrong id");
        assert!(e.to_string().contains("has id"), "{e}");
    }
}
