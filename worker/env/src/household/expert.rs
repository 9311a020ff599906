//! The expert: a planner with full knowledge of the world that solves every household task.
//!
//! Every task is a fetch (go, open if closed, take), an optional treatment (go to the
//! appliance, use it), and a delivery (go, open if closed, put), or for examine tasks a fetch
//! then lighting the lamp. The expert tries every choice of object instances, target
//! receptacle and appliance, counts each plan's commands without rendering them, and returns
//! the shortest, checked by playing it in a copy of the world.

use super::catalog::Treatment;
use super::world::{Goal, LAMP, Loc, World};

#[derive(Debug, Clone, Copy)]
enum Action {
    Go(usize),
    Open(usize),
    Take(usize, usize),
    Put(usize, usize),
    Treat(Treatment, usize, usize),
    UseLamp,
}

/// Just enough state to count a plan: where the agent is and what is open.
struct Sketch {
    at: Option<usize>,
    open: Vec<bool>,
    plan: Vec<Action>,
}

impl Sketch {
    fn new(w: &World) -> Sketch {
        Sketch {
            at: w.at,
            open: w.receptacles.iter().map(|r| r.open).collect(),
            plan: Vec::new(),
        }
    }

    fn reach(&mut self, r: usize) {
        if self.at != Some(r) {
            self.plan.push(Action::Go(r));
            self.at = Some(r);
        }
        if !self.open[r] {
            self.plan.push(Action::Open(r));
            self.open[r] = true;
        }
    }

    fn go(&mut self, r: usize) {
        if self.at != Some(r) {
            self.plan.push(Action::Go(r));
            self.at = Some(r);
        }
    }
}

fn render(w: &World, a: Action) -> String {
    let r = |i: usize| &w.receptacles[i].name;
    let o = |i: usize| &w.objects[i].name;
    match a {
        Action::Go(x) => format!("go to {}", r(x)),
        Action::Open(x) => format!("open {}", r(x)),
        Action::Take(obj, x) => format!("take {} from {}", o(obj), r(x)),
        Action::Put(obj, x) => format!(
            "put {} {} {}",
            o(obj),
            w.receptacles[x].kind.preposition,
            r(x)
        ),
        Action::Treat(t, obj, x) => format!("{} {} with {}", t.verb(), o(obj), r(x)),
        Action::UseLamp => format!("use {LAMP}"),
    }
}

/// Ordered choices of `k` distinct items from `items`.
fn arrangements(items: &[usize], k: usize) -> Vec<Vec<usize>> {
    if k == 0 {
        return vec![vec![]];
    }
    let mut out = Vec::new();
    for (i, &first) in items.iter().enumerate() {
        let rest: Vec<usize> = items
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, &x)| x)
            .collect();
        for mut tail in arrangements(&rest, k - 1) {
            tail.insert(0, first);
            out.push(tail);
        }
    }
    out
}

/// The shortest plan the expert finds, as commands, or `None` if it finds none that wins.
pub fn solve(world: &World) -> Option<Vec<String>> {
    let mut best: Option<Vec<Action>> = None;
    let mut consider = |plan: Vec<Action>| {
        if best.as_ref().is_none_or(|b| plan.len() < b.len()) {
            best = Some(plan);
        }
    };
    let source = |o: usize| match world.objects[o].loc {
        Loc::In(r) => Some(r),
        Loc::Held => None,
    };
    match &world.goal {
        Goal::Place {
            object,
            target,
            count,
            treatment,
        } => {
            let candidates: Vec<usize> = (0..world.objects.len())
                .filter(|&o| {
                    let obj = &world.objects[o];
                    obj.kind.name == *object
                        && obj.kind.portable
                        && treatment.is_none_or(|t| obj.kind.treatments.contains(&t))
                        && source(o).is_some()
                })
                .collect();
            let targets: Vec<usize> = (0..world.receptacles.len())
                .filter(|&r| world.receptacles[r].kind.name == *target)
                .collect();
            let appliances: Vec<Option<usize>> = match treatment {
                None => vec![None],
                Some(t) => (0..world.receptacles.len())
                    .filter(|&r| world.receptacles[r].kind.appliance == Some(*t))
                    .map(Some)
                    .collect(),
            };
            if world.held().is_some() {
                return None; // tasks start empty-handed
            }
            for picks in arrangements(&candidates, *count) {
                for &t in &targets {
                    if picks.iter().any(|&o| source(o) == Some(t)) {
                        continue;
                    }
                    for &app in &appliances {
                        let mut s = Sketch::new(world);
                        for &o in &picks {
                            let src = source(o).expect("filtered to placed objects");
                            s.reach(src);
                            s.plan.push(Action::Take(o, src));
                            if let (Some(a), Some(tr)) = (app, treatment) {
                                s.go(a);
                                s.plan.push(Action::Treat(*tr, o, a));
                            }
                            s.reach(t);
                            s.plan.push(Action::Put(o, t));
                        }
                        consider(s.plan);
                    }
                }
            }
        }
        Goal::Examine { object } => {
            let lamp = world.lamp.as_ref()?;
            for o in 0..world.objects.len() {
                let obj = &world.objects[o];
                let Some(src) = source(o) else { continue };
                if obj.kind.name != *object || !obj.kind.portable {
                    continue;
                }
                let mut s = Sketch::new(world);
                s.reach(src);
                s.plan.push(Action::Take(o, src));
                s.go(lamp.at);
                s.plan.push(Action::UseLamp);
                consider(s.plan);
            }
        }
    }
    let plan: Vec<String> = best?.into_iter().map(|a| render(world, a)).collect();
    // Play it for real: the plan counts only if the world agrees it wins, and only at the end.
    let mut check = world.clone();
    for (i, cmd) in plan.iter().enumerate() {
        let obs = check.act(cmd);
        if obs == "Nothing happens." || (check.won() != (i + 1 == plan.len())) {
            return None;
        }
    }
    Some(plan)
}
