//! The worker's job loop over NATS JetStream (connection, streams and bucket come from
//! [`hx_bus`]).
//!
//! Jobs sit in a work-queue stream and are taken through one durable pull consumer that
//! every worker shares. A worker fetches only as many jobs as it has free slots (so a fast
//! worker cannot hoard the queue), reports progress on each job while it runs so long episodes
//! outlive the ack wait, publishes the result under a message id that makes a second answer
//! to the same job a duplicate the server drops, and acknowledges the job only once the
//! result is stored. A worker killed mid-job never acknowledges: the job is delivered again
//! after the ack wait, up to the delivery limit. The consumer allows one delivery more than
//! the limit: on that one a worker does not run the job but dead-letters it and publishes a
//! failed result for it, so a job that keeps killing workers is given up even while no
//! coordinator is listening (the coordinator also dead-letters a job the server reports as
//! past its deliveries, should that last delivery be lost too). A job no worker can decode
//! is dead-lettered at once, with the reason, and the worker goes
//! on. Names and encodings come from [`hx_common::protocol`] only.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result};
use async_nats::HeaderMap;
use async_nats::jetstream::{self, AckKind, consumer};
use futures_util::StreamExt as _;
use hx_bus::{BEAT_EVERY, Endpoint, beat_key, connect, now_ms, one_line, workers_bucket};
use hx_common::backoff::Backoff;
use hx_common::config::AdapterOptions;
use hx_common::protocol::{self, Job, JobResult, JobStatus, WorkerBeat, subjects};
use hx_model::ModelBackend;
use tracing::Instrument as _;

/// What a worker does with a job: run it (the real thing), or in benchmarks, answer at once.
pub type Handler = Arc<dyn Fn(&Job) -> JobResult + Send + Sync>;

/// The real handler: [`crate::job::run`] with `model` (and `proposer` for reflective
/// mutations, the agents' model where `None`), `concurrency` episodes at once.
pub fn run_jobs_with(
    model: Arc<dyn ModelBackend>,
    proposer: Option<Arc<dyn ModelBackend>>,
    adapters: BTreeMap<String, AdapterOptions>,
    name: String,
    concurrency: usize,
) -> Handler {
    Arc::new(move |job: &Job| {
        crate::job::run(
            job,
            model.as_ref(),
            proposer.as_deref(),
            adapters.get(&job.tasks.suite),
            &name,
            concurrency,
        )
    })
}

/// A worker's settings for the job loop.
#[derive(Clone)]
pub struct WorkerLoop {
    /// Where the server is.
    pub endpoint: Endpoint,
    /// The worker's name in the bucket and in results.
    pub name: String,
    /// What it reports as its model.
    pub model: String,
    /// Jobs run at once.
    pub slots: u32,
    /// What to do with a job.
    pub handler: Handler,
}

/// Runs the job loop until `stop` is set, then finishes the jobs it holds and returns.
pub fn serve(cfg: WorkerLoop, stop: Arc<AtomicBool>) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("hx-nats")
        .build()
        .context("starting the async runtime")?;
    rt.block_on(serve_async(cfg, stop))
}

struct Counters {
    busy: AtomicU32,
    jobs_done: AtomicU64,
    episodes: AtomicU64,
}

async fn serve_async(cfg: WorkerLoop, stop: Arc<AtomicBool>) -> Result<()> {
    // Ctrl-C or SIGTERM: take no new jobs, finish those in hand, leave; asked again, leave
    // now (JetStream sends the jobs in hand to another worker once their ack-wait passes).
    {
        let stop = Arc::clone(&stop);
        let mut requests = crate::signal::StopRequests::listen()?;
        tokio::spawn(async move {
            requests.next().await;
            tracing::info!("asked to stop: finishing the jobs in hand (ask again to leave now)");
            stop.store(true, Ordering::Relaxed);
            requests.next().await;
            tracing::warn!("asked to stop again: leaving the jobs in hand to other workers");
            std::process::exit(crate::signal::EXIT_ASKED_TWICE);
        });
    }
    let client = connect(&cfg.endpoint, &cfg.name, true).await?;
    let js = jetstream::new(client.clone());
    let mut waited = false;
    let consumer: consumer::PullConsumer = loop {
        match js
            .get_consumer_from_stream(subjects::WORKERS_CONSUMER, subjects::JOBS_STREAM)
            .await
        {
            Ok(c) => break c,
            Err(e) => {
                if !waited {
                    tracing::info!(cause = %e, "waiting for a coordinator to declare the job queue");
                    waited = true;
                }
                if stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    let ack_wait = consumer.cached_info().config.ack_wait;
    let may_run = consumer.cached_info().config.max_deliver - 1;
    let kv = workers_bucket(&js).await?;
    let counters = Arc::new(Counters {
        busy: AtomicU32::new(0),
        jobs_done: AtomicU64::new(0),
        episodes: AtomicU64::new(0),
    });
    let started_ms = now_ms();
    let beat = {
        let (kv, counters, cfg) = (kv.clone(), Arc::clone(&counters), cfg.clone());
        tokio::spawn(async move {
            loop {
                let b = WorkerBeat {
                    worker: cfg.name.clone(),
                    model: cfg.model.clone(),
                    slots: cfg.slots,
                    busy: counters.busy.load(Ordering::Relaxed),
                    jobs_done: counters.jobs_done.load(Ordering::Relaxed),
                    episodes: counters.episodes.load(Ordering::Relaxed),
                    started_ms,
                    sent_ms: now_ms(),
                };
                if let Ok(bytes) = protocol::encode(&b)
                    && let Err(e) = kv.put(beat_key(&cfg.name), bytes.into()).await
                {
                    tracing::warn!(cause = %e, "heartbeat not stored");
                }
                tokio::time::sleep(BEAT_EVERY).await;
            }
        })
    };
    tracing::info!(worker = %cfg.name, slots = cfg.slots, "taking jobs");
    let slots = Arc::new(tokio::sync::Semaphore::new(cfg.slots.max(1) as usize));
    let mut running = tokio::task::JoinSet::new();
    while !stop.load(Ordering::Relaxed) {
        // Wait for a free slot, then ask for as many jobs as there are free slots.
        let first = tokio::select! {
            p = Arc::clone(&slots).acquire_owned() => p.context("slots closed")?,
            _ = tokio::time::sleep(Duration::from_millis(250)) => continue,
        };
        let free = 1 + slots.available_permits();
        let batch = consumer
            .fetch()
            .max_messages(free)
            .expires(Duration::from_millis(500))
            .messages()
            .await;
        let mut batch = match batch {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(cause = %e, "fetching jobs failed; retrying");
                drop(first);
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let mut permit = Some(first);
        while let Some(msg) = batch.next().await {
            let msg = match msg {
                Ok(m) => m,
                Err(e) => {
                    tracing::debug!(cause = %e, "fetch ended");
                    break;
                }
            };
            let p = match permit.take() {
                Some(p) => p,
                None => match Arc::clone(&slots).try_acquire_owned() {
                    Ok(p) => p,
                    // More than asked for cannot come; wait rather than drop it.
                    Err(_) => Arc::clone(&slots)
                        .acquire_owned()
                        .await
                        .context("slots closed")?,
                },
            };
            let (js, cfg, counters) = (js.clone(), cfg.clone(), Arc::clone(&counters));
            running.spawn(async move {
                counters.busy.fetch_add(1, Ordering::Relaxed);
                handle(msg, &js, &cfg, &counters, ack_wait, may_run).await;
                counters.busy.fetch_sub(1, Ordering::Relaxed);
                drop(p);
            });
        }
        while running.try_join_next().is_some() {}
    }
    tracing::info!(
        running = running.len(),
        "stopping: finishing the jobs in hand"
    );
    while running.join_next().await.is_some() {}
    beat.abort();
    let _ = kv.delete(beat_key(&cfg.name)).await;
    let _ = client.flush().await;
    Ok(())
}

async fn handle(
    msg: jetstream::Message,
    js: &jetstream::Context,
    cfg: &WorkerLoop,
    counters: &Counters,
    ack_wait: Duration,
    may_run: i64,
) {
    let subject = msg.subject.to_string();
    let (seq, delivered) = msg
        .info()
        .map(|i| (i.stream_sequence, i.delivered))
        .unwrap_or((0, 0));
    let run = subjects::run_of_job_subject(&subject).map(str::to_owned);
    let job = match protocol::decode::<Job>(&msg.payload) {
        Ok(job) if Some(job.run.as_str()) == run.as_deref() => job,
        Ok(job) => {
            let why = format!("job names run {:?} but came on {subject}", job.run);
            dead_letter(js, &msg, run.as_deref(), &why).await;
            return;
        }
        Err(e) => {
            dead_letter(js, &msg, run.as_deref(), &e.to_string()).await;
            return;
        }
    };
    let span = tracing::info_span!("job", job = %job.id, run = %job.run, seq, delivered);
    if may_run > 0 && delivered > may_run {
        give_up(msg, &job, js, &cfg.name, delivered - 1)
            .instrument(span)
            .await;
        return;
    }
    run_job(msg, job, js, cfg, counters, ack_wait)
        .instrument(span)
        .await;
}

async fn run_job(
    msg: jetstream::Message,
    job: Job,
    js: &jetstream::Context,
    cfg: &WorkerLoop,
    counters: &Counters,
    ack_wait: Duration,
) {
    tracing::info!("job started");
    // Keep the job ours while it runs: a progress report restarts the ack wait.
    let keep = {
        let msg = msg.clone();
        let every = (ack_wait / 3).max(Duration::from_millis(100));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = msg.ack_with(AckKind::Progress).await {
                    tracing::warn!(cause = %e, "progress report failed");
                }
            }
        })
    };
    let handler = Arc::clone(&cfg.handler);
    let for_run = job.clone();
    let span = tracing::Span::current();
    let result = tokio::task::spawn_blocking(move || span.in_scope(|| handler(&for_run)))
        .await
        .unwrap_or_else(|e| failed(&job, &cfg.name, &format!("the job panicked: {e}")));
    let bytes = match protocol::encode(&result) {
        Ok(b) => b,
        Err(e) => protocol::encode(&failed(&job, &cfg.name, &format!("result: {e}")))
            .expect("a failure without outcomes encodes"),
    };
    let outcomes = result.outcomes.len() as u64;
    // Publish until the server has it; only then let the job go.
    let mut waits = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        match publish_result(js, &job, &bytes).await {
            Ok(()) => break,
            Err(e) => tracing::warn!(cause = %e, "result not stored yet; retrying"),
        }
        tokio::time::sleep(waits.next().unwrap_or_default()).await;
    }
    keep.abort();
    if let Err(e) = msg.double_ack().await {
        // The result is stored; a redelivery will be answered again and dropped as a duplicate.
        tracing::warn!(cause = %e, "job acknowledgement lost");
    }
    counters.jobs_done.fetch_add(1, Ordering::Relaxed);
    counters.episodes.fetch_add(outcomes, Ordering::Relaxed);
    tracing::info!(outcomes, "job answered");
}

/// Gives up a job delivered `runs` times without an answer: its failed result first (so the
/// coordinator hears of it, now or when it comes back), then the job to the dead letters.
async fn give_up(
    msg: jetstream::Message,
    job: &Job,
    js: &jetstream::Context,
    worker: &str,
    runs: i64,
) {
    let why = format!("delivered {runs} times without an answer; dead-lettered");
    let bytes = protocol::encode(&failed(job, worker, &why)).expect("a failure encodes");
    match publish_result(js, job, &bytes).await {
        Ok(()) => dead_letter(js, &msg, Some(&job.run), &why).await,
        // Left unacknowledged: the server reports it past its deliveries and the
        // coordinator gives it up.
        Err(e) => tracing::warn!(cause = %e, "failed result not stored"),
    }
}

/// Publishes an encoded result of `job` under its message id (so a second answer to the same
/// job is dropped by the server) and waits until the server has stored it.
async fn publish_result(js: &jetstream::Context, job: &Job, bytes: &[u8]) -> Result<()> {
    let mut headers = HeaderMap::new();
    headers.insert(subjects::JOB_HEADER, job.id.to_string().as_str());
    js.send_publish(
        subjects::results(&job.run),
        jetstream::context::Publish::build()
            .payload(bytes.to_vec().into())
            .headers(headers)
            .message_id(subjects::result_msg_id(&job.run, job.id)),
    )
    .await?
    .await?;
    Ok(())
}

fn failed(job: &Job, worker: &str, reason: &str) -> JobResult {
    JobResult::new(
        job,
        worker,
        JobStatus::Failed {
            reason: reason.to_owned(),
        },
    )
}

/// Moves a job nobody can run to the dead-letter stream with its reason, then takes it off
/// the queue.
async fn dead_letter(
    js: &jetstream::Context,
    msg: &jetstream::Message,
    run: Option<&str>,
    why: &str,
) {
    tracing::error!(subject = %msg.subject, reason = %why, "job dead-lettered");
    let mut headers = HeaderMap::new();
    headers.insert(subjects::REASON_HEADER, one_line(why).as_str());
    let stored = match js
        .publish_with_headers(
            subjects::dead(run.unwrap_or("unknown")),
            headers,
            msg.payload.clone(),
        )
        .await
    {
        Ok(ack) => ack.await.map(|_| ()).map_err(anyhow::Error::from),
        Err(e) => Err(e.into()),
    };
    match stored {
        Ok(()) => {
            if let Err(e) = msg.double_ack().await {
                tracing::warn!(cause = %e, "dead job not taken off the queue");
            }
        }
        // Left on the queue: it comes back after the ack wait and is tried again.
        Err(e) => tracing::warn!(cause = %e, "dead letter not stored"),
    }
}
