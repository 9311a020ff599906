//! Few-shot exemplars: expert traces of **train** tasks only, played in the real environment so
//! the observations are the world's own. Validation and test tasks never appear, whatever task
//! the agent is on.

use hx_common::task::{Split, TaskRef};

use hx_env::Builtin;
use hx_env::household;

/// An exemplar: the task it came from and its text.
#[derive(Debug, Clone)]
pub struct Exemplar {
    /// Always a train task.
    pub task: TaskRef,
    /// The episode as the model will read it.
    pub text: String,
}

fn mix(a: u64, b: u64) -> u64 {
    let mut x = a ^ b.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^ (x >> 33)
}

/// Up to `count` exemplars for `task`, preferring (for the household suite) tasks of the same
/// type when `same_type` is set. Deterministic in the task. Suites hx does not generate have
/// no exemplars.
pub fn for_task(task: &TaskRef, count: usize, same_type: bool) -> Vec<Exemplar> {
    let Ok(suite) = Builtin::from_name(&task.suite) else {
        return Vec::new();
    };
    let kind = match suite {
        Builtin::Household if same_type => household::generate(task).ok().map(|t| t.kind),
        _ => None,
    };
    let mut out = Vec::new();
    for i in 0..200u64 {
        if out.len() >= count {
            break;
        }
        let candidate = TaskRef {
            suite: task.suite.clone(),
            split: Split::Train,
            seed: mix(task.seed ^ ((task.split as u64) << 60), i) % 1_000_000,
        };
        if candidate == *task {
            continue;
        }
        if let Some(k) = kind
            && household::generate(&candidate).map(|t| t.kind).ok() != Some(k)
            && i < 150
        {
            continue;
        }
        if let Some(text) = play(suite, &candidate) {
            out.push(Exemplar {
                task: candidate,
                text,
            });
        }
    }
    out
}

fn play(suite: Builtin, task: &TaskRef) -> Option<String> {
    let g = suite.generate(task).ok()?;
    let mut env = suite.environment();
    let r = env.reset(task).ok()?;
    let mut text = format!("{}\nYour task is to: {}\n", r.observation, r.goal);
    for cmd in &g.plan {
        let s = env.step(cmd).ok()?;
        text.push_str(&format!("> {cmd}\n{}\n", s.observation));
    }
    Some(text)
}
