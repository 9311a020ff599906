//! In-task rewriting: the harness's `rewrite-policy` component says when the agent may change
//! its own harness (no progress for k steps, k invalid commands, a loop, or the model asking)
//! and which algebra operations it may use. When it fires, the model is shown a compact trace
//! and a numbered menu of concrete edits and picks one (by log-likelihood, which small models
//! do reliably). The edit is applied to the episode's copy through the algebra: an edit that
//! would make the harness invalid, or write more text than the policy allows, is refused and
//! the episode goes on. An applied edit is watched for `rollback-window` steps and undone if
//! the agent made less progress in that window than in the same number of steps before it.

use hx_common::harness::algebra::{Edit, TextEdit};
use hx_common::harness::catalog::Kind;
use hx_common::harness::param::ParamValue;
use hx_common::harness::{Component, Harness};
use hx_common::protocol::RewriteRecord;

use super::trace::{Event, Trace};
use super::{Error, State, record};
use hx_model::{Message, ModelBackend, Role, ScoreRequest};

/// An edit offered to the model, with the words it is offered in.
#[derive(Debug, Clone)]
pub struct Option_ {
    /// How the model reads it.
    pub label: String,
    /// The edit.
    pub edit: Edit,
}

struct Pending {
    before: Harness,
    step: u32,
    /// Net progress in the `window` steps before the rewrite.
    net_before: i64,
    window: usize,
    record: usize,
}

/// The rewrite state of one episode.
pub struct Rewriter {
    enabled: bool,
    /// Every rewrite tried.
    pub records: Vec<RewriteRecord>,
    pending: Option<Pending>,
    fired_at: u32,
    invalid_at: u32,
    loops_at: u32,
}

/// Net progress over turns `from..to`: steps that made progress minus commands that did
/// nothing.
fn net_progress(st: &State, from: usize, to: usize) -> i64 {
    st.turns[from.min(st.turns.len())..to.min(st.turns.len())]
        .iter()
        .map(|t| i64::from(t.progress) - i64::from(t.invalid))
        .sum()
}

impl Rewriter {
    /// `enabled` false turns rewriting off whatever the harness says.
    pub fn new(enabled: bool) -> Rewriter {
        Rewriter {
            enabled,
            records: Vec::new(),
            pending: None,
            fired_at: 0,
            invalid_at: 0,
            loops_at: 0,
        }
    }

    /// After a step: resolve a watched rewrite, or fire the policy. Returns the harness to use
    /// from now on when it changed.
    pub(super) fn after_step(
        &mut self,
        model: &dyn ModelBackend,
        h: &Harness,
        st: &mut State,
        trace: &mut Trace,
    ) -> Result<Option<Harness>, Error> {
        let Some(policy) = h.in_group("rewrite-policy").cloned() else {
            return Ok(self.resolve(st, trace, false));
        };
        if let Some(p) = &self.pending {
            if st.step - p.step >= policy.int("rollback-window") as u32 {
                return Ok(self.resolve(st, trace, false));
            }
            return Ok(None);
        }
        if !self.enabled || self.records.len() as i64 >= policy.int("max-rewrites") {
            return Ok(None);
        }
        let Some(trigger) = self.trigger(&policy, st, trace) else {
            return Ok(None);
        };
        self.fired_at = st.step;
        self.invalid_at = st.invalid;
        self.loops_at = st.loops;
        let menu = menu(h, &policy, st);
        if menu.is_empty() {
            return Ok(None);
        }
        let choice = choose(model, st, trace, &trigger, &menu)?;
        let edit = menu[choice].edit.clone();
        let before = h.id();
        let max_chars = policy.int("max-text-chars") as usize;
        let applied = if text_len(&edit) > max_chars {
            Err(format!(
                "writes {} characters; the policy allows {max_chars}",
                text_len(&edit)
            ))
        } else {
            h.apply(&edit).map_err(|e| e.to_string())
        };
        match applied {
            Ok(new) => {
                let w = policy.int("rollback-window") as usize;
                let n = st.turns.len();
                self.records.push(RewriteRecord {
                    task: st.task.clone(),
                    step: st.step,
                    trigger: trigger.clone(),
                    edit: edit.clone(),
                    before,
                    after: new.id(),
                    kept: true,
                });
                trace.push(Event::Rewrite {
                    step: st.step,
                    trigger,
                    edit: Some(edit),
                    before,
                    after: new.id(),
                    result: "applied".into(),
                });
                self.pending = Some(Pending {
                    before: h.clone(),
                    step: st.step,
                    net_before: net_progress(st, n.saturating_sub(w), n),
                    window: w,
                    record: self.records.len() - 1,
                });
                Ok(Some(new))
            }
            Err(reason) => {
                self.records.push(RewriteRecord {
                    task: st.task.clone(),
                    step: st.step,
                    trigger: trigger.clone(),
                    edit: edit.clone(),
                    before,
                    after: before,
                    kept: false,
                });
                trace.push(Event::Rewrite {
                    step: st.step,
                    trigger,
                    edit: Some(edit),
                    before,
                    after: before,
                    result: format!("refused: {reason}"),
                });
                Ok(None)
            }
        }
    }

    /// Ends the watch on a pending rewrite: rolled back if net progress (steps that made
    /// progress minus commands that did nothing) was lower after it than in as many steps
    /// before it. At the end of an episode a short window is compared at the same rate.
    fn resolve(&mut self, st: &State, trace: &mut Trace, at_end: bool) -> Option<Harness> {
        let p = self.pending.take()?;
        let window = (st.step - p.step) as usize;
        let start = st.turns.len() - window;
        let after = net_progress(st, start, st.turns.len());
        let before = if at_end && window < p.window {
            // Scale the earlier window's net progress to the length of the later one.
            (p.net_before as f64 * window as f64 / p.window as f64).floor() as i64
        } else {
            p.net_before
        };
        let worse = after < before && st.score < 1.0;
        if !worse {
            return None;
        }
        let r = &mut self.records[p.record];
        r.kept = false;
        trace.push(Event::Rewrite {
            step: st.step,
            trigger: r.trigger.clone(),
            edit: Some(r.edit.clone()),
            before: r.after,
            after: r.before,
            result: "rolled-back".into(),
        });
        Some(p.before)
    }

    /// Settles a rewrite still watched when the episode ends.
    pub(super) fn finish(&mut self, st: &mut State, trace: &mut Trace) {
        self.resolve(st, trace, true);
    }

    fn trigger(&self, policy: &Component, st: &State, trace: &Trace) -> Option<String> {
        let since = st.step - st.last_progress.max(self.fired_at);
        let k = policy.int("no-progress-steps") as u32;
        if k > 0 && since >= k {
            return Some("no-progress".into());
        }
        let k = policy.int("invalid-commands") as u32;
        if k > 0 && st.invalid - self.invalid_at >= k {
            return Some("invalid-commands".into());
        }
        if policy.flag("on-loop") && st.loops > self.loops_at {
            return Some("loop".into());
        }
        if policy.flag("model-may-ask") {
            let asked = trace.events.iter().rev().find_map(|e| match e {
                Event::Model {
                    purpose, output, ..
                } if purpose == "act" => Some(output.to_lowercase().contains("[rewrite]")),
                _ => None,
            });
            if asked == Some(true) {
                return Some("asked".into());
            }
        }
        None
    }
}

fn text_len(edit: &Edit) -> usize {
    match edit {
        Edit::EditText { edit, .. } => match edit {
            TextEdit::Set(t) | TextEdit::Append(t) => t.chars().count(),
            TextEdit::Replace { with, .. } => with.chars().count(),
        },
        Edit::Insert { component, .. } | Edit::Replace { component } => component
            .params
            .values()
            .filter_map(ParamValue::as_text)
            .map(|t| t.chars().count())
            .max()
            .unwrap_or(0),
        Edit::SetParameter { value, .. } => value.as_text().map_or(0, |t| t.chars().count()),
        _ => 0,
    }
}

/// The concrete edits on offer, in the operations the policy allows. Useful changes come
/// first; removals of every component are offered too, and the algebra refuses the ones that
/// would leave an invalid harness (removing the action selector, say).
pub(super) fn menu(h: &Harness, policy: &Component, st: &State) -> Vec<Option_> {
    let allowed: Vec<String> = policy
        .param("allowed")
        .and_then(ParamValue::as_list)
        .map(<[String]>::to_vec)
        .unwrap_or_default();
    let may = |op: &str| allowed.iter().any(|a| a == op);
    let mut out = Vec::new();
    let failed = st.failures.back().cloned().or_else(|| {
        st.turns
            .iter()
            .rev()
            .find(|t| !t.progress)
            .map(|t| t.command.clone())
    });
    if may("insert") {
        let mut add = |label: &str, c: Component| {
            if h.component(&c.name).is_none()
                && c.group().is_none_or(|g| h.in_group(g).is_none())
                && c.tool().is_none_or(|t| h.tool(t).is_none())
            {
                out.push(Option_ {
                    label: label.to_owned(),
                    edit: Edit::Insert {
                        component: c,
                        edges: Vec::new(),
                    },
                });
            }
        };
        add(
            "remember the commands that did nothing",
            Component::new("failures", Kind::FailureMemory),
        );
        add(
            "list the places not visited yet",
            Component::new("unvisited", Kind::Tool)
                .with("tool", ParamValue::Text("unvisited".into())),
        );
        add(
            "keep a log of the places visited",
            Component::new("places", Kind::VisitedLog),
        );
        add(
            "show the commands that are possible now",
            Component::new("admissible", Kind::Tool)
                .with("tool", ParamValue::Text("admissible-commands".into())),
        );
        add(
            "stop repeating a command that does nothing",
            Component::new("loops", Kind::LoopGuard),
        );
        add(
            "reflect on what is going wrong",
            Component::new("reflect", Kind::Reflection),
        );
        if let Some(f) = &failed {
            let n = h.components().filter(|c| c.kind == Kind::Hint).count();
            add(
                &format!("add the hint: do not repeat \"{f}\""),
                Component::new(format!("hint-{}", n + 1), Kind::Hint).with(
                    "text",
                    ParamValue::Text(format!("Do not repeat \"{f}\"; try something else.")),
                ),
            );
        }
    }
    if may("replace") && h.action_selector().kind != Kind::LoglikScoring {
        out.push(Option_ {
            label: "choose commands among the possible ones by likelihood".into(),
            edit: Edit::Replace {
                component: Component::new("act", Kind::LoglikScoring),
            },
        });
    }
    if may("set-parameter") {
        if let Some(c) = h.in_group("history") {
            let steps = c.int("steps");
            if steps < 100 {
                out.push(Option_ {
                    label: format!(
                        "remember more steps ({} instead of {steps})",
                        (steps * 2).min(100)
                    ),
                    edit: Edit::SetParameter {
                        component: c.name.clone(),
                        param: "steps".into(),
                        value: ParamValue::Int((steps * 2).min(100)),
                    },
                });
            }
        }
        let sel = h.action_selector();
        if sel.kind == Kind::FreeGeneration {
            let t = sel.float("temperature");
            out.push(Option_ {
                label: if t == 0.0 {
                    "answer less predictably (temperature 0.7)".into()
                } else {
                    "answer predictably (temperature 0)".into()
                },
                edit: Edit::SetParameter {
                    component: sel.name.clone(),
                    param: "temperature".into(),
                    value: ParamValue::Float(if t == 0.0 { 0.7 } else { 0.0 }),
                },
            });
        }
    }
    if may("edit-text")
        && let (Some(sys), Some(f)) = (h.in_group("system-prompt"), &failed)
    {
        out.push(Option_ {
            label: format!("tell yourself in the system prompt to avoid \"{f}\""),
            edit: Edit::EditText {
                component: sys.name.clone(),
                param: "text".into(),
                edit: TextEdit::Append(format!("\nAvoid \"{f}\": it did not help.")),
            },
        });
    }
    if may("remove") {
        for c in h.components() {
            if c.kind != Kind::SystemPrompt && c.kind != Kind::RewritePolicy {
                out.push(Option_ {
                    label: format!("remove {} ({})", c.name, c.kind.as_str()),
                    edit: Edit::Remove {
                        name: c.name.clone(),
                    },
                });
            }
        }
    }
    out.truncate(12);
    out
}

fn choose(
    model: &dyn ModelBackend,
    st: &mut State,
    trace: &mut Trace,
    trigger: &str,
    menu: &[Option_],
) -> Result<usize, Error> {
    let mut recent = String::new();
    for t in st.turns.iter().rev().take(6).rev() {
        recent.push_str(&format!("> {}\n{}\n", t.command, t.observation));
    }
    let options: Vec<String> = menu
        .iter()
        .enumerate()
        .map(|(i, o)| format!("{}. {}", i + 1, o.label))
        .collect();
    let prompt = format!(
        "Your task is to: {}\nRecent steps:\n{recent}\nYou are stuck ({trigger}). You may change how you work. Options:\n{}\nWhich option helps most?",
        st.goal,
        options.join("\n")
    );
    let messages = vec![
        Message::new(
            Role::System,
            "You improve your own way of working on a task.",
        ),
        Message::new(Role::User, prompt.clone()),
    ];
    let s = model.score(&ScoreRequest {
        messages,
        candidates: options.clone(),
    })?;
    st.usage += s.usage;
    let best = (0..options.len())
        .max_by(|&a, &b| {
            let va = s.logprobs[a] / f64::from(s.tokens[a].max(1));
            let vb = s.logprobs[b] / f64::from(s.tokens[b].max(1));
            va.total_cmp(&vb)
        })
        .unwrap_or(0);
    record(trace, st, "rewrite", &prompt, s.usage, &options[best]);
    Ok(best)
}
