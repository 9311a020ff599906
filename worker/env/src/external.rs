//! External environments: a simulator in its own process (real ALFWorld, WebShop, ScienceWorld)
//! behind a thin adapter that speaks JSON lines on stdin and stdout.
//!
//! # The protocol
//!
//! hx starts the adapter once and keeps it for many episodes. It writes one JSON object per line
//! to the adapter's stdin and reads exactly one JSON object per line back from its stdout, in
//! order. The adapter's stderr is free text: hx keeps its last lines for error messages.
//!
//! | request                                          | reply                                                               |
//! |--------------------------------------------------|---------------------------------------------------------------------|
//! | `{"op":"reset","task":"alfworld/test/17"}`       | `{"observation":"...","goal":"...","step_limit":50,"commands":"go to X, ...","example":"go to fridge 1"}` (all but `observation` and `goal` optional) |
//! | `{"op":"step","command":"go to fridge 1"}`       | `{"observation":"...","done":false,"won":false,"score":0.5,"invalid":false}` (`score` optional, in `[0, 1]`; `invalid` optional: the world did not carry the command out) |
//! | `{"op":"admissible"}`                            | `{"commands":["look","go to fridge 1"]}`                            |
//! | `{"op":"close"}`                                 | none: the adapter exits                                             |
//!
//! A reset reply may carry `"walkthrough":[...]`, the game's own solution from this start:
//! `hx tasks check` replays it as the suite's expert, and a harness's worked examples replay
//! the walkthroughs of **train** tasks; an agent never sees its own task's.
//!
//! An adapter may also answer `{"op":"exemplars","task":"alfworld/test/17","count":2,
//! "same_type":true}` with `{"tasks":["alfworld/train/40", ...]}`: up to `count` train tasks
//! whose walkthroughs make worked examples for that task (of its task type where `same_type`),
//! the same ones every time. hx refuses any task that is not of the suite's train split, then
//! plays each (reset, walkthrough) in the same process before the episode's own reset. An
//! adapter without the op answers it with an error reply: the harness then has no examples.
//!
//! Reset and step replies may also carry the world's view (all optional): `"places":[...]`
//! (what the agent can go to; kept until named again), `"at":"fridge 1"` (where it is now),
//! `"holding":[...]` (what it holds now) and `"state":"..."` (how things stand now in the
//! world's own words, where an observation only tells what the latest command did). Memories
//! and tools read these instead of parsing observations; a world that sends none simply has no
//! places, inventory or state.
//!
//! Any request may instead be answered `{"error":"why"}`; hx reports it as the adapter's error
//! and the adapter stays usable. Everything else is a fault that ends the adapter process: a
//! reply that is not JSON or lacks a field, a line over 1 MiB, no reply within the timeout, or
//! the process exiting. The fault is returned as an [`Error`] naming the program, and the next
//! `reset` starts a fresh process. hx counts steps itself and ends the episode at the step limit
//! whatever the adapter says.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use hx_common::task::{Split, TaskRef};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Environment, Error, Reset, Step, View};

/// Longest reply line read, in bytes.
pub const MAX_LINE: usize = 1 << 20;

/// Lines of the adapter's stderr kept for error messages.
const STDERR_LINES: usize = 20;

/// How to run an adapter.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// The program and its arguments.
    pub command: Vec<String>,
    /// How long one reply may take.
    pub timeout: Duration,
    /// Steps per episode when the adapter does not say.
    pub step_limit: u32,
}

impl Options {
    /// Runs `command` with a 60 s timeout and a 50-step limit.
    pub fn new(command: Vec<String>) -> Options {
        Options {
            command,
            timeout: Duration::from_secs(60),
            step_limit: 50,
        }
    }

    /// The command line for messages; an inline script (`python3 -c SCRIPT`) is shown by its
    /// size, not its text.
    fn program(&self) -> String {
        self.command
            .iter()
            .map(|a| match a.lines().count() {
                0 | 1 => a.clone(),
                n => format!("<script of {n} lines>"),
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A running adapter.
struct Process {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<Line>,
    stderr: Arc<Mutex<VecDeque<String>>>,
}

enum Line {
    Text(Vec<u8>),
    TooLong,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetReply {
    observation: String,
    goal: String,
    #[serde(default)]
    step_limit: Option<u32>,
    #[serde(default)]
    commands: Option<String>,
    #[serde(default)]
    example: Option<String>,
    #[serde(default)]
    walkthrough: Option<Vec<String>>,
    #[serde(default)]
    places: Option<Vec<String>>,
    #[serde(default)]
    at: Option<String>,
    #[serde(default)]
    holding: Option<Vec<String>>,
    #[serde(default)]
    state: Option<String>,
}

/// The optional view fields a reset or step reply may carry (see [`View`]). They are
/// repeated in each reply struct because serde's `flatten` does not combine with
/// `deny_unknown_fields`.
struct ViewFields {
    places: Option<Vec<String>>,
    at: Option<String>,
    holding: Option<Vec<String>>,
    state: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepReply {
    observation: String,
    done: bool,
    won: bool,
    #[serde(default)]
    score: Option<f32>,
    #[serde(default)]
    invalid: bool,
    #[serde(default)]
    places: Option<Vec<String>>,
    #[serde(default)]
    at: Option<String>,
    #[serde(default)]
    holding: Option<Vec<String>>,
    #[serde(default)]
    state: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdmissibleReply {
    commands: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExemplarsReply {
    tasks: Vec<String>,
}

/// An environment served by an adapter process.
pub struct External {
    options: Options,
    process: Option<Process>,
    started: bool,
    step_limit: u32,
    steps: u32,
    done: bool,
    /// What the adapter last said of places, position and inventory.
    view: View,
}

impl External {
    /// Takes the view fields a reply carried: places stay until the adapter names new ones;
    /// position, inventory and state are as the latest reply says (absent: nowhere, nothing,
    /// no account).
    fn see(&mut self, v: ViewFields) {
        if let Some(p) = v.places {
            self.view.places = p;
        }
        self.view.at = v.at;
        self.view.holding = v.holding.unwrap_or_default();
        self.view.state = v.state;
    }
}

impl std::fmt::Debug for External {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("External")
            .field("command", &self.options.command)
            .field("running", &self.process.is_some())
            .field("steps", &self.steps)
            .finish()
    }
}

impl External {
    /// An external environment; the adapter starts at the first `reset`.
    pub fn new(options: Options) -> External {
        let step_limit = options.step_limit;
        External {
            options,
            process: None,
            started: false,
            step_limit,
            view: View::default(),
            steps: 0,
            done: false,
        }
    }

    fn spawn(&self) -> Result<Process, Error> {
        let (program, args) = self
            .options
            .command
            .split_first()
            .ok_or_else(|| Error::Spawn {
                program: String::new(),
                cause: "the command is empty".into(),
            })?;
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::Spawn {
                program: self.options.program(),
                cause: e.to_string(),
            })?;
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr_pipe = child.stderr.take().expect("stderr is piped");

        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            loop {
                let mut buf = Vec::new();
                match reader
                    .by_ref()
                    .take(MAX_LINE as u64 + 1)
                    .read_until(b'\n', &mut buf)
                {
                    Ok(0) | Err(_) => break,
                    Ok(_) if buf.len() > MAX_LINE => {
                        let _ = tx.send(Line::TooLong);
                        break;
                    }
                    Ok(_) => {
                        if tx.send(Line::Text(buf)).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        let tail = Arc::clone(&stderr);
        let program = self.options.program();
        thread::spawn(move || {
            for line in BufReader::new(stderr_pipe).lines() {
                let Ok(line) = line else { break };
                tracing::debug!(adapter = %program, "{line}");
                let mut tail = tail.lock().unwrap_or_else(|p| p.into_inner());
                if tail.len() == STDERR_LINES {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        });
        Ok(Process {
            child,
            stdin,
            lines,
            stderr,
        })
    }

    /// Sends one request and reads its reply; any fault kills the adapter.
    fn call(&mut self, request: Value, op: &'static str) -> Result<Value, Error> {
        let program = self.options.program();
        let timeout = self.options.timeout;
        let process = self.process.as_mut().ok_or(Error::NotStarted)?;
        let result = exchange(process, &request, op, timeout, &program);
        if result.is_err() {
            self.kill();
        }
        result
    }

    fn fault(&self, op: &'static str, line: &Value, reason: impl ToString) -> Error {
        Error::Protocol {
            program: self.options.program(),
            op,
            line: excerpt(line.to_string().as_bytes()),
            reason: reason.to_string(),
        }
    }

    fn typed<T: for<'de> Deserialize<'de>>(
        &mut self,
        request: Value,
        op: &'static str,
    ) -> Result<T, Error> {
        let reply = self.call(request, op)?;
        if let Some(message) = reply.get("error") {
            return Err(Error::Adapter {
                program: self.options.program(),
                op,
                message: match message {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                },
            });
        }
        match T::deserialize(&reply) {
            Ok(t) => Ok(t),
            Err(e) => {
                let err = self.fault(op, &reply, e);
                self.kill();
                Err(err)
            }
        }
    }

    fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
        self.started = false;
    }
}

fn exchange(
    process: &mut Process,
    request: &Value,
    op: &'static str,
    timeout: Duration,
    program: &str,
) -> Result<Value, Error> {
    let exited = |process: &mut Process| {
        // Give the process a moment to finish dying so its status and stderr are known.
        let deadline = Instant::now() + Duration::from_millis(500);
        let status = loop {
            match process.child.try_wait() {
                Ok(Some(s)) => break s.to_string(),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
                _ => break "still running, but its stdout closed".into(),
            }
        };
        thread::sleep(Duration::from_millis(20));
        let stderr = process
            .stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join("\n");
        Error::Exited {
            program: program.to_owned(),
            op,
            status,
            stderr,
        }
    };
    let mut line = request.to_string();
    line.push('\n');
    if process
        .stdin
        .write_all(line.as_bytes())
        .and_then(|()| process.stdin.flush())
        .is_err()
    {
        return Err(exited(process));
    }
    match process.lines.recv_timeout(timeout) {
        Ok(Line::Text(bytes)) => {
            serde_json::from_slice::<Value>(&bytes).map_err(|e| Error::Protocol {
                program: program.to_owned(),
                op,
                line: excerpt(&bytes),
                reason: format!("not JSON: {e}"),
            })
        }
        Ok(Line::TooLong) => Err(Error::Protocol {
            program: program.to_owned(),
            op,
            line: String::new(),
            reason: format!("reply longer than {MAX_LINE} bytes"),
        }),
        Err(RecvTimeoutError::Timeout) => Err(Error::Timeout {
            program: program.to_owned(),
            op,
            after: timeout,
        }),
        Err(RecvTimeoutError::Disconnected) => Err(exited(process)),
    }
}

/// The start of a line, as text, for error messages.
fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim_end();
    match text.char_indices().nth(120) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_owned(),
    }
}

impl Environment for External {
    fn reset(&mut self, task: &TaskRef) -> Result<Reset, Error> {
        if self.process.is_none() {
            self.process = Some(self.spawn()?);
        }
        self.started = false;
        let reply: ResetReply =
            self.typed(json!({"op": "reset", "task": task.to_string()}), "reset")?;
        if reply.step_limit == Some(0) {
            let err = self.fault(
                "reset",
                &json!({"step_limit": 0}),
                "step_limit must be positive",
            );
            self.kill();
            return Err(err);
        }
        self.step_limit = reply.step_limit.unwrap_or(self.options.step_limit);
        self.steps = 0;
        self.done = false;
        self.started = true;
        self.view = View::default();
        self.see(ViewFields {
            places: reply.places,
            at: reply.at,
            holding: reply.holding,
            state: reply.state,
        });
        Ok(Reset {
            observation: reply.observation,
            goal: reply.goal,
            commands: reply.commands,
            example: reply.example,
            walkthrough: reply.walkthrough,
        })
    }

    fn step(&mut self, command: &str) -> Result<Step, Error> {
        if !self.started {
            return Err(Error::NotStarted);
        }
        if self.done {
            return Ok(Step {
                observation: "The episode is over.".into(),
                done: true,
                won: false,
                score: None,
                invalid: false,
            });
        }
        let reply: StepReply = self.typed(json!({"op": "step", "command": command}), "step")?;
        if let Some(s) = reply.score
            && !(0.0..=1.0).contains(&s)
        {
            let err = self.fault("step", &json!({"score": s}), "score must be in [0, 1]");
            self.kill();
            return Err(err);
        }
        self.steps += 1;
        self.done = reply.done || reply.won || self.steps >= self.step_limit;
        self.see(ViewFields {
            places: reply.places,
            at: reply.at,
            holding: reply.holding,
            state: reply.state,
        });
        Ok(Step {
            observation: reply.observation,
            done: self.done,
            won: reply.won,
            score: reply.score,
            invalid: reply.invalid,
        })
    }

    fn admissible_commands(&mut self) -> Result<Vec<String>, Error> {
        if !self.started {
            return Err(Error::NotStarted);
        }
        let reply: AdmissibleReply = self.typed(json!({"op": "admissible"}), "admissible")?;
        Ok(reply.commands)
    }

    fn step_limit(&self) -> u32 {
        self.step_limit
    }

    fn view(&mut self) -> Result<View, Error> {
        if !self.started {
            return Err(Error::NotStarted);
        }
        Ok(self.view.clone())
    }

    fn exemplar_tasks(
        &mut self,
        task: &TaskRef,
        count: usize,
        same_type: bool,
    ) -> Result<Vec<TaskRef>, Error> {
        if count == 0 {
            return Ok(Vec::new());
        }
        if self.process.is_none() {
            self.process = Some(self.spawn()?);
        }
        let request = json!({"op": "exemplars", "task": task.to_string(), "count": count,
                             "same_type": same_type});
        let reply: ExemplarsReply = self.typed(request, "exemplars")?;
        let mut out = Vec::new();
        for name in reply.tasks.into_iter().take(count) {
            // Held out means held out: only the suite's train tasks may become examples.
            match name.parse::<TaskRef>() {
                Ok(t) if t.suite == task.suite && t.split == Split::Train && t != *task => {
                    out.push(t)
                }
                _ => {
                    let err = self.fault(
                        "exemplars",
                        &json!({"tasks": [name]}),
                        format!("an exemplar must be a {}/train task", task.suite),
                    );
                    self.kill();
                    return Err(err);
                }
            }
        }
        Ok(out)
    }
}

impl Drop for External {
    fn drop(&mut self) {
        let Some(mut p) = self.process.take() else {
            return;
        };
        // Ask politely, then insist.
        let _ = p.stdin.write_all(b"{\"op\":\"close\"}\n");
        let _ = p.stdin.flush();
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = p.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
        let _ = p.child.kill();
        let _ = p.child.wait();
    }
}
