//! Episode traces: one JSON object per line, written as the episode runs, so a crash leaves
//! everything up to the last step on disk. Prompts are recorded by hash and size, not text.

use std::io::{BufRead, Write};
use std::path::Path;

use hx_common::harness::HarnessId;
use hx_common::harness::algebra::Edit;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One thing that happened in an episode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "event",
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case"
)]
pub enum Event {
    /// The episode began.
    Start {
        /// `suite/split/seed`.
        task: String,
        /// The harness it began with.
        harness: HarnessId,
        /// The goal.
        goal: String,
        /// The first observation.
        observation: String,
    },
    /// A tool ran.
    Tool {
        /// The step.
        step: u32,
        /// The tool.
        tool: String,
        /// Items it returned.
        items: usize,
    },
    /// The model was called.
    Model {
        /// The step.
        step: u32,
        /// What for: `act`, `plan`, `reflect`, `rewrite`, `retry`.
        purpose: String,
        /// First 16 hex digits of the prompt's SHA-256.
        prompt_hash: String,
        /// Prompt characters.
        prompt_chars: usize,
        /// Prompt tokens.
        prompt_tokens: u64,
        /// Of those, tokens reused from a cached prefix.
        #[serde(default)]
        cached_tokens: u64,
        /// Generated tokens.
        completion_tokens: u64,
        /// What came back (generated text, or the chosen candidate).
        output: String,
    },
    /// A command reached the world.
    Step {
        /// The step.
        step: u32,
        /// The command.
        command: String,
        /// The world's answer.
        observation: String,
        /// Partial score, where the world gives one.
        score: Option<f32>,
        /// Whether the step made progress.
        progress: bool,
    },
    /// A guard changed or caught a command.
    Guard {
        /// The step.
        step: u32,
        /// `admissible-check` or `loop-guard`.
        guard: String,
        /// What happened.
        detail: String,
    },
    /// The harness was rewritten, refused a rewrite, or rolled one back.
    Rewrite {
        /// The step.
        step: u32,
        /// What fired it.
        trigger: String,
        /// The operation.
        edit: Option<Edit>,
        /// Harness before.
        before: HarnessId,
        /// Harness after (equal to `before` when refused or rolled back).
        after: HarnessId,
        /// `applied`, `refused: ...`, or `rolled-back`.
        result: String,
    },
    /// The episode ended.
    End {
        /// Steps taken.
        steps: u32,
        /// Goal reached.
        won: bool,
        /// Final partial score.
        score: f32,
        /// Why it ended.
        reason: String,
        /// Model tokens in all.
        tokens: u64,
    },
}

/// The hash recorded for a prompt.
pub fn prompt_hash(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Where events go: memory, and a file when one is open.
#[derive(Default)]
pub struct Trace {
    /// Every event so far.
    pub events: Vec<Event>,
    file: Option<std::io::BufWriter<std::fs::File>>,
}

impl Trace {
    /// A trace kept in memory and written to `path`.
    pub fn to_file(path: &Path) -> std::io::Result<Trace> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        Ok(Trace {
            events: Vec::new(),
            file: Some(std::io::BufWriter::new(std::fs::File::create(path)?)),
        })
    }

    /// Records an event (a write failure is logged; the episode goes on).
    pub fn push(&mut self, event: Event) {
        if let Some(f) = &mut self.file {
            let line = serde_json::to_string(&event).unwrap_or_default();
            if let Err(e) = writeln!(f, "{line}").and_then(|()| f.flush()) {
                tracing::warn!(cause = %e, "cannot write the trace; continuing without it");
                self.file = None;
            }
        }
        self.events.push(event);
    }
}

/// Reads a trace file back; a malformed line is an error naming its number.
pub fn read(path: &Path) -> Result<Vec<Event>, String> {
    let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| format!("{}: {e}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(
            serde_json::from_str(&line)
                .map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))?,
        );
    }
    Ok(out)
}
