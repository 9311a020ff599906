//! Live progress of a search for the person who started it: on a terminal, a bar of episodes
//! against the budget with best and median success, jobs in flight, workers and tokens/s,
//! with the search's messages printed above it; elsewhere (a log file, a service) the same
//! figures as a plain line every half minute. It reads `status.json`, as `hx status` does, so
//! the scheduler never waits on it.

use std::io::IsTerminal as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::search::{Status, read_status};

/// How often the plain line is written when stderr is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(30);

/// The progress display of one search.
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A bar on stderr if it is a terminal, else plain lines.
    pub fn new() -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:30.cyan/blue} {pos}/{len} episodes  {msg}",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            bar.enable_steady_tick(Duration::from_millis(250));
            bar
        });
        Progress { bar }
    }

    /// Prints a message of the search (above the bar when there is one).
    pub fn say(&self, m: &str) {
        match &self.bar {
            Some(bar) => bar.println(format!("hx: {m}")),
            None => eprintln!("hx: {m}"),
        }
    }

    /// Follows the status of the store at `store` until `stop` is set.
    pub fn watch(&self, store: &Path, stop: &AtomicBool) {
        let mut last_line = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(250));
            let Ok(st) = read_status(store) else {
                continue;
            };
            // Over the whole search (every resumption): steadier than a window when results
            // come seconds apart.
            let rate = st.tokens as f64 / st.elapsed_s.max(1e-3);
            match &self.bar {
                Some(bar) => {
                    bar.set_length(st.evaluation_budget);
                    bar.set_position(st.evaluations.min(st.evaluation_budget));
                    bar.set_message(summary(&st, rate));
                }
                None if last_line.elapsed() >= PLAIN_EVERY => {
                    last_line = Instant::now();
                    eprintln!(
                        "hx: progress: {}/{} episodes, {}",
                        st.evaluations,
                        st.evaluation_budget,
                        summary(&st, rate)
                    );
                }
                None => {}
            }
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new()
    }
}

/// The figures after the episode count: phase, best and median, jobs, workers, tokens/s.
pub fn summary(st: &Status, tokens_per_s: f64) -> String {
    let best = st
        .best
        .as_ref()
        .map(|(id, r)| {
            let p = st
                .best_progress
                .map(|p| format!(" (progress {:.2})", p.mean))
                .unwrap_or_default();
            format!("best {} {:.0}%{p}", id.short(), 100.0 * r.rate)
        })
        .unwrap_or_else(|| "best -".into());
    let phase = match &st.stage {
        Some(s) => format!(
            "{} ({} {}/{})",
            st.phase,
            s.split,
            s.done,
            s.harnesses as u64 * u64::from(s.tasks)
        ),
        None => st.phase.clone(),
    };
    format!(
        "{phase}: {best}, median {:.0}%, {} in flight, {} workers, {:.0} tokens/s",
        100.0 * st.median,
        st.in_flight,
        st.workers,
        tokens_per_s
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_names_every_figure() {
        let st = Status {
            phase: "searching".into(),
            median: 0.25,
            in_flight: 3,
            workers: 2,
            best: Some((
                hx_common::harness::HarnessId([1; 16]),
                hx_common::stats::Rate::wilson95(1, 2),
            )),
            ..Status::default()
        };
        assert_eq!(
            summary(&st, 123.4),
            "searching: best 010101010101 50%, median 25%, 3 in flight, 2 workers, 123 tokens/s"
        );
    }

    #[test]
    fn in_the_final_stage_the_summary_says_how_far_its_step_has_got() {
        let st = Status {
            phase: "final".into(),
            stage: Some(crate::search::StageProgress {
                split: hx_common::task::Split::Validation,
                harnesses: 5,
                tasks: 32,
                done: 40,
            }),
            ..Status::default()
        };
        assert!(
            summary(&st, 1.0).starts_with("final (validation 40/160): best -"),
            "{}",
            summary(&st, 1.0)
        );
        assert_eq!(
            st.stage.expect("a stage").to_string(),
            "validation split 40 of 160 episodes (5 harnesses x 32 tasks)"
        );
    }
}
