//! Few-shot exemplars: expert traces of **train** tasks only, played in the real environment so
//! the observations are the world's own. Validation and test tasks never appear, whatever task
//! the agent is on. Built-in suites generate theirs; a world behind an adapter names its train
//! tasks ([`Environment::exemplar_tasks`]) and its walkthroughs are played ([`from_world`]).

use hx_common::task::{Split, TaskRef};

use hx_env::household;
use hx_env::{Builtin, Environment, Error};

/// An exemplar: the task it came from and its text.
#[derive(Debug, Clone)]
pub struct Exemplar {
    /// Always a train task.
    pub task: TaskRef,
    /// The episode as the model will read it.
    pub text: String,
    /// Its goal.
    pub goal: String,
    /// The commands the expert sent, in order.
    pub plan: Vec<String>,
}

fn mix(a: u64, b: u64) -> u64 {
    let mut x = a ^ b.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^ (x >> 33)
}

/// Up to `count` exemplars for `task`, preferring (for the household suite) tasks of the same
/// type when `same_type` is set. Deterministic in the task. Suites hx does not generate get
/// theirs from the world, before the episode starts ([`from_world`]).
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
        if let Some((text, goal, plan)) = play(suite, &candidate) {
            out.push(Exemplar {
                task: candidate,
                text,
                goal,
                plan,
            });
        }
    }
    out
}

/// The exemplar's text, goal and plan.
fn play(suite: Builtin, task: &TaskRef) -> Option<(String, String, Vec<String>)> {
    let g = suite.generate(task).ok()?;
    let mut env = suite.environment();
    let r = env.reset(task).ok()?;
    let mut text = format!("{}\nYour task is to: {}\n", r.observation, r.goal);
    for cmd in &g.plan {
        let s = env.step(cmd).ok()?;
        text.push_str(&format!("> {cmd}\n{}\n", s.observation));
    }
    Some((text, r.goal, g.plan))
}

/// Up to `count` exemplars for `task` from `env` itself: the train tasks it names
/// ([`Environment::exemplar_tasks`]), each reset and played along its walkthrough. This resets
/// `env`, so it runs before the episode's own reset. A named task without a walkthrough, or
/// one whose walkthrough the world refuses, is left out; a world that names none gives none.
pub fn from_world(
    env: &mut dyn Environment,
    task: &TaskRef,
    count: usize,
    same_type: bool,
) -> Result<Vec<Exemplar>, Error> {
    let mut out = Vec::new();
    for t in env.exemplar_tasks(task, count, same_type)? {
        if t.split != Split::Train || t == *task {
            continue;
        }
        let r = env.reset(&t)?;
        let Some(plan) = r.walkthrough else { continue };
        // Adapters' first observations often state the goal already (ALFWorld's do).
        let mut text = r.observation.trim_end().to_owned();
        if !text.contains(&r.goal) {
            text.push_str(&format!("\nYour task is to: {}", r.goal));
        }
        text.push('\n');
        let mut played = true;
        for cmd in &plan {
            let s = env.step(cmd)?;
            if s.invalid {
                played = false;
                break;
            }
            text.push_str(&format!("> {cmd}\n{}\n", s.observation.trim_end()));
            if s.done {
                break;
            }
        }
        if played {
            out.push(Exemplar {
                task: t,
                text,
                goal: r.goal,
                plan,
            });
        }
    }
    Ok(out)
}
