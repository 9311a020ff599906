//! The run store: everything a search knows, on disk in sled, so a killed run resumes.
//!
//! One tree per record kind:
//!
//! | tree | key | value |
//! |---|---|---|
//! | `harnesses` | harness id (16 bytes) | the harness, canonical JSON |
//! | `evaluations` | harness id + task (`household/validation/7`) | the task's outcome, JSON |
//! | `lineage` | harness id | parents, operator, adopted rewrites, the job that made it |
//! | `jobs` | job id (8 bytes, big-endian) | the job, its state and attempts |
//! | `meta` | a name (`config`, `started`, `best`, ...) | JSON |
//!
//! Values are JSON so a store stays readable across versions and by other tools. Every value
//! read back is decoded and, for harnesses, validated again; a bad value is an [`Error`] naming
//! the tree and key, never a panic. A job's result is written in one transaction across the
//! trees it touches; the caller flushes (once per batch of results) before it acknowledges
//! them.

use std::path::{Path, PathBuf};

use hx_common::harness::{Harness, HarnessId};
use hx_common::protocol::{Job, JobId, RewriteRecord, TaskOutcome};
use hx_common::task::TaskRef;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sled::Transactional as _;
use sled::transaction::{ConflictableTransactionError, TransactionError};

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
    pub fn open(path: &Path) -> Result<Store, Error> {
        let db = sled::Config::new().path(path).open().map_err(|cause| {
            let locked = matches!(&cause, sled::Error::Io(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.to_string().contains("lock"));
            if locked {
                Error::Locked {
                    path: path.to_owned(),
                }
            } else {
                Error::Open {
                    path: path.to_owned(),
                    cause,
                }
            }
        })?;
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

    /// Stores a job record (new or updated).
    pub fn put_job(&self, record: &JobRecord) -> Result<(), Error> {
        self.jobs
            .insert(record.job.id.0.to_be_bytes(), json(record))
            .map_err(|e| self.db(e))?;
        Ok(())
    }

    /// Every job record, in job order.
    pub fn jobs(&self) -> Result<Vec<JobRecord>, Error> {
        let mut out = Vec::new();
        for kv in self.jobs.iter() {
            let (k, v) = kv.map_err(|e| self.db(e))?;
            out.push(self.decode("jobs", format!("{k:?}"), &v)?);
        }
        Ok(out)
    }

    /// One job record.
    pub fn job(&self, id: JobId) -> Result<Option<JobRecord>, Error> {
        match self.jobs.get(id.0.to_be_bytes()).map_err(|e| self.db(e))? {
            None => Ok(None),
            Some(v) => self.decode("jobs", id.to_string(), &v).map(Some),
        }
    }

    /// Sets a run-level value.
    pub fn set_meta<T: Serialize>(&self, key: &str, value: &T) -> Result<(), Error> {
        self.meta.insert(key, json(value)).map_err(|e| self.db(e))?;
        Ok(())
    }

    /// A run-level value.
    pub fn meta<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        match self.meta.get(key).map_err(|e| self.db(e))? {
            None => Ok(None),
            Some(v) => self.decode("meta", key.to_owned(), &v).map(Some),
        }
    }

    /// Records an answered job in one transaction (its new state, the child and its lineage,
    /// the outcomes not yet recorded); [`Store::flush`] makes it durable. Returns how many outcomes were new: an
    /// answer delivered twice records its outcomes once.
    pub fn record_answer(&self, answer: &Answer<'_>) -> Result<usize, Error> {
        let evaluated = answer.child.map(|(h, _)| h.id());
        let result = (
            &self.jobs,
            &self.harnesses,
            &self.lineage,
            &self.evaluations,
        )
            .transaction(|(jobs, harnesses, lineage, evaluations)| {
                jobs.insert(&answer.record.job.id.0.to_be_bytes(), json(answer.record))?;
                let mut new = 0;
                if let (Some((h, l)), Some(id)) = (answer.child, evaluated) {
                    if harnesses.get(id.0)?.is_none() {
                        harnesses.insert(&id.0, json(h))?;
                    }
                    if lineage.get(id.0)?.is_none() {
                        lineage.insert(&id.0, json(l))?;
                    }
                    for o in answer.outcomes {
                        let key = eval_key(&id, &o.task);
                        if evaluations.get(&key)?.is_none() {
                            evaluations.insert(key, json(o))?;
                            new += 1;
                        }
                    }
                }
                Ok::<usize, ConflictableTransactionError<()>>(new)
            });
        match result {
            Ok(n) => Ok(n),
            Err(TransactionError::Storage(e)) => Err(self.db(e)),
            Err(TransactionError::Abort(())) => unreachable!("the transaction never aborts"),
        }
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
        let lineage = Lineage {
            parents: vec![],
            operator: "seed".into(),
            adopted: vec![],
            job: Some(record.job.id),
            at_ms: 0,
        };
        let outcomes = [outcome(0, true), outcome(1, false)];
        let answer = Answer {
            record: &record,
            child: Some((&h, &lineage)),
            outcomes: &outcomes,
        };
        assert_eq!(s.record_answer(&answer).expect("records"), 2);
        assert_eq!(s.record_answer(&answer).expect("records"), 0);
        assert_eq!(s.evaluation_count(), 2);
        assert_eq!(s.lineage(&h.id()).expect("reads"), Some(lineage));
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
