//! Distributed runs with a real `nats-server`, `hx coordinator` and `hx worker` processes and
//! the embedded model: several workers finish a run; a worker killed mid-job has its job
//! delivered again and recorded once; a coordinator killed mid-run resumes with nothing lost
//! or run twice; a NATS server restarted mid-run (with its store) is reconnected to by both
//! sides; an undecodable job is dead-lettered while the workers go on; a job past its
//! deliveries is given up by a worker while no coordinator listens.
//!
//! Each test is bounded in time; every process is killed when its guard drops.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hx_common::protocol::subjects;
use hx_coordinator::search::{Status, read_status};
use hx_coordinator::store::{JobState, Store};

/// How long any one test may take, end to end (generous: the tests share two cores with each
/// other and with the model's threads in every worker process).
const TEST_BUDGET: Duration = Duration::from_secs(900);

/// A `nats-server` with JetStream on a loopback port and its own store, killed on drop.
struct NatsServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl NatsServer {
    fn start(dir: &Path) -> NatsServer {
        let mut s = NatsServer {
            child: None,
            port: 0,
            dir: dir.to_owned(),
        };
        s.launch(None);
        s
    }

    fn launch(&mut self, port: Option<u16>) {
        let log = self.dir.join("nats.log");
        let _ = std::fs::remove_file(&log);
        let port_arg = port.map_or("-1".to_owned(), |p| p.to_string());
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port_arg, "-sd"])
            .arg(self.dir.join("jetstream"))
            .arg("-l")
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start nats-server ({e}); install it (Debian: apt-get install \
                     nats-server) -- scripts/test does"
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(rest) = text
                .lines()
                .find_map(|l| l.split("Listening for client connections on ").nth(1))
                && let Some(p) = rest.trim().rsplit(':').next().and_then(|p| p.parse().ok())
            {
                self.port = p;
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nats-server did not start:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// `kill -9`, then start again on the same port with the same store.
    fn crash_and_restart(&mut self, down_for: Duration) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        std::thread::sleep(down_for);
        self.launch(Some(self.port));
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A child process killed on drop, its stderr in a file.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(args: &[&str], log: PathBuf) -> Proc {
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_hx"))
            .args(args)
            .env("RUST_LOG", "info")
            .env("HX_LOG_FORMAT", "pretty")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("hx starts");
        Proc { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit; its status must be success.
    fn wait_ok(&mut self, deadline: Instant) {
        loop {
            if let Some(st) = self.child.try_wait().expect("waits") {
                assert!(
                    st.success(),
                    "{} failed:\n{}",
                    self.log.display(),
                    self.log()
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not finish in time:\n{}",
                self.log.display(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `cond` holds, or fails saying `what`.
fn wait_for(what: &str, deadline: Instant, mut cond: impl FnMut() -> bool) {
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A small search over NATS (see `tiny_config`): each job is a few seconds of real model time.
fn write_config(dir: &Path, run: &str, url: &str) -> PathBuf {
    let transport = format!("kind = \"nats\"\nurl = \"{url}\"\nack-wait = \"2s\"\nmax-deliver = 4");
    crate::tiny_config(dir, run, 5, 3, &transport)
}

fn coordinator(dir: &Path, config: &Path, resume: bool, n: u32) -> Proc {
    let mut args = vec!["coordinator", "--config", config.to_str().expect("utf-8")];
    if resume {
        args.push("--resume");
    }
    Proc::spawn(&args, dir.join(format!("coordinator-{n}.log")))
}

fn worker(dir: &Path, url: &str, name: &str) -> Proc {
    Proc::spawn(
        &[
            "worker",
            "--nats",
            url,
            "--id",
            name,
            "--jobs",
            "1",
            "--concurrency",
            "2",
        ],
        dir.join(format!("{name}.log")),
    )
}

/// Job ids a worker log says were answered, with how many times.
fn answered(log: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for line in log.lines().filter(|l| l.contains("job answered")) {
        if let Some(id) = line
            .split("job=")
            .nth(1)
            .and_then(|r| r.split([' ', '}']).next())
        {
            *out.entry(id.to_owned()).or_insert(0) += 1;
        }
    }
    out
}

/// Job id -> the outcomes its first answer in `log` carried (`job answered outcomes=N`).
fn answered_outcomes(log: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in log.lines().filter(|l| l.contains("job answered")) {
        let field = |name: &str| {
            line.split(name)
                .nth(1)
                .and_then(|r| r.split([' ', '}']).next())
                .map(str::to_owned)
        };
        let (Some(id), Some(n)) = (field("job="), field("outcomes=")) else {
            panic!("a job answered line without job= or outcomes=: {line}");
        };
        let n = n.parse().unwrap_or_else(|_| panic!("outcomes in {line}"));
        out.entry(id).or_insert(n);
    }
    out
}

/// The model is fetched once before any worker needs it.
fn model_ready() {
    hx_model::fetch::ensure_default(&mut |m| eprintln!("{m}"))
        .unwrap_or_else(|e| panic!("the model is needed for these tests: {e}"));
}

/// A finished run: a final stage with a test score, no job left pending, and every
/// evaluate job's tasks recorded for its harness.
fn check_finished(dir: &Path) -> Status {
    let store_dir = dir.join("store");
    let st = read_status(&store_dir).expect("status");
    assert_eq!(st.phase, "done", "{st:?}");
    let f = st.final_.as_ref().expect("a final stage");
    assert!(!f.test.is_empty(), "test scores: {f:?}");
    let store = Store::open(&store_dir).expect("store opens");
    for r in store.jobs().expect("jobs") {
        assert_ne!(r.state, JobState::Pending, "{:?} left pending", r.job.id);
        if r.state == JobState::Done
            && let hx_common::protocol::JobKind::Evaluate { harness } = &r.job.kind
        {
            for t in r.job.tasks.tasks() {
                assert!(
                    store
                        .evaluation(&harness.id(), &t)
                        .expect("reads")
                        .is_some(),
                    "{:?} done but {t:?} not recorded",
                    r.job.id
                );
            }
        }
    }
    st
}

#[test]
fn several_workers_complete_a_small_run() {
    model_ready();
    let deadline = Instant::now() + TEST_BUDGET;
    let dir = tempfile::tempdir().expect("tempdir");
    let nats = NatsServer::start(dir.path());
    let config = write_config(dir.path(), "several", &nats.url());
    // Workers first: they wait for the coordinator to declare the queue.
    let workers: Vec<Proc> = (0..3)
        .map(|i| worker(dir.path(), &nats.url(), &format!("w{i}")))
        .collect();
    let mut coord = coordinator(dir.path(), &config, false, 0);
    coord.wait_ok(deadline);
    let st = check_finished(dir.path());
    let per_worker: Vec<usize> = workers
        .iter()
        .map(|w| answered(&w.log()).values().sum())
        .collect();
    assert!(
        per_worker.iter().filter(|&&n| n > 0).count() >= 2,
        "jobs spread over workers: {per_worker:?}"
    );
    // Every answer was recorded once: as many episodes as the jobs' results carried.
    let mut carried: BTreeMap<String, u64> = BTreeMap::new();
    for w in &workers {
        for (job, n) in answered_outcomes(&w.log()) {
            carried.entry(job).or_insert(n);
        }
    }
    let carried: u64 = carried.values().sum();
    assert!(carried > 0);
    assert_eq!(
        st.episodes_run, carried,
        "episodes recorded vs carried by the results"
    );
}

#[test]
fn a_worker_killed_mid_job_has_its_job_redelivered_and_recorded_once() {
    model_ready();
    let deadline = Instant::now() + TEST_BUDGET;
    let dir = tempfile::tempdir().expect("tempdir");
    let nats = NatsServer::start(dir.path());
    let config = write_config(dir.path(), "killworker", &nats.url());
    let mut coord = coordinator(dir.path(), &config, false, 0);
    let mut doomed = worker(dir.path(), &nats.url(), "doomed");
    wait_for("the doomed worker to start a job", deadline, || {
        doomed.log().contains("job started")
    });
    let log = doomed.log();
    let job = log
        .lines()
        .find(|l| l.contains("job started"))
        .and_then(|l| l.split("job=").nth(1))
        .and_then(|r| r.split([' ', '}']).next())
        .expect("a job id")
        .to_owned();
    doomed.kill9();
    assert!(
        !answered(&doomed.log()).contains_key(&job),
        "killed before answering"
    );
    let rescuer = worker(dir.path(), &nats.url(), "rescuer");
    coord.wait_ok(deadline);
    check_finished(dir.path());
    let log = rescuer.log();
    assert_eq!(
        answered(&log).get(&job),
        Some(&1),
        "{job} answered once by the rescuer:\n{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains(&format!("job={job} ")) && l.contains("delivered=2")),
        "{job} was a redelivery:\n{log}"
    );
}

#[test]
fn a_restarted_coordinator_resumes_with_nothing_lost_or_run_twice() {
    model_ready();
    let deadline = Instant::now() + TEST_BUDGET;
    let dir = tempfile::tempdir().expect("tempdir");
    let nats = NatsServer::start(dir.path());
    let config = write_config(dir.path(), "killcoord", &nats.url());
    let workers: Vec<Proc> = (0..2)
        .map(|i| worker(dir.path(), &nats.url(), &format!("w{i}")))
        .collect();
    let mut first = coordinator(dir.path(), &config, false, 0);
    wait_for("a first result recorded", deadline, || {
        first.log().contains("rung ")
    });
    let before: usize = workers
        .iter()
        .map(|w| answered(&w.log()).values().sum::<usize>())
        .sum();
    first.kill9();
    // Results published while it is down wait in the results stream: wait for one.
    wait_for(
        "a job answered while the coordinator is down",
        deadline,
        || {
            workers
                .iter()
                .map(|w| answered(&w.log()).values().sum::<usize>())
                .sum::<usize>()
                > before
        },
    );
    let mut second = coordinator(dir.path(), &config, true, 1);
    second.wait_ok(deadline);
    let st = check_finished(dir.path());
    let mut runs: BTreeMap<String, usize> = BTreeMap::new();
    for w in &workers {
        for (job, n) in answered(&w.log()) {
            *runs.entry(job).or_insert(0) += n;
        }
    }
    let twice: Vec<_> = runs.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "jobs run twice: {twice:?}");
    // Every job the store knows was answered by a worker, and every answer is in the store.
    let store = Store::open(&dir.path().join("store")).expect("store opens");
    let stored: std::collections::BTreeSet<String> = store
        .jobs()
        .expect("jobs")
        .iter()
        .map(|r| r.job.id.to_string())
        .collect();
    let ran: std::collections::BTreeSet<String> = runs.into_keys().collect();
    assert_eq!(stored, ran);
    assert!(st.episodes_run > 0);
}

#[test]
fn a_restarted_nats_server_is_reconnected_to_and_the_run_finishes() {
    model_ready();
    let deadline = Instant::now() + TEST_BUDGET;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nats = NatsServer::start(dir.path());
    let config = write_config(dir.path(), "killnats", &nats.url());
    let _workers: Vec<Proc> = (0..2)
        .map(|i| worker(dir.path(), &nats.url(), &format!("w{i}")))
        .collect();
    let mut coord = coordinator(dir.path(), &config, false, 0);
    wait_for("a first result recorded", deadline, || {
        coord.log().contains("rung ")
    });
    nats.crash_and_restart(Duration::from_secs(2));
    coord.wait_ok(deadline);
    check_finished(dir.path());
}

#[test]
fn a_malformed_job_is_dead_lettered_and_workers_keep_going() {
    model_ready();
    let deadline = Instant::now() + TEST_BUDGET;
    let dir = tempfile::tempdir().expect("tempdir");
    let nats = NatsServer::start(dir.path());
    let run = "malformed";
    let config = write_config(dir.path(), run, &nats.url());
    let w = worker(dir.path(), &nats.url(), "w0");
    let mut coord = coordinator(dir.path(), &config, false, 0);
    wait_for("the coordinator to declare the queue", deadline, || {
        coord.log().contains("jobs on NATS")
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let url = nats.url();
    rt.block_on(async {
        let client = async_nats::connect(url.as_str()).await.expect("connects");
        let js = async_nats::jetstream::new(client);
        js.publish(subjects::jobs(run), b"not a job at all".to_vec().into())
            .await
            .expect("publishes")
            .await
            .expect("stored");
    });
    coord.wait_ok(deadline);
    check_finished(dir.path());
    let log = w.log();
    assert!(log.contains("job dead-lettered"), "{log}");
    assert!(!answered(&log).is_empty(), "the worker went on:\n{log}");
    let (reason, payload) = rt.block_on(async {
        let client = async_nats::connect(url.as_str()).await.expect("connects");
        let js = async_nats::jetstream::new(client);
        let dead = js
            .get_stream(subjects::DEAD_STREAM)
            .await
            .expect("dead stream");
        let m = dead
            .get_last_raw_message_by_subject(&subjects::dead(run))
            .await
            .expect("a dead letter");
        let reason = m
            .headers
            .get(subjects::REASON_HEADER)
            .map(|v| v.to_string())
            .unwrap_or_default();
        (reason, m.payload.to_vec())
    });
    assert_eq!(payload, b"not a job at all");
    assert!(reason.contains("magic"), "reason: {reason}");
}

#[test]
fn a_job_past_its_deliveries_is_given_up_by_a_worker_while_no_coordinator_listens() {
    use async_nats::jetstream;
    use futures_util::StreamExt as _;
    use hx_common::harness::{Component, Harness, HarnessDoc, Kind};
    use hx_common::protocol::{self, Job, JobBudget, JobId, JobKind, JobResult, JobStatus};
    use hx_common::task::{Split, TaskBatch};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let dir = tempfile::tempdir().expect("tempdir");
    let nats = NatsServer::start(dir.path());
    let run = "givenup";
    let url = nats.url();
    let ack_wait = Duration::from_secs(1);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let harness = Harness::from_doc(HarnessDoc {
        components: vec![Component::new("act", Kind::FreeGeneration)],
        edges: vec![],
    })
    .expect("valid");
    let job = Job {
        id: JobId(7),
        run: run.into(),
        kind: JobKind::Evaluate { harness },
        tasks: TaskBatch {
            suite: "household".into(),
            split: Split::Train,
            seeds: vec![0],
        },
        budget: JobBudget {
            max_steps: 5,
            max_tokens: 1000,
            wall_ms: 60_000,
        },
        attempt: 1,
    };
    // Two workers take the job and die before answering (nothing acknowledges it), while
    // no coordinator is connected to hear the server's advisory.
    let js = rt.block_on(async {
        let client = async_nats::connect(url.as_str()).await.expect("connects");
        let js = jetstream::new(client);
        hx_bus::declare(
            &js,
            hx_bus::ConsumerLimits {
                ack_wait,
                max_deliver: 2,
                max_ack_pending: 16,
            },
        )
        .await
        .expect("declares");
        js.publish(
            subjects::jobs(run),
            protocol::encode(&job).expect("encodes").into(),
        )
        .await
        .expect("publishes")
        .await
        .expect("stored");
        let consumer: jetstream::consumer::PullConsumer = js
            .get_consumer_from_stream(subjects::WORKERS_CONSUMER, subjects::JOBS_STREAM)
            .await
            .expect("consumer");
        for delivery in 1..=2 {
            let mut got = consumer
                .fetch()
                .max_messages(1)
                .expires(ack_wait * 3)
                .messages()
                .await
                .expect("fetches");
            let m = got.next().await.expect("a delivery").expect("a message");
            assert_eq!(m.info().expect("info").delivered, delivery);
        }
        js
    });
    // A live worker gets the third delivery: it must not run the job but give it up.
    let ran = Arc::new(AtomicBool::new(false));
    let handler: hx_worker::nats::Handler = {
        let ran = Arc::clone(&ran);
        Arc::new(move |job: &Job| {
            ran.store(true, Ordering::Relaxed);
            JobResult::new(job, "w", JobStatus::Completed)
        })
    };
    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        let stop = Arc::clone(&stop);
        let cfg = hx_worker::nats::WorkerLoop {
            endpoint: hx_bus::Endpoint {
                url: url.clone(),
                auth: hx_common::config::NatsAuth::None,
                tls: None,
            },
            name: "w".into(),
            model: "none".into(),
            slots: 1,
            handler,
        };
        std::thread::spawn(move || hx_worker::nats::serve(cfg, stop))
    };
    let (result, dead) = rt.block_on(async {
        let results = js
            .get_stream(subjects::RESULTS_STREAM)
            .await
            .expect("results stream");
        let dead = js
            .get_stream(subjects::DEAD_STREAM)
            .await
            .expect("dead stream");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = results
                .get_last_raw_message_by_subject(&subjects::results(run))
                .await;
            let d = dead
                .get_last_raw_message_by_subject(&subjects::dead(run))
                .await;
            if let (Ok(r), Ok(d)) = (r, d) {
                break (r, d);
            }
            assert!(
                Instant::now() < deadline,
                "no result and dead letter in 60 s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    stop.store(true, Ordering::Relaxed);
    worker.join().expect("worker thread").expect("worker loop");
    assert!(!ran.load(Ordering::Relaxed), "the job was run a third time");
    let r: JobResult = protocol::decode(&result.payload).expect("a result");
    assert_eq!(r.job, job.id);
    match r.status {
        JobStatus::Failed { reason } => {
            assert!(reason.contains("delivered 2 times"), "{reason}")
        }
        other => panic!("not a failure: {other:?}"),
    }
    assert_eq!(
        dead.payload.to_vec(),
        protocol::encode(&job).expect("encodes")
    );
    // And it is off the job queue.
    let left = rt.block_on(async {
        let mut s = js.get_stream(subjects::JOBS_STREAM).await.expect("jobs");
        s.info().await.expect("info").state.messages
    });
    assert_eq!(left, 0);
}
