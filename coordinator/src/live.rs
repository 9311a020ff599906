//! The live view of a running search (`run.serve`): a small HTTP server beside the scheduler
//! with the report page at `/`, the status at `/status.json` and Prometheus metrics at
//! `/metrics`. It reads what the search writes (the store and `status.json`), so it never
//! slows or blocks the scheduler; a request that fails gets a 500 naming why.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result};

use crate::search::{Status, read_status};
use crate::store::Store;

/// A bound live-view server; [`LiveView::serve`] answers until `stop` is set.
pub struct LiveView {
    server: tiny_http::Server,
}

impl LiveView {
    /// Binds `addr` (`HOST:PORT`; port 0 picks a free one).
    pub fn bind(addr: &str) -> Result<LiveView> {
        let server = tiny_http::Server::http(addr)
            .map_err(|e| anyhow::anyhow!("run.serve: cannot listen on {addr}: {e}"))?;
        Ok(LiveView { server })
    }

    /// The address it listens on.
    pub fn addr(&self) -> String {
        self.server.server_addr().to_string()
    }

    /// Answers requests about the run in `store` until `stop` is set.
    pub fn serve(&self, store: &Store, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            let req = match self.server.recv_timeout(Duration::from_millis(200)) {
                Ok(Some(r)) => r,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(cause = %e, "live view: a request could not be read");
                    continue;
                }
            };
            let path = req.url().split('?').next().unwrap_or("/").to_owned();
            let answer = match path.as_str() {
                "/" | "/report.html" => page(store).map(|b| (b, "text/html; charset=utf-8")),
                "/status.json" => read_status(store.path())
                    .and_then(|s| Ok(serde_json::to_string_pretty(&s)?))
                    .map(|b| (b, "application/json")),
                "/metrics" => {
                    read_status(store.path()).map(|s| (metrics(&s), "text/plain; version=0.0.4"))
                }
                _ => {
                    respond(
                        req,
                        404,
                        "not found: try /, /status.json or /metrics",
                        "text/plain",
                    );
                    continue;
                }
            };
            match answer {
                Ok((body, kind)) => respond(req, 200, &body, kind),
                Err(e) => respond(req, 500, &format!("{e:#}"), "text/plain"),
            }
        }
    }
}

fn page(store: &Store) -> Result<String> {
    let view = crate::report::RunView::load(store).context("reading the run")?;
    crate::report::html(&view)
}

fn respond(req: tiny_http::Request, code: u16, body: &str, kind: &str) {
    let header = tiny_http::Header::from_bytes("Content-Type", kind).expect("a valid header");
    let r = tiny_http::Response::from_string(body)
        .with_status_code(code)
        .with_header(header);
    if let Err(e) = req.respond(r) {
        tracing::debug!(cause = %e, "live view: the client left before the answer");
    }
}

/// The status in Prometheus' text format.
pub fn metrics(st: &Status) -> String {
    let mut m = String::new();
    let mut gauge = |name: &str, help: &str, kind: &str, value: f64| {
        let _ = writeln!(m, "# HELP hx_{name} {help}\n# TYPE hx_{name} {kind}");
        let _ = writeln!(m, "hx_{name}{{run=\"{}\"}} {value}", st.run);
    };
    gauge(
        "evaluations_total",
        "Episodes recorded in the search.",
        "counter",
        st.evaluations as f64,
    );
    gauge(
        "evaluation_budget",
        "The budget of search episodes.",
        "gauge",
        st.evaluation_budget as f64,
    );
    gauge(
        "tokens_total",
        "Model tokens spent.",
        "counter",
        st.tokens as f64,
    );
    gauge(
        "elapsed_seconds",
        "Seconds of search over every resumption.",
        "counter",
        st.elapsed_s,
    );
    gauge(
        "jobs_in_flight",
        "Jobs out now.",
        "gauge",
        st.in_flight as f64,
    );
    gauge("workers", "Workers alive.", "gauge", st.workers as f64);
    gauge(
        "candidates",
        "Harnesses evaluated.",
        "gauge",
        st.candidates as f64,
    );
    gauge(
        "invalid_children_total",
        "Children refused as invalid.",
        "counter",
        st.invalid_children as f64,
    );
    gauge(
        "cache_hits_total",
        "Children already known, whose work was skipped.",
        "counter",
        st.cache_hits as f64,
    );
    gauge(
        "clones",
        "Candidates that played exactly as another on their first rung (not raced further).",
        "gauge",
        st.clones as f64,
    );
    gauge(
        "episodes_run_total",
        "Episodes run (racing and the cache skip the rest).",
        "counter",
        st.episodes_run as f64,
    );
    gauge(
        "episodes_without_racing",
        "Episodes evaluating every candidate on every rung would have run.",
        "gauge",
        st.episodes_without_racing as f64,
    );
    gauge(
        "median_success",
        "Median search success of the candidates.",
        "gauge",
        st.median,
    );
    if let Some((_, r)) = &st.best {
        gauge(
            "best_success",
            "Search success of the best candidate.",
            "gauge",
            r.rate,
        );
        gauge(
            "best_success_lower",
            "Lower end of the best candidate's 95% interval.",
            "gauge",
            r.low,
        );
    }
    gauge(
        "median_progress",
        "Median of the candidates' mean search progress.",
        "gauge",
        st.median_progress,
    );
    if let Some(p) = &st.best_progress {
        gauge(
            "best_progress",
            "Mean search progress of the best candidate.",
            "gauge",
            p.mean,
        );
    }
    if !st.worker_beats.is_empty() {
        let _ = writeln!(
            m,
            "# HELP hx_worker_jobs_done_total Jobs a live worker has answered.\n\
             # TYPE hx_worker_jobs_done_total counter"
        );
        for b in &st.worker_beats {
            let _ = writeln!(
                m,
                "hx_worker_jobs_done_total{{run=\"{}\",worker=\"{}\"}} {}",
                st.run,
                b.worker.replace(['"', '\\', '\n'], "_"),
                b.jobs_done
            );
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_in_the_text_format() {
        let st = Status {
            run: "r1".into(),
            evaluations: 12,
            evaluation_budget: 60,
            best: Some((
                hx_common::harness::HarnessId([7; 16]),
                hx_common::stats::Rate::wilson95(3, 6),
            )),
            ..Status::default()
        };
        let m = metrics(&st);
        assert!(m.contains(
            "# TYPE hx_evaluations_total counter\nhx_evaluations_total{run=\"r1\"} 12\n"
        ));
        assert!(m.contains("hx_evaluation_budget{run=\"r1\"} 60\n"));
        assert!(m.contains("hx_best_success{run=\"r1\"} 0.5\n"));
        // Every sample line is `name{labels} number`.
        for line in m.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            value.parse::<f64>().unwrap_or_else(|_| panic!("{line}"));
        }
    }
}
