//! [`NatsBus`]: the scheduler's side of a distributed run over NATS JetStream.
//!
//! Jobs are published on the run's job subject under a message id (a job published again by
//! a resumed coordinator, or a publish retried after a lost acknowledgement, is stored once)
//! and publishes are pipelined: their acknowledgements are collected in batches. Results come
//! through the run's durable consumer and are acknowledged only after the scheduler has
//! stored them. A job JetStream gave up on (delivered the maximum number of times without an
//! answer) is announced by an advisory: the bus turns it into a failed result for the
//! scheduler and, once that is stored, moves the job to the dead-letter stream. Live workers
//! are read from the workers bucket every few seconds.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, context::Publish, context::PublishAckFuture};
use futures_util::StreamExt as _;
use hx_bus::{ConsumerLimits, Endpoint};
use hx_common::backoff::Backoff;
use hx_common::protocol::{self, Job, JobId, JobResult, JobStatus, WorkerBeat, subjects};
use tokio::sync::mpsc;

use super::{Delivery, JobBus};

/// How many publishes may wait for their acknowledgement before the bus waits for them.
const PIPELINE: usize = 1024;
/// How long a publish is retried while the server is away before the bus gives up.
const PUBLISH_PATIENCE: Duration = Duration::from_secs(120);

enum Incoming {
    Result(Box<jetstream::Message>),
    GaveUp { seq: u64, deliveries: i64 },
}

/// A job published and not yet acknowledged by the server.
struct Unconfirmed {
    job: JobId,
    bytes: Vec<u8>,
    ack: PublishAckFuture,
}

/// The coordinator's connection to a distributed run.
pub struct NatsBus {
    rt: tokio::runtime::Runtime,
    js: jetstream::Context,
    run: String,
    incoming: mpsc::Receiver<Incoming>,
    unconfirmed: Vec<Unconfirmed>,
    beats: Arc<Mutex<Vec<WorkerBeat>>>,
}

impl NatsBus {
    /// Connects, declares the streams, the workers' consumer (with `limits`) and the run's
    /// results consumer, and starts listening.
    pub fn connect(run: &str, endpoint: &Endpoint, limits: ConsumerLimits) -> Result<NatsBus> {
        protocol::check_run_name(run).map_err(|e| anyhow::anyhow!("run.name: {e}"))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .thread_name("hx-coordinator-nats")
            .build()
            .context("starting the async runtime")?;
        let (tx, incoming) = mpsc::channel(4 * PIPELINE);
        let beats = Arc::new(Mutex::new(Vec::new()));
        let js = rt.block_on(async {
            let client = hx_bus::connect(endpoint, &format!("hx-coordinator-{run}"), false).await?;
            let js = jetstream::new(client.clone());
            hx_bus::declare(&js, limits).await?;
            let results = js
                .get_stream(subjects::RESULTS_STREAM)
                .await
                .context("opening the results stream")?;
            let consumer: consumer::PullConsumer = results
                .create_consumer(consumer::pull::Config {
                    durable_name: Some(subjects::coordinator_consumer(run)),
                    filter_subject: subjects::results(run),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: Duration::from_secs(60),
                    max_ack_pending: 4 * PIPELINE as i64,
                    ..Default::default()
                })
                .await
                .context("declaring the results consumer")?;
            let advisories = client
                .subscribe(subjects::MAX_DELIVERIES_ADVISORY)
                .await
                .context("subscribing to delivery advisories")?;
            let kv = hx_bus::workers_bucket(&js).await?;
            tokio::spawn(feed_results(consumer, tx.clone()));
            tokio::spawn(feed_advisories(advisories, tx));
            tokio::spawn(watch_workers(kv, Arc::clone(&beats)));
            anyhow::Ok(js)
        })?;
        Ok(NatsBus {
            rt,
            js,
            run: run.to_owned(),
            incoming,
            unconfirmed: Vec::new(),
            beats,
        })
    }

    fn publish(&self, job: JobId, bytes: &[u8]) -> Result<PublishAckFuture> {
        let mut headers = HeaderMap::new();
        headers.insert(subjects::JOB_HEADER, job.to_string().as_str());
        let publish = Publish::build()
            .payload(bytes.to_vec().into())
            .headers(headers)
            .message_id(subjects::job_msg_id(&self.run, job));
        self.rt
            .block_on(self.js.send_publish(subjects::jobs(&self.run), publish))
            .with_context(|| format!("publishing {job}"))
    }

    /// Waits for every pipelined publish to be stored, publishing again what was not (the
    /// message id makes a publish that did land and is sent again count once).
    fn confirm(&mut self) -> Result<()> {
        let started = Instant::now();
        let mut waits = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut round: Vec<(JobId, Vec<u8>, Option<PublishAckFuture>)> =
            std::mem::take(&mut self.unconfirmed)
                .into_iter()
                .map(|u| (u.job, u.bytes, Some(u.ack)))
                .collect();
        loop {
            let sent: Vec<bool> = round.iter().map(|r| r.2.is_some()).collect();
            let acks: Vec<_> = round
                .iter_mut()
                .filter_map(|r| r.2.take())
                .map(std::future::IntoFuture::into_future)
                .collect();
            let mut answers = self
                .rt
                .block_on(futures_util::future::join_all(acks))
                .into_iter();
            let mut again = Vec::new();
            for ((job, bytes, _), sent) in round.into_iter().zip(sent) {
                // A job whose publish failed outright has no answer to wait for.
                match sent.then(|| answers.next()).flatten() {
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        tracing::warn!(job = %job, cause = %e, "job not stored yet; publishing again");
                        again.push((job, bytes));
                    }
                    None => again.push((job, bytes)),
                }
            }
            if again.is_empty() {
                return Ok(());
            }
            if started.elapsed() > PUBLISH_PATIENCE {
                bail!(
                    "{} jobs were not stored by the NATS server in {}s",
                    again.len(),
                    PUBLISH_PATIENCE.as_secs()
                );
            }
            std::thread::sleep(waits.next().unwrap_or_default());
            round = again
                .into_iter()
                .map(|(job, bytes)| {
                    let ack = self
                        .publish(job, &bytes)
                        .inspect_err(|e| tracing::warn!(job = %job, cause = %e, "publish failed"))
                        .ok();
                    (job, bytes, ack)
                })
                .collect();
        }
    }

    /// A failed result for a job JetStream gave up on; acknowledging it moves the job to the
    /// dead-letter stream. `None` when the job is another run's.
    fn gave_up(&self, seq: u64, deliveries: i64) -> Result<Option<Delivery>> {
        let js = self.js.clone();
        let msg = self.rt.block_on(async {
            let stream = js.get_stream(subjects::JOBS_STREAM).await?;
            anyhow::Ok(stream.get_raw_message(seq).await?)
        });
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(seq, cause = %e, "a job past its delivery limit is gone already");
                return Ok(None);
            }
        };
        if subjects::run_of_job_subject(&msg.subject) != Some(self.run.as_str()) {
            return Ok(None);
        }
        let Ok(job) = protocol::decode::<Job>(&msg.payload) else {
            // Undecodable jobs are dead-lettered by workers; this one kept killing them.
            return Ok(None);
        };
        let reason = format!("delivered {deliveries} times without an answer; dead-lettered");
        tracing::error!(job = %job.id, seq, "{reason}");
        let result = JobResult::new(
            &job,
            "nats",
            JobStatus::Failed {
                reason: reason.clone(),
            },
        );
        let bytes = protocol::encode(&result)?;
        let handle = self.rt.handle().clone();
        let run = self.run.clone();
        Ok(Some(Delivery::with_ack(bytes, move || {
            handle.block_on(async move {
                let mut headers = HeaderMap::new();
                headers.insert(subjects::REASON_HEADER, hx_bus::one_line(&reason).as_str());
                js.publish_with_headers(subjects::dead(&run), headers, msg.payload)
                    .await?
                    .await?;
                js.get_stream(subjects::JOBS_STREAM)
                    .await?
                    .delete_message(seq)
                    .await?;
                anyhow::Ok(())
            })
        })))
    }
}

impl JobBus for NatsBus {
    fn submit(&mut self, job: &Job) -> Result<()> {
        let bytes = protocol::encode(job)?;
        let ack = self.publish(job.id, &bytes)?;
        self.unconfirmed.push(Unconfirmed {
            job: job.id,
            bytes,
            ack,
        });
        if self.unconfirmed.len() >= PIPELINE {
            self.confirm()?;
        }
        Ok(())
    }

    fn recv(&mut self, timeout: Duration) -> Result<Option<Delivery>> {
        if !self.unconfirmed.is_empty() {
            self.confirm()?;
        }
        let deadline = Instant::now() + timeout;
        loop {
            let next = match self.incoming.try_recv() {
                Ok(m) => Some(m),
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    bail!("the NATS listeners stopped")
                }
                Err(mpsc::error::TryRecvError::Empty) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(None);
                    }
                    let rx = &mut self.incoming;
                    self.rt
                        .block_on(async { tokio::time::timeout(left, rx.recv()).await })
                        .ok()
                        .flatten()
                }
            };
            match next {
                None => return Ok(None),
                Some(Incoming::Result(msg)) => {
                    let bytes = msg.payload.to_vec();
                    let handle = self.rt.handle().clone();
                    return Ok(Some(Delivery::with_ack(bytes, move || {
                        handle
                            .block_on(msg.ack())
                            .map_err(|e| anyhow::anyhow!("acknowledging a result: {e}"))
                    })));
                }
                Some(Incoming::GaveUp { seq, deliveries }) => {
                    if let Some(d) = self.gave_up(seq, deliveries)? {
                        return Ok(Some(d));
                    }
                }
            }
        }
    }

    fn workers(&self) -> usize {
        self.beats.lock().map_or(0, |b| b.len())
    }

    fn worker_beats(&self) -> Vec<WorkerBeat> {
        self.beats.lock().map(|b| b.clone()).unwrap_or_default()
    }
}

async fn feed_results(consumer: consumer::PullConsumer, tx: mpsc::Sender<Incoming>) {
    loop {
        match consumer.messages().await {
            Ok(mut msgs) => {
                while let Some(m) = msgs.next().await {
                    match m {
                        Ok(m) => {
                            if tx.send(Incoming::Result(Box::new(m))).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => tracing::debug!(cause = %e, "results stream hiccup"),
                    }
                }
            }
            Err(e) => tracing::warn!(cause = %e, "reading results failed; retrying"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[derive(serde::Deserialize)]
struct MaxDeliveries {
    stream_seq: u64,
    deliveries: i64,
}

async fn feed_advisories(mut sub: async_nats::Subscriber, tx: mpsc::Sender<Incoming>) {
    while let Some(m) = sub.next().await {
        match serde_json::from_slice::<MaxDeliveries>(&m.payload) {
            Ok(a) => {
                let gave_up = Incoming::GaveUp {
                    seq: a.stream_seq,
                    deliveries: a.deliveries,
                };
                if tx.send(gave_up).await.is_err() {
                    return;
                }
            }
            Err(e) => tracing::warn!(cause = %e, "a delivery advisory does not parse"),
        }
    }
}

async fn watch_workers(kv: jetstream::kv::Store, beats: Arc<Mutex<Vec<WorkerBeat>>>) {
    loop {
        match hx_bus::live_workers(&kv).await {
            Ok(live) => {
                if let Ok(mut b) = beats.lock() {
                    *b = live;
                }
            }
            Err(e) => tracing::debug!(cause = %e, "listing workers failed"),
        }
        tokio::time::sleep(hx_bus::BEAT_EVERY).await;
    }
}
