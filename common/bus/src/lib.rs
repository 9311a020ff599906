//! NATS JetStream plumbing both ends of a distributed run share: connecting with credentials
//! and TLS, declaring the streams, the workers' consumer and the workers bucket, and reading
//! the workers' beats. The worker's job loop (`hx_worker::nats`) and the coordinator's bus
//! (`hx_coordinator::bus::nats`) are built on it. Names and encodings come from
//! [`hx_common::protocol`] only.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, anyhow};
use async_nats::jetstream::{self, consumer, kv, stream};
use async_nats::{Client, ConnectOptions};
use futures_util::StreamExt as _;
use hx_common::config::{NatsAuth, TlsOptions};
use hx_common::protocol::{self, WorkerBeat, subjects};

/// How often a worker renews its entry in the workers bucket.
pub const BEAT_EVERY: Duration = Duration::from_secs(2);
/// How long the bucket keeps an entry that is not renewed: a worker is gone after this.
pub const BEAT_TTL: Duration = Duration::from_secs(10);
/// How long the server remembers message ids to drop duplicates.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(600);

/// Where the NATS server is and how to prove who we are.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `nats://host:port`, `tls://...`, `ws://...` or `wss://...`.
    pub url: String,
    /// Credentials.
    pub auth: NatsAuth,
    /// TLS files.
    pub tls: Option<TlsOptions>,
}

/// Connects to `endpoint` as `name`. With `wait`, a server not up yet is waited for (a
/// worker started before the server); without, it is an error naming the URL. Either way a
/// connection lost later is re-established for as long as the process lives.
pub async fn connect(endpoint: &Endpoint, name: &str, wait: bool) -> Result<Client> {
    let mut opts = ConnectOptions::new()
        .name(name)
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(5));
    opts = match &endpoint.auth {
        NatsAuth::None => opts,
        NatsAuth::UserPassword { user, password_env } => {
            opts.user_and_password(user.clone(), secret(password_env)?)
        }
        NatsAuth::Token { token_env } => opts.token(secret(token_env)?),
        NatsAuth::Nkey { seed_file } => {
            let seed = std::fs::read_to_string(seed_file)
                .with_context(|| format!("reading the NKey seed {}", seed_file.display()))?;
            opts.nkey(seed.trim().to_owned())
        }
        NatsAuth::Creds { file } => opts
            .credentials_file(file)
            .await
            .with_context(|| format!("reading the credentials file {}", file.display()))?,
    };
    if let Some(tls) = &endpoint.tls {
        if let Some(ca) = &tls.ca {
            opts = opts.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
            opts = opts.add_client_certificate(cert.clone(), key.clone());
        }
        opts = opts.require_tls(true);
    } else if endpoint.url.starts_with("tls://") {
        opts = opts.require_tls(true);
    }
    if wait {
        opts = opts.retry_on_initial_connect();
    }
    opts.connect(endpoint.url.as_str())
        .await
        .with_context(|| format!("connecting to NATS at {}", endpoint.url))
}

fn secret(var: &str) -> Result<String> {
    std::env::var(var).map_err(|_| {
        anyhow!("the NATS secret is read from ${var}, which is not set (the config names it)")
    })
}

/// The limits the coordinator declares the workers' consumer with.
#[derive(Debug, Clone, Copy)]
pub struct ConsumerLimits {
    /// How long a job may go without an acknowledgement or a progress report before it is
    /// delivered again.
    pub ack_wait: Duration,
    /// Deliveries of one job that may run it; the consumer delivers once more, and that
    /// delivery dead-letters it.
    pub max_deliver: i64,
    /// Jobs delivered and not yet acknowledged, over all workers (backpressure).
    pub max_ack_pending: i64,
}

/// Declares the job, result and dead-letter streams, the workers' consumer and the workers
/// bucket; existing ones are kept (the consumer's limits are updated).
pub async fn declare(js: &jetstream::Context, limits: ConsumerLimits) -> Result<()> {
    let max_message_size = protocol::MAX_MESSAGE_BYTES as i32;
    let jobs = js
        .get_or_create_stream(stream::Config {
            name: subjects::JOBS_STREAM.into(),
            subjects: vec![subjects::JOBS_ALL.into()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            duplicate_window: DUPLICATE_WINDOW,
            max_message_size,
            ..Default::default()
        })
        .await
        .with_context(|| format!("declaring the stream {}", subjects::JOBS_STREAM))?;
    js.get_or_create_stream(stream::Config {
        name: subjects::RESULTS_STREAM.into(),
        subjects: vec![subjects::RESULTS_ALL.into()],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        duplicate_window: DUPLICATE_WINDOW,
        max_message_size,
        ..Default::default()
    })
    .await
    .with_context(|| format!("declaring the stream {}", subjects::RESULTS_STREAM))?;
    js.get_or_create_stream(stream::Config {
        name: subjects::DEAD_STREAM.into(),
        subjects: vec![subjects::DEAD_ALL.into()],
        storage: stream::StorageType::File,
        max_age: Duration::from_secs(30 * 24 * 3600),
        ..Default::default()
    })
    .await
    .with_context(|| format!("declaring the stream {}", subjects::DEAD_STREAM))?;
    jobs.create_consumer(consumer::pull::Config {
        durable_name: Some(subjects::WORKERS_CONSUMER.into()),
        filter_subject: subjects::JOBS_ALL.into(),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: limits.ack_wait,
        // The delivery after the last that may run a job gives it up (see the module's doc).
        max_deliver: limits.max_deliver + 1,
        max_ack_pending: limits.max_ack_pending,
        ..Default::default()
    })
    .await
    .with_context(|| format!("declaring the consumer {}", subjects::WORKERS_CONSUMER))?;
    workers_bucket(js).await?;
    Ok(())
}

/// The workers bucket, made if missing. Its backing stream is declared directly, as the
/// client's bucket helper would (the helper first asks for account details that
/// `nats-server` 2.9 answers in a shape this client does not read).
pub async fn workers_bucket(js: &jetstream::Context) -> Result<kv::Store> {
    if let Ok(kv) = js.get_key_value(subjects::WORKERS_BUCKET).await {
        return Ok(kv);
    }
    let bucket = subjects::WORKERS_BUCKET;
    js.get_or_create_stream(stream::Config {
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_bytes: -1,
        max_age: BEAT_TTL,
        max_message_size: 64 << 10,
        storage: stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        num_replicas: 1,
        ..Default::default()
    })
    .await
    .with_context(|| format!("declaring the bucket {bucket}"))?;
    js.get_key_value(bucket)
        .await
        .with_context(|| format!("opening the bucket {bucket}"))
}

/// The workers whose beats have not expired.
pub async fn live_workers(kv: &kv::Store) -> Result<Vec<WorkerBeat>> {
    let mut keys = kv.keys().await.context("listing workers")?;
    let mut out = Vec::new();
    while let Some(key) = keys.next().await {
        let Ok(key) = key else { continue };
        if let Ok(Some(bytes)) = kv.get(&key).await {
            match protocol::decode::<WorkerBeat>(&bytes) {
                Ok(beat) => out.push(beat),
                Err(e) => tracing::warn!(key = %key, cause = %e, "a worker entry does not decode"),
            }
        }
    }
    out.sort_by(|a, b| a.worker.cmp(&b.worker));
    Ok(out)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Bucket keys allow `[-/_=.a-zA-Z0-9]`; anything else in a worker's name becomes `_`.
pub fn beat_key(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_=".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Header values are one line.
pub fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(400)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beat_keys_are_valid_bucket_keys() {
        assert_eq!(beat_key("gpu-3.lab:1234"), "gpu-3_lab_1234");
        assert_eq!(beat_key("w_1"), "w_1");
    }

    #[test]
    fn header_values_are_one_line() {
        assert_eq!(one_line("a\nb\r\tc"), "a b  c");
        assert_eq!(one_line(&"x".repeat(1000)).len(), 400);
    }
}
