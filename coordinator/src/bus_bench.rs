//! `hx bench bus`: how fast a distributed run moves jobs, apart from evaluating them.
//!
//! Starts a private `nats-server` (JetStream, loopback, a temporary store), then:
//! 1. the reference: a bare client publishes messages the size of a job into a work-queue
//!    stream (publishes pipelined, acknowledgements awaited) while a pull consumer takes and
//!    acknowledges them, and the rate of messages through is measured;
//! 2. end to end, for each worker count: the real scheduler ([`Search`]) over [`NatsBus`]
//!    with that many real worker loops ([`hx_worker::nats::serve`]) whose jobs are evaluated
//!    instantly (an outcome per task, no model), so every cost left is the transport's and the
//!    coordinator's. Reports jobs/s and the coordinator's CPU time per job (its threads'
//!    user and system time from /proc).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt as _;
use hx_common::config::{Experiment, NatsAuth, parse_toml};
use hx_common::harness::algebra::{Edit, TextEdit};
use hx_common::harness::format::{Format, parse_as};
use hx_common::protocol::{self, Job, JobKind, JobResult, JobStatus, TaskOutcome};
use serde::Serialize;

use crate::bus::NatsBus;
use crate::search::Search;
use crate::store::Store;

/// What to measure.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Worker counts to run end to end.
    pub workers: Vec<usize>,
    /// Episodes (one per job) each end-to-end run is budgeted.
    pub jobs: u64,
    /// Messages through the bare reference.
    pub bare_messages: usize,
    /// Jobs in flight at most.
    pub in_flight: usize,
}

/// One end-to-end run.
#[derive(Debug, Clone, Serialize)]
pub struct EndToEnd {
    /// Worker loops.
    pub workers: usize,
    /// Jobs answered and recorded.
    pub jobs: u64,
    /// Wall seconds from the first job to the last result.
    pub wall_s: f64,
    /// Jobs per second.
    pub jobs_per_s: f64,
    /// Coordinator CPU (scheduler and its NATS threads) per job, in microseconds.
    pub coordinator_cpu_us_per_job: f64,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `nats-server --version`.
    pub server: String,
    /// Bytes per message in the reference (a typical encoded job).
    pub message_bytes: usize,
    /// Reference: messages per second published and consumed with acknowledgements.
    pub bare_msgs_per_s: f64,
    /// End-to-end runs.
    pub end_to_end: Vec<EndToEnd>,
}

/// A private JetStream server, killed and its store removed on drop.
struct Server {
    child: Child,
    dir: PathBuf,
    url: String,
}

impl Server {
    fn start() -> Result<Server> {
        let dir = std::env::temp_dir().join(format!("hx-bench-nats-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let log = dir.join("nats.log");
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", "-1", "-sd"])
            .arg(dir.join("js"))
            .arg("-l")
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting nats-server (Debian: apt-get install nats-server)")?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(addr) = text
                .lines()
                .find_map(|l| l.split("Listening for client connections on ").nth(1))
            {
                let url = format!("nats://{}", addr.trim());
                return Ok(Server { child, dir, url });
            }
            if Instant::now() > deadline {
                bail!("nats-server did not start: {text}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const REACT: &str = include_str!("../../configs/harnesses/react.toml");

/// Runs the plan; `say` hears progress.
pub fn run(plan: &Plan, say: &mut dyn FnMut(&str)) -> Result<Report> {
    let server = Server::start()?;
    let version = Command::new("nats-server")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    say(&format!("{version} at {}", server.url));
    let seed = parse_as(REACT, Format::Toml, "react.toml")?;
    let sample = Job {
        id: protocol::JobId(1),
        run: "bench".into(),
        kind: JobKind::Evaluate {
            harness: seed.clone(),
        },
        tasks: hx_common::task::TaskBatch {
            suite: "household".into(),
            split: hx_common::task::Split::Train,
            seeds: vec![0],
        },
        budget: protocol::JobBudget {
            max_steps: 1,
            max_tokens: 1,
            wall_ms: 1,
        },
        attempt: 1,
    };
    let message_bytes = protocol::encode(&sample)?.len();
    let bare = bare_rate(&server.url, plan.bare_messages, message_bytes)?;
    say(&format!(
        "bare JetStream: {bare:.0} messages/s of {message_bytes} bytes, published and consumed"
    ));
    let mut end_to_end = Vec::new();
    for &w in &plan.workers {
        let e = end_to_end_run(&server.url, w, plan, &seed)?;
        say(&format!(
            "{w} workers: {} jobs in {:.2}s = {:.0} jobs/s; coordinator CPU {:.0} us/job",
            e.jobs, e.wall_s, e.jobs_per_s, e.coordinator_cpu_us_per_job
        ));
        end_to_end.push(e);
    }
    Ok(Report {
        server: version,
        message_bytes,
        bare_msgs_per_s: bare,
        end_to_end,
    })
}

fn bare_rate(url: &str, n: usize, size: usize) -> Result<f64> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client = async_nats::connect(url).await?;
        let js = jetstream::new(client);
        let s = js
            .create_stream(stream::Config {
                name: "HX_BENCH_BARE".into(),
                subjects: vec!["hxbench.bare".into()],
                retention: stream::RetentionPolicy::WorkQueue,
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await?;
        let c: consumer::PullConsumer = s
            .create_consumer(consumer::pull::Config {
                durable_name: Some("bare".into()),
                ack_policy: consumer::AckPolicy::Explicit,
                max_ack_pending: 4096,
                ..Default::default()
            })
            .await?;
        let start = Instant::now();
        let reader = tokio::spawn(async move {
            let mut got = 0;
            let mut msgs = c.messages().await?;
            while got < n {
                let Some(m) = msgs.next().await else { break };
                m.map_err(|e| anyhow::anyhow!("{e}"))?
                    .ack()
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                got += 1;
            }
            anyhow::Ok(got)
        });
        let payload = vec![7u8; size];
        let mut acks = Vec::with_capacity(1024);
        for _ in 0..n {
            acks.push(js.publish("hxbench.bare", payload.clone().into()).await?);
            if acks.len() == 1024 {
                for a in acks.drain(..) {
                    a.await?;
                }
            }
        }
        for a in acks {
            a.await?;
        }
        let got = reader.await??;
        let secs = start.elapsed().as_secs_f64();
        anyhow::ensure!(got == n, "the reference consumer got {got} of {n}");
        anyhow::Ok(n as f64 / secs)
    })
}

/// An instant "evaluation": one outcome per task, nothing run. A mutation that needs the model
/// gets a prompt text named by its seed in place of the model's rewrite (the benchmark
/// measures moving jobs, not writing prompts), so every job yields a new candidate, as with
/// a real model, and the evaluation budget is reached.
fn instant(job: &Job) -> JobResult {
    let outcomes = |harness: &hx_common::harness::Harness| -> Vec<TaskOutcome> {
        job.tasks
            .tasks()
            .map(|task| TaskOutcome {
                won: (task.seed + harness.id().0[0] as u64).is_multiple_of(3),
                task,
                score: 0.0,
                steps: 1,
                tokens: 0,
                wall_ms: 0,
                confidence: None,
            })
            .collect()
    };
    let evaluated =
        |child: hx_common::harness::Harness| (JobStatus::Completed, outcomes(&child), Some(child));
    let (status, outcomes, child) = match &job.kind {
        // As a real worker does: the harness of an evaluate job is not sent back.
        JobKind::Evaluate { harness } => (JobStatus::Completed, outcomes(harness), None),
        JobKind::MutateAndEvaluate { parent, mutation } => {
            // The model's rewrite of a prompt: here the first text parameter set to a text
            // named by the job's seed, so the child is new as a real rewrite would be.
            let text = parent.components().find_map(|c| {
                c.spec().params.iter().find_map(|p| {
                    matches!(p.ty, hx_common::harness::param::ParamType::Text { .. })
                        .then(|| (c.name.clone(), p.name.to_owned()))
                })
            });
            let child = text.and_then(|(component, param)| {
                parent
                    .apply(&Edit::EditText {
                        component,
                        param,
                        edit: TextEdit::Set(format!("Variant {}.", mutation.seed)),
                    })
                    .ok()
            });
            match child {
                Some(child) => evaluated(child),
                None => (
                    JobStatus::InvalidChild {
                        reason: "no text to rewrite".into(),
                    },
                    Vec::new(),
                    None,
                ),
            }
        }
        JobKind::CrossoverAndEvaluate { parents, seed } => {
            match hx_common::harness::mutate::crossover(&parents[0], &parents[1], *seed) {
                Ok(child) => evaluated(child.harness),
                Err(e) => (
                    JobStatus::InvalidChild {
                        reason: e.to_string(),
                    },
                    Vec::new(),
                    None,
                ),
            }
        }
    };
    JobResult {
        child,
        outcomes,
        ..JobResult::new(job, "bench", status)
    }
}

fn end_to_end_run(
    url: &str,
    workers: usize,
    plan: &Plan,
    seed: &hx_common::harness::Harness,
) -> Result<EndToEnd> {
    let run = format!("bench-w{workers}");
    let store_dir = std::env::temp_dir().join(format!("hx-bench-{run}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&store_dir);
    let text = format!(
        r#"
[run]
name = "{run}"
store = "{store}"
seed = 3

[[suites]]
name = "household"

[population]
seeds = ["react.toml"]
size = 256
tournament = 2
elites = 2
immigrant-rate = 0.0
crossover-rate = 0.0
jobs-in-flight = {in_flight}

[racing]
rungs = [1]
finalists = 1
select-tasks = 1
test-tasks = 1

[budget]
evaluations = {jobs}
episode-steps = 1
wall-time = "1h"

[transport]
kind = "nats"
url = "{url}"
"#,
        store = store_dir.display(),
        in_flight = plan.in_flight,
        jobs = plan.jobs,
    );
    let exp: Experiment = parse_toml(&text, "bench", &[])?;
    exp.validate("bench")?;
    let endpoint = hx_bus::Endpoint {
        url: url.to_owned(),
        auth: NatsAuth::None,
        tls: None,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let slots = (plan.in_flight / workers).max(1) as u32;
    let handles: Vec<_> = (0..workers)
        .map(|i| {
            let cfg = hx_worker::nats::WorkerLoop {
                endpoint: endpoint.clone(),
                name: format!("bench-{i}"),
                model: "none (instant jobs)".into(),
                slots,
                handler: Arc::new(instant),
            };
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name(format!("bench-worker-{i}"))
                .spawn(move || hx_worker::nats::serve(cfg, stop))
        })
        .collect::<Result<_, _>>()?;
    let limits = hx_bus::ConsumerLimits {
        ack_wait: Duration::from_secs(30),
        max_deliver: 5,
        max_ack_pending: plan.in_flight as i64,
    };
    let seeds = vec![seed.clone()];
    // The coordinator runs on its own thread so its CPU time can be read apart.
    let coordinator = std::thread::Builder::new()
        .name("hx-bench-coord".into())
        .spawn(move || -> Result<(u64, f64, f64)> {
            let store = Store::open(&store_dir)?;
            let mut bus = NatsBus::connect(&run, &endpoint, limits)?;
            let mut quiet = |_: &str| {};
            let mut search = Search::new(exp, seeds, &store, &mut bus, false, &mut quiet)?;
            // Read while the threads live: an exited thread leaves /proc with its times.
            let cpu0 = coordinator_cpu_s();
            let start = Instant::now();
            search.run()?;
            let wall = start.elapsed().as_secs_f64();
            let cpu = coordinator_cpu_s() - cpu0;
            drop(search);
            let jobs = store.jobs()?.len() as u64;
            drop(store);
            let _ = std::fs::remove_dir_all(&store_dir);
            Ok((jobs, wall, cpu))
        })?;
    let outcome = coordinator
        .join()
        .map_err(|_| anyhow::anyhow!("the coordinator thread panicked"))?;
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    let (jobs, wall_s, cpu) = outcome?;
    Ok(EndToEnd {
        workers,
        jobs,
        wall_s,
        jobs_per_s: jobs as f64 / wall_s,
        coordinator_cpu_us_per_job: cpu * 1e6 / jobs.max(1) as f64,
    })
}

/// User and system seconds of this process's coordinator threads (the scheduler thread and
/// its NATS runtime), summed from /proc; 0 where /proc is missing.
fn coordinator_cpu_s() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    let tick = 100.0; // USER_HZ on Linux
    let mut total = 0.0;
    for t in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = &stat[open + 1..close];
        if !(name.starts_with("hx-bench-coord") || name.starts_with("hx-coordinator")) {
            continue;
        }
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        // After the name: state is field 3, utime 14 and stime 15 (1-based in proc(5)).
        let ticks = |i: usize| fields.get(i - 3).and_then(|f| f.parse::<f64>().ok());
        if let (Some(u), Some(s)) = (ticks(14), ticks(15)) {
            total += (u + s) / tick;
        }
    }
    total
}
