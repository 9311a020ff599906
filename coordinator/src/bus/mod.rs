//! The job bus: how the scheduler hands jobs to workers and hears their results. The scheduler
//! sees only [`JobBus`]; jobs and results cross it encoded with [`hx_common::protocol`], so the
//! in-process bus exercises the same decoding and checks as a network one. Two buses:
//! [`LocalBus`] (worker threads in this process, the default of `hx evolve`) and [`NatsBus`]
//! (workers anywhere, over NATS JetStream, for `hx coordinator`).
//!
//! A result is acknowledged only after the scheduler has stored it ([`Delivery::ack`]), so a
//! coordinator killed between the two hears it again on restart; the store records it once.

mod nats;

pub use nats::NatsBus;

use std::collections::BTreeMap;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use hx_common::config::AdapterOptions;
use hx_common::protocol::{self, Job, WorkerBeat};
use hx_model::ModelBackend;

/// Carries jobs to workers and results back.
pub trait JobBus {
    /// Sends a job to some worker.
    fn submit(&mut self, job: &Job) -> anyhow::Result<()>;
    /// The next result, waiting at most `timeout`; `None` if none came.
    fn recv(&mut self, timeout: Duration) -> anyhow::Result<Option<Delivery>>;
    /// Workers known to be alive.
    fn workers(&self) -> usize;
    /// What the live workers last said about themselves, where the bus knows.
    fn worker_beats(&self) -> Vec<WorkerBeat> {
        Vec::new()
    }
}

type Acker = Box<dyn FnOnce() -> anyhow::Result<()> + Send>;

/// A result as it came off the bus, to be acknowledged once stored.
pub struct Delivery {
    /// The encoded [`hx_common::protocol::JobResult`].
    pub bytes: Vec<u8>,
    ack: Option<Acker>,
}

impl Delivery {
    /// A delivery that needs no acknowledgement.
    pub fn new(bytes: Vec<u8>) -> Delivery {
        Delivery { bytes, ack: None }
    }

    /// A delivery acknowledged by `ack`.
    pub fn with_ack(
        bytes: Vec<u8>,
        ack: impl FnOnce() -> anyhow::Result<()> + Send + 'static,
    ) -> Delivery {
        Delivery {
            bytes,
            ack: Some(Box::new(ack)),
        }
    }

    /// Says the result is stored: the bus will not deliver it again.
    pub fn ack(self) -> anyhow::Result<()> {
        self.ack.map_or(Ok(()), |a| a())
    }
}

/// In-process workers sharing one model: the embedded default of `hx evolve`.
pub struct LocalBus {
    jobs: Option<Sender<Vec<u8>>>,
    results: Receiver<Vec<u8>>,
    threads: Vec<JoinHandle<()>>,
}

impl LocalBus {
    /// Starts `workers` worker threads, each running one job at a time with `concurrency`
    /// episodes at once, all on `model` (which batches their calls); reflective mutations
    /// ask `proposer`, or `model` where `None`.
    pub fn start(
        model: Arc<dyn ModelBackend>,
        proposer: Option<Arc<dyn ModelBackend>>,
        adapters: BTreeMap<String, AdapterOptions>,
        workers: usize,
        concurrency: usize,
    ) -> LocalBus {
        let (jobs_tx, jobs_rx) = mpsc::channel::<Vec<u8>>();
        let (results_tx, results_rx) = mpsc::channel::<Vec<u8>>();
        let jobs_rx = Arc::new(Mutex::new(jobs_rx));
        let threads = (0..workers.max(1))
            .map(|i| {
                let (jobs, results, model, proposer, adapters) = (
                    Arc::clone(&jobs_rx),
                    results_tx.clone(),
                    Arc::clone(&model),
                    proposer.clone(),
                    adapters.clone(),
                );
                std::thread::Builder::new()
                    .name(format!("hx-local-worker-{i}"))
                    .spawn(move || {
                        let name = format!("local-{i}");
                        loop {
                            let bytes = match jobs.lock().map(|rx| rx.recv()) {
                                Ok(Ok(b)) => b,
                                _ => break,
                            };
                            let job: Job = match protocol::decode(&bytes) {
                                Ok(j) => j,
                                Err(e) => {
                                    tracing::error!("local worker: a job does not decode: {e}");
                                    continue;
                                }
                            };
                            let adapter = adapters.get(&job.tasks.suite);
                            let result = hx_worker::job::run(
                                &job,
                                model.as_ref(),
                                proposer.as_deref(),
                                adapter,
                                &name,
                                concurrency,
                            );
                            match protocol::encode(&result) {
                                Ok(b) => {
                                    if results.send(b).is_err() {
                                        break;
                                    }
                                }
                                Err(e) => tracing::error!("local worker: {e}"),
                            }
                        }
                    })
                    .expect("spawns a worker thread")
            })
            .collect();
        LocalBus {
            jobs: Some(jobs_tx),
            results: results_rx,
            threads,
        }
    }
}

impl JobBus for LocalBus {
    fn submit(&mut self, job: &Job) -> anyhow::Result<()> {
        let bytes = protocol::encode(job)?;
        self.jobs
            .as_ref()
            .expect("open until dropped")
            .send(bytes)
            .map_err(|_| anyhow::anyhow!("every local worker has stopped"))
    }

    fn recv(&mut self, timeout: Duration) -> anyhow::Result<Option<Delivery>> {
        match self.results.recv_timeout(timeout) {
            Ok(b) => Ok(Some(Delivery::new(b))),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => {
                anyhow::bail!("every local worker has stopped")
            }
        }
    }

    fn workers(&self) -> usize {
        self.threads.iter().filter(|t| !t.is_finished()).count()
    }
}

impl Drop for LocalBus {
    fn drop(&mut self) {
        // Closing the job channel ends each worker after its current job.
        self.jobs.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
