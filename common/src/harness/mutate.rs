//! Variation operators that need no model: how a child harness is made from one parent or two
//! by the algebra alone. (The model-guided text operator lives with the worker, which has a
//! model.)
//!
//! Every operator is a sequence of algebra [`Edit`]s (or, for crossover, a new document that is
//! validated like any file), so every child is a valid harness or an error naming why none
//! could be made. Choices are drawn from a generator seeded by the job, so a redelivered job
//! makes the same child, and a coordinator can make the child itself before sending any work.
//!
//! - **structural**: insert a component of a kind the parent lacks, remove one, or replace the
//!   action selector; a parameter the edit makes live (one the parent made moot) is drawn
//!   afresh over its range; [`neighbourhood`] makes every such child at once, for a search
//!   that screens its seeds' one-edit neighbourhood before it breeds at random;
//! - **parametric**: move one numeric, choice or flag parameter within its range (never one
//!   the rest of the harness makes moot), or two or three at once (half the children), so a
//!   search can cross a valley that one move at a time cannot (a greedy selector needs a goal
//!   bonus and a repeat penalty together to beat a sampled one); the search may weight which parameters move ([`parametric_weighted`]) by
//!   how often moving each has helped;
//! - **apply**: replay given edits (in-task rewrites that helped: Lamarckian adoption);
//! - **crossover**: each role's components come from one parent or the other, and a component
//!   both have takes each of its differing parameters from either.

use rand::seq::{IndexedRandom as _, SliceRandom as _};
use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;

use super::algebra::Edit;
use super::catalog::{Kind, Role, TOOLS};
use super::param::{ParamType, ParamValue};
use super::{Component, Harness, HarnessDoc};
use crate::protocol::{MutationOp, MutationSpec};

/// Why no child was made: the operator found no edit the algebra accepts, or the edits given
/// do not apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no valid child: {0}")]
pub struct NoValidChild(pub String);

/// A child and how it was made.
#[derive(Debug, Clone)]
pub struct Child {
    /// The child.
    pub harness: Harness,
    /// The edits that made it from the parent (empty for crossover).
    pub edits: Vec<Edit>,
    /// The operator's name: `structural`, `parametric`, `text`, `adopt` or `crossover`.
    pub operator: &'static str,
}

/// How many candidate edits an operator tries before it gives up.
pub const TRIES: usize = 24;

/// What bounds a parameter's effect beyond the catalog's range, so no operator makes a child
/// that plays exactly as its parent: the episode's own step limit caps a step budget's
/// `max-steps` (the agent stops at the smaller of the two).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// The steps an episode may take whatever the harness says; `None` for no known limit.
    pub episode_steps: Option<u32>,
}

impl Limits {
    /// The range over which `c`'s parameter `name` of type `ty` has any effect.
    fn range(self, c: &Component, name: &str, ty: ParamType) -> ParamType {
        match (ty, self.episode_steps) {
            (ParamType::Int { min, max }, Some(steps))
                if c.kind == Kind::StepBudget && name == "max-steps" =>
            {
                ParamType::Int {
                    min,
                    max: max.min(i64::from(steps)).max(min),
                }
            }
            _ => ty,
        }
    }

    /// Whether `c` changes nothing in `h` (a harness with it, or about to have it), so adding
    /// or removing it makes no child that plays differently: a step budget at or above the
    /// episode's limit; an observation view that shows observations raw, as they come; and,
    /// in a harness that cannot rewrite itself mid-task, an admissible check behind a
    /// selector that only ever picks an admissible command, or a scratchpad nothing writes
    /// into (only free generation takes notes).
    fn inert(self, h: &Harness, c: &Component) -> bool {
        let fixed = h.in_group("rewrite-policy").is_none();
        let selector = h.action_selector().kind;
        match c.kind {
            Kind::StepBudget => self
                .episode_steps
                .is_some_and(|steps| c.int("max-steps") >= i64::from(steps)),
            Kind::ObservationView => c.text("mode") == "raw",
            Kind::AdmissibleCheck => {
                fixed && matches!(selector, Kind::LoglikScoring | Kind::RandomChoice)
            }
            Kind::Scratchpad => {
                fixed
                    && matches!(
                        selector,
                        Kind::LoglikScoring | Kind::RandomChoice | Kind::SampleVote
                    )
            }
            _ => false,
        }
    }
}

/// Whether `c`'s parameter `name` can change nothing in `h` whatever its value, so moving it
/// would make a child that plays exactly as its parent: the scorer's `example-weight` where no
/// `few-shot` component shows an example (its prior follows the first example's plan), and
/// its `goal-match` while `goal-weight` is 0 (it says what that bonus rewards).
fn moot(h: &Harness, c: &Component, name: &str) -> bool {
    match (c.kind, name) {
        (Kind::LoglikScoring, "example-weight") => !h
            .components()
            .any(|f| f.kind == Kind::FewShot && f.int("count") > 0),
        (Kind::LoglikScoring, "goal-match") => c.float("goal-weight") == 0.0,
        _ => false,
    }
}

/// `h` with every moot parameter ([`moot`]: one no component reads, as the scorer's
/// `example-weight` without worked examples) set back to its kind's default (left unset, as
/// a file that does not name it), so harnesses that differ only where nothing reads are one
/// harness, one id. Removing the component that woke a parameter, then settling, gives back
/// the harness that had neither; the final stage's pruning does so and skips a removal that
/// gives back a harness it already compared.
pub fn settle(h: &Harness) -> Harness {
    let moot_params: Vec<(String, &'static str)> = h
        .components()
        .flat_map(|c| {
            c.spec()
                .params
                .iter()
                .filter(|p| c.params.contains_key(p.name) && moot(h, c, p.name))
                .map(|p| (c.name.clone(), p.name))
        })
        .collect();
    if moot_params.is_empty() {
        return h.clone();
    }
    let mut doc = h.to_doc();
    for c in &mut doc.components {
        c.params
            .retain(|name, _| !moot_params.iter().any(|(n, p)| *n == c.name && p == name));
    }
    // Unsetting a parameter another component ignores leaves every check the harness passed.
    Harness::from_doc(doc).unwrap_or_else(|_| h.clone())
}

/// Makes the child of a mutation that needs no model (every operator but text and
/// reflective), so a coordinator can know the child, and skip it if it was seen, before any
/// work is sent; `None` for the model-guided ones.
pub fn offline(
    parent: &Harness,
    spec: &MutationSpec,
    limits: Limits,
) -> Option<Result<Child, NoValidChild>> {
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    Some(match &spec.op {
        MutationOp::Text { .. } | MutationOp::Reflect { .. } => return None,
        MutationOp::Structural => {
            first_valid(parent, "structural", structural(parent, limits, &mut rng))
                .map(|child| wake(parent, child, limits, &mut rng))
        }
        MutationOp::Parametric => parametric_child(parent, limits, None, &mut rng),
        MutationOp::Apply { edits } => parent
            .apply_all(edits)
            .map_err(|e| NoValidChild(e.to_string()))
            .map(|harness| Child {
                harness,
                edits: edits.clone(),
                operator: "adopt",
            }),
    })
}

/// Every structural child of `parent`, each once: the moves the structural operator draws
/// one of (each component kind the parent lacks inserted, each tool it does not offer, each
/// of its components removed, its action selector replaced), in an order drawn from `seed`,
/// each with the parameters it makes live drawn afresh ([`wake`]). Edits the algebra refuses,
/// or that change nothing, make no child; two edits that make the same harness make one. A
/// search screens a seed's one-edit neighbourhood with these before it breeds at random.
///
/// A move that makes parameters live (the few-shot insert wakes the scorer's example prior)
/// gives `draws` children rather than one, the k-th drawing each such parameter from the
/// k-th of `draws` equal strata of its range (in an order drawn per parameter, as a Latin
/// hypercube), so the move is not judged on one unlucky draw. With `draws` 1 every move
/// gives one child drawn over the whole range, as the structural operator does.
pub fn neighbourhood(parent: &Harness, limits: Limits, seed: u64, draws: usize) -> Vec<Child> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // The moves' children before any draw, and the drawn children made so far.
    let (mut seen, mut made) = (
        std::collections::BTreeSet::new(),
        std::collections::BTreeSet::new(),
    );
    let mut out = Vec::new();
    let draws = draws.max(1);
    for edit in structural(parent, limits, &mut rng) {
        let Ok(harness) = parent.apply(&edit) else {
            continue;
        };
        if harness.id() == parent.id() || !seen.insert(harness.id()) {
            continue;
        }
        let child = Child {
            harness,
            edits: vec![edit],
            operator: "structural",
        };
        if draws == 1 {
            out.push(wake(parent, child, limits, &mut rng));
            continue;
        }
        // A move that wakes nothing makes the same child each time: `made` keeps one.
        let woken = woken(parent, &child.harness, limits);
        let orders = strata_orders(woken.len(), draws, &mut rng);
        for k in 0..draws {
            // The k-th child's stratum of each woken parameter.
            let row: Vec<usize> = orders.iter().map(|order| order[k]).collect();
            let drawn = set_drawn(child.clone(), &woken, &mut rng, |j| Stratum {
                k: row[j],
                of: draws,
            });
            if made.insert(drawn.harness.id()) {
                out.push(drawn);
            }
        }
    }
    out
}

/// Every mechanism of `parent` that is switched off, switched on: each parameter of a
/// searched component that is a number at 0 where its range starts at 0 and goes above it
/// (a prior's weight, a penalty, a top-k; moot ones left out, [`moot`]), set to a value above
/// 0 `draws` times, the k-th drawn from the k-th of `draws` equal parts of its range, and
/// each parameter the move makes live (the scorer's `goal-match` once `goal-weight` is on)
/// drawn with it as [`neighbourhood`] draws them. In an order drawn from `seed`; a value the
/// algebra refuses, or two draws that make one harness, make one child or none. A search
/// screens these beside the structural neighbourhood (`population.screen-priors`), so each
/// prior the catalog offers is judged in every run, where the parametric operator, moving a
/// dozen parameters at random, may never try one.
pub fn switch_ons(parent: &Harness, limits: Limits, seed: u64, draws: usize) -> Vec<Child> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let draws = draws.max(1);
    let mut moves = Vec::new();
    for c in parent.components().filter(|c| c.kind.searched()) {
        for p in c.spec().params {
            if moot(parent, c, p.name) {
                continue;
            }
            // The range above 0 of a number that is 0 now and may be more.
            let on = match limits.range(c, p.name, p.ty) {
                ParamType::Int { min: 0, max } if max > 0 && c.int(p.name) == 0 => {
                    ParamType::Int { min: 1, max }
                }
                ParamType::Float { min, max }
                    if min == 0.0 && max > 0.01 && c.float(p.name) == 0.0 =>
                {
                    ParamType::Float { min: 0.01, max }
                }
                _ => continue,
            };
            moves.push((c.name.clone(), p.name, on));
        }
    }
    moves.shuffle(&mut rng);
    let mut made = std::collections::BTreeSet::from([parent.id()]);
    let mut out = Vec::new();
    for (component, name, on) in moves {
        // Each child's stratum of the parameters the switch makes live, shuffled per
        // parameter; the switched parameter itself takes the k-th part in the k-th child.
        let mut orders: Option<Vec<Vec<usize>>> = None;
        for k in 0..draws {
            let Some(value) = draw(&on, Stratum { k, of: draws }, &mut rng) else {
                continue;
            };
            let edit = Edit::SetParameter {
                component: component.clone(),
                param: name.to_owned(),
                value,
            };
            let Ok(harness) = parent.apply(&edit) else {
                continue;
            };
            let child = Child {
                harness,
                edits: vec![edit],
                operator: "parametric",
            };
            let woken = woken(parent, &child.harness, limits);
            let orders = orders.get_or_insert_with(|| strata_orders(woken.len(), draws, &mut rng));
            let drawn = set_drawn(child, &woken, &mut rng, |j| Stratum {
                k: orders.get(j).map_or(0, |o| o[k]),
                of: if j < orders.len() { draws } else { 1 },
            });
            if made.insert(drawn.harness.id()) {
                out.push(drawn);
            }
        }
    }
    out
}

/// The first candidate edit that the algebra accepts and that changes the harness.
fn first_valid(
    parent: &Harness,
    operator: &'static str,
    candidates: Vec<Edit>,
) -> Result<Child, NoValidChild> {
    let mut last = String::from("no candidate edit");
    for edit in candidates.into_iter().take(TRIES) {
        match parent.apply(&edit) {
            Ok(h) if h.id() != parent.id() => {
                return Ok(Child {
                    harness: h,
                    edits: vec![edit],
                    operator,
                });
            }
            Ok(_) => last = "the edit changed nothing".into(),
            Err(e) => last = e.to_string(),
        }
    }
    Err(NoValidChild(format!("{operator}: {last}")))
}

/// `child` with each parameter its structural edit made live drawn afresh over its range:
/// one that was moot in `parent` ([`moot`]) and is not in the child, as the scorer's
/// `example-weight` when a `few-shot` component comes in. Its value in the parent was never
/// tested (at its default the example prior is off), so the child that gains worked examples
/// also tries a prior that follows them, which would otherwise take the parametric operator
/// several moves to reach.
fn wake(parent: &Harness, child: Child, limits: Limits, rng: &mut ChaCha8Rng) -> Child {
    let woken = woken(parent, &child.harness, limits);
    set_drawn(child, &woken, rng, |_| Stratum { k: 0, of: 1 })
}

/// `child` with each of the `woken` parameters ([`woken`]) set to a value [`draw`]n within
/// the stratum `strata` gives its index; a value the algebra refuses is left out.
fn set_drawn(
    mut child: Child,
    woken: &[(String, &'static str, ParamType)],
    rng: &mut ChaCha8Rng,
    strata: impl Fn(usize) -> Stratum,
) -> Child {
    for (j, (component, name, ty)) in woken.iter().enumerate() {
        let Some(value) = draw(ty, strata(j), rng) else {
            continue;
        };
        let edit = Edit::SetParameter {
            component: component.clone(),
            param: (*name).to_owned(),
            value,
        };
        if let Ok(h) = child.harness.apply(&edit) {
            child.harness = h;
            child.edits.push(edit);
        }
    }
    child
}

/// The parameters of `child` that its structural edit made live: on a searched component
/// `parent` has by name and kind, moot there ([`moot`]) and not in `child`; each with its
/// component's name and its range under `limits`.
fn woken(
    parent: &Harness,
    child: &Harness,
    limits: Limits,
) -> Vec<(String, &'static str, ParamType)> {
    let mut out = Vec::new();
    for c in child.components().filter(|c| c.kind.searched()) {
        let Some(before) = parent.component(&c.name).filter(|p| p.kind == c.kind) else {
            continue;
        };
        for p in c.spec().params {
            if !moot(parent, before, p.name) || moot(child, c, p.name) {
                continue;
            }
            out.push((c.name.clone(), p.name, limits.range(c, p.name, p.ty)));
        }
    }
    out
}

/// For each of `params` parameters, the order in which `draws` children take the parts of its
/// range, drawn per parameter (a Latin hypercube over several).
fn strata_orders(params: usize, draws: usize, rng: &mut ChaCha8Rng) -> Vec<Vec<usize>> {
    (0..params)
        .map(|_| {
            let mut order: Vec<usize> = (0..draws).collect();
            order.shuffle(rng);
            order
        })
        .collect()
}

/// The `k`-th of `of` equal parts of a parameter's range; `of` 1 is the whole range.
#[derive(Debug, Clone, Copy)]
struct Stratum {
    k: usize,
    of: usize,
}

/// A value of type `ty` drawn within `stratum` of its range: uniformly inside the stratum's
/// part for numbers, the stratum's own option (or flag) for choices and flags when there are
/// several strata; `None` for a type that is not drawn (text).
fn draw(ty: &ParamType, stratum: Stratum, rng: &mut ChaCha8Rng) -> Option<ParamValue> {
    let Stratum { k, of } = stratum;
    Some(match ty {
        ParamType::Bool if of == 1 => ParamValue::Bool(rng.random_bool(0.5)),
        ParamType::Bool => ParamValue::Bool(k % 2 == 1),
        ParamType::Int { min, max } if of == 1 => ParamValue::Int(rng.random_range(*min..=*max)),
        ParamType::Int { min, max } => {
            let span = (max - min + 1) as f64;
            let lo = *min + (span * k as f64 / of as f64).floor() as i64;
            let hi = (*min + (span * (k + 1) as f64 / of as f64).floor() as i64 - 1).max(lo);
            ParamValue::Int(rng.random_range(lo..=hi))
        }
        ParamType::Float { min, max } if of == 1 => {
            let x: f64 = rng.random_range(*min..=*max);
            ParamValue::Float((x * 100.0).round() / 100.0)
        }
        ParamType::Float { min, max } => {
            let width = (max - min) / of as f64;
            let lo = min + width * k as f64;
            let x: f64 = rng.random_range(lo..=(lo + width).min(*max));
            ParamValue::Float((x * 100.0).round() / 100.0)
        }
        ParamType::Choice(options) if of == 1 => {
            ParamValue::Text((*options.choose(rng)?).to_owned())
        }
        ParamType::Choice([]) => return None,
        ParamType::Choice(options) => ParamValue::Text(options[k % options.len()].to_owned()),
        _ => return None,
    })
}

/// Preference for moving each parameter, by [`param_key`]; a parameter not named here weighs
/// [`UNRATED`].
pub type ParamWeights = std::collections::BTreeMap<String, f64>;

/// The weight of a parameter [`ParamWeights`] does not name: an even prior, as the operator
/// bandit gives an operator without a record.
pub const UNRATED: f64 = 0.5;

/// A parameter's name across harnesses: its component's kind and its own name
/// (`loglik-scoring.repeat-penalty`), so what one line learned about moving it holds for
/// another line whose component has another name.
pub fn param_key(kind: Kind, param: &str) -> String {
    format!("{}.{param}", kind.as_str())
}

/// The parameters (by [`param_key`]) whose values differ between `parent` and `child`, on the
/// components both have by name and kind.
pub fn changed_params(parent: &Harness, child: &Harness) -> Vec<String> {
    let mut out = Vec::new();
    for c in child.components() {
        let Some(p) = parent.component(&c.name).filter(|p| p.kind == c.kind) else {
            continue;
        };
        for spec in c.spec().params {
            if c.param(spec.name) != p.param(spec.name) {
                out.push(param_key(c.kind, spec.name));
            }
        }
    }
    out
}

/// The parametric operator with `weights` over which parameters to move: the moves are tried
/// in an order drawn with probability proportional to their parameters' weights (weighted
/// sampling without replacement), where the plain operator tries them in uniform random
/// order (as it does with no weights at all, so a search that has learned nothing yet makes
/// the plain operator's children). Seeded like [`offline`]: the same seed and weights make the
/// same child.
pub fn parametric_weighted(
    parent: &Harness,
    limits: Limits,
    weights: &ParamWeights,
    seed: u64,
) -> Result<Child, NoValidChild> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    parametric_child(parent, limits, Some(weights), &mut rng)
}

/// One to three parameter moves on distinct parameters, each accepted by the algebra and
/// changing the harness: one in half the children, two or three in a quarter each.
fn parametric_child(
    parent: &Harness,
    limits: Limits,
    weights: Option<&ParamWeights>,
    rng: &mut ChaCha8Rng,
) -> Result<Child, NoValidChild> {
    let want = match rng.random_range(0..4) {
        0 | 1 => 1,
        2 => 2,
        _ => 3,
    };
    let mut harness = parent.clone();
    let mut edits = Vec::new();
    let mut last = String::from("no candidate edit");
    for edit in parametric(parent, limits, weights, rng)
        .into_iter()
        .take(TRIES)
    {
        if edits.len() == want {
            break;
        }
        match harness.apply(&edit) {
            Ok(h) if h.id() != harness.id() => {
                harness = h;
                edits.push(edit);
            }
            Ok(_) => last = "the edit changed nothing".into(),
            Err(e) => last = e.to_string(),
        }
    }
    if edits.is_empty() {
        return Err(NoValidChild(format!("parametric: {last}")));
    }
    Ok(Child {
        harness,
        edits,
        operator: "parametric",
    })
}

/// Every single edit of `h` the search could make, for a proposer to choose among: the
/// structural edits, and each tunable parameter set to a few points across its range (five
/// for numbers, the other options of a choice, a flag flipped). Only edits the algebra
/// accepts and that change what the harness does within `limits`; in random order, at most
/// `max`.
pub fn menu(h: &Harness, max: usize, limits: Limits, rng: &mut ChaCha8Rng) -> Vec<Edit> {
    let mut out = structural(h, limits, rng);
    for c in h.components().filter(|c| c.kind.searched()) {
        for p in c.spec().params.iter().filter(|p| !moot(h, c, p.name)) {
            let ty = limits.range(c, p.name, p.ty);
            let values: Vec<ParamValue> = match ty {
                ParamType::Bool => vec![ParamValue::Bool(
                    !c.param(p.name)
                        .and_then(ParamValue::as_bool)
                        .unwrap_or(false),
                )],
                ParamType::Int { min, max } => {
                    // Past the range's end the current value acts as the end.
                    let now = c.param(p.name).and_then(ParamValue::as_int);
                    (0..5)
                        .map(|i| min + (max - min) * i / 4)
                        .filter(|&v| now.is_none_or(|n| n.clamp(min, max) != v))
                        .map(ParamValue::Int)
                        .collect()
                }
                ParamType::Float { min, max } => (0..5)
                    .map(|i| {
                        let x = min + (max - min) * f64::from(i) / 4.0;
                        ParamValue::Float((x * 100.0).round() / 100.0)
                    })
                    .collect(),
                ParamType::Choice(options) => options
                    .iter()
                    .map(|o| ParamValue::Text((*o).to_owned()))
                    .collect(),
                _ => continue,
            };
            for value in values {
                out.push(Edit::SetParameter {
                    component: c.name.clone(),
                    param: p.name.to_owned(),
                    value,
                });
            }
        }
    }
    shuffle(&mut out, rng);
    let mut seen = std::collections::BTreeSet::new();
    out.into_iter()
        .filter(|e| {
            h.apply(e)
                .is_ok_and(|child| child.id() != h.id() && seen.insert(child.id()))
        })
        .take(max)
        .collect()
}

/// A fresh component name for `kind` in `h`.
fn fresh_name(h: &Harness, kind: Kind) -> String {
    let base = kind.as_str();
    if h.component(base).is_none() {
        return base.to_owned();
    }
    (2..)
        .map(|i| format!("{base}-{i}"))
        .find(|n| h.component(n).is_none())
        .expect("some name is free")
}

/// Candidate structural edits in random order.
fn structural(h: &Harness, limits: Limits, rng: &mut ChaCha8Rng) -> Vec<Edit> {
    let mut out = Vec::new();
    for kind in Kind::all().filter(|k| k.searched()) {
        let spec = kind.spec();
        if let Some(member) = spec.singleton.and_then(|g| h.in_group(g)) {
            // Its group is taken: a member of another kind may be replaced.
            if member.kind != kind
                && let Some(mut c) = component_for(h, kind, rng)
            {
                c.name = member.name.clone();
                out.push(Edit::Replace { component: c });
            }
            continue;
        }
        if kind == Kind::Tool {
            // Each tool is a component of its own: one insert per tool not offered yet, so a
            // new tool is as likely a move as a new component of any other kind.
            for tool in TOOLS.iter().filter(|t| h.tool(t).is_none()) {
                out.push(Edit::Insert {
                    component: Component::new(fresh_name(h, kind), kind).with("tool", *tool),
                    edges: Vec::new(),
                });
            }
        } else if let Some(c) = component_for(h, kind, rng).filter(|c| !limits.inert(h, c)) {
            out.push(Edit::Insert {
                component: c,
                edges: Vec::new(),
            });
        }
    }
    for c in h.components() {
        if c.kind != Kind::SystemPrompt && !limits.inert(h, c) {
            out.push(Edit::Remove {
                name: c.name.clone(),
            });
        }
    }
    shuffle(&mut out, rng);
    out
}

/// A new component of `kind` with its required parameters filled in, or `None` where hx has
/// nothing sensible to fill in (tools: [`structural`] offers each tool as its own insert).
fn component_for(h: &Harness, kind: Kind, rng: &mut ChaCha8Rng) -> Option<Component> {
    let mut c = Component::new(fresh_name(h, kind), kind);
    for p in kind.spec().params {
        if !matches!(p.default, super::param::ParamDefault::Required) {
            continue;
        }
        let value = match (kind, p.name) {
            // Hints any world can use: no suite's commands or objects.
            (Kind::Hint, "text") => ParamValue::Text(
                (*[
                    "Visit places you have not searched yet.",
                    "Re-read the goal before each command.",
                    "Do not repeat a command that did nothing.",
                    "Take the object the goal names before going to its destination.",
                ]
                .choose(rng)?)
                .to_owned(),
            ),
            _ => return None,
        };
        c = c.with(p.name, value);
    }
    Some(c)
}

/// Candidate parameter moves in random order: uniform without `weights`, else drawn by them.
fn parametric(
    h: &Harness,
    limits: Limits,
    weights: Option<&ParamWeights>,
    rng: &mut ChaCha8Rng,
) -> Vec<Edit> {
    let mut out = Vec::new();
    let mut keys = Vec::new();
    for c in h.components().filter(|c| c.kind.searched()) {
        for p in c.spec().params.iter().filter(|p| !moot(h, c, p.name)) {
            let current = c.param(p.name);
            let value = match limits.range(c, p.name, p.ty) {
                ParamType::Bool => {
                    ParamValue::Bool(!current.and_then(ParamValue::as_bool).unwrap_or(false))
                }
                ParamType::Int { min, max } => {
                    let v = current.and_then(ParamValue::as_int).unwrap_or(min);
                    let v = v.clamp(min, max);
                    if min == max {
                        continue;
                    }
                    let step = ((max - min) / 8).max(1);
                    let d = rng.random_range(1..=step);
                    let up = v == min || (v != max && rng.random_bool(0.5));
                    ParamValue::Int(if up {
                        (v + d).min(max)
                    } else {
                        (v - d).max(min)
                    })
                }
                ParamType::Float { min, max } => {
                    let v = current.and_then(ParamValue::as_float).unwrap_or(min);
                    let d = rng.random_range(0.05..=0.25) * (max - min);
                    let up = v <= min || (v < max && rng.random_bool(0.5));
                    let x = if up {
                        (v + d).min(max)
                    } else {
                        (v - d).max(min)
                    };
                    ParamValue::Float((x * 100.0).round() / 100.0)
                }
                ParamType::Choice(options) => {
                    let now = current.and_then(ParamValue::as_text).unwrap_or("");
                    let others: Vec<&&str> = options.iter().filter(|o| **o != now).collect();
                    let Some(o) = others.choose(rng) else {
                        continue;
                    };
                    ParamValue::Text((**o).to_owned())
                }
                _ => continue,
            };
            out.push(Edit::SetParameter {
                component: c.name.clone(),
                param: p.name.to_owned(),
                value,
            });
            keys.push(param_key(c.kind, p.name));
        }
    }
    match weights.filter(|w| !w.is_empty()) {
        None => shuffle(&mut out, rng),
        Some(w) => {
            // Efraimidis and Spirakis: the largest u^(1/w) first is a draw without
            // replacement with probability proportional to w.
            let mut keyed: Vec<(f64, Edit)> = out
                .into_iter()
                .zip(&keys)
                .map(|(e, k)| {
                    let weight = w.get(k).copied().unwrap_or(UNRATED).max(1e-6);
                    let u: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
                    (u.powf(1.0 / weight), e)
                })
                .collect();
            keyed.sort_by(|a, b| b.0.total_cmp(&a.0));
            out = keyed.into_iter().map(|(_, e)| e).collect();
        }
    }
    out
}

fn shuffle<T>(v: &mut [T], rng: &mut ChaCha8Rng) {
    use rand::seq::SliceRandom as _;
    v.shuffle(rng);
}

/// Crossover by role, then by parameter: each role's components come from `a` or `b` (a coin
/// per role); a component the other parent has too, by name and kind, then takes each
/// parameter on which the two differ from either parent (a coin per parameter), so a change
/// one line found in the action selector (a repeat penalty) meets one another line found in
/// it (a revisit penalty), which whole-component crossover can never join. Edges between
/// components the child keeps come from both. Tries other coins if a draw makes an invalid
/// harness; fails if none of its tries is valid and different from both parents.
pub fn crossover(a: &Harness, b: &Harness, seed: u64) -> Result<Child, NoValidChild> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut last = String::from("every draw equalled a parent");
    for _ in 0..TRIES {
        let mut components: Vec<Component> = Vec::new();
        for role in Role::ALL {
            let (from, other) = if rng.random_bool(0.5) { (a, b) } else { (b, a) };
            for c in from.with_role(role) {
                if !components.iter().any(|k| k.name == c.name) {
                    components.push(mix_params(c, other, &mut rng));
                }
            }
        }
        let edges = a
            .edges()
            .chain(b.edges())
            .filter(|e| {
                components.iter().any(|c| c.name == e.from)
                    && components.iter().any(|c| c.name == e.to)
            })
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        match Harness::from_doc(HarnessDoc { components, edges }) {
            Ok(h) if h.id() != a.id() && h.id() != b.id() => {
                return Ok(Child {
                    harness: h,
                    edits: Vec::new(),
                    operator: "crossover",
                });
            }
            Ok(_) => {}
            Err(e) => last = e.to_string(),
        }
    }
    Err(NoValidChild(format!("crossover: {last}")))
}

/// `c` with each parameter on which it differs from `other`'s component of the same name and
/// kind taken from one or the other (a coin each); `c` itself where `other` has no such
/// component. A parameter a component leaves out is at its default, so leaving it out is the
/// same as taking the default.
fn mix_params(c: &Component, other: &Harness, rng: &mut ChaCha8Rng) -> Component {
    let Some(o) = other.component(&c.name).filter(|o| o.kind == c.kind) else {
        return c.clone();
    };
    let mut mixed = c.clone();
    let names: std::collections::BTreeSet<&String> =
        c.params.keys().chain(o.params.keys()).collect();
    for name in names {
        if c.params.get(name) != o.params.get(name) && rng.random_bool(0.5) {
            match o.params.get(name) {
                Some(v) => mixed.params.insert(name.clone(), v.clone()),
                None => mixed.params.remove(name),
            };
        }
    }
    mixed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::format;

    fn react() -> Harness {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../configs/harnesses/react.toml"
        );
        let text = std::fs::read_to_string(path).expect("shipped harness");
        format::parse_as(&text, format::Format::Toml, path).expect("valid")
    }

    /// Children that are distinct harnesses, none of them `parent`.
    fn assert_distinct_from(children: &[Child], parent: &Harness) {
        let ids: std::collections::BTreeSet<_> = children.iter().map(|c| c.harness.id()).collect();
        assert_eq!(ids.len(), children.len(), "a child twice");
        assert!(!ids.contains(&parent.id()));
    }

    fn with_act(h: &Harness, param: &str, value: f64) -> Harness {
        h.apply(&Edit::SetParameter {
            component: "act".into(),
            param: param.into(),
            value: ParamValue::Float(value),
        })
        .expect("valid edit")
    }

    #[test]
    fn every_tool_not_offered_yet_is_a_structural_move_of_its_own() {
        let h = react();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let inserted: std::collections::BTreeSet<String> =
            menu(&h, 1000, Limits::default(), &mut rng)
                .into_iter()
                .filter_map(|e| match e {
                    Edit::Insert { component, .. } if component.kind == Kind::Tool => {
                        component.tool().map(str::to_owned)
                    }
                    _ => None,
                })
                .collect();
        let free: std::collections::BTreeSet<String> = TOOLS
            .iter()
            .filter(|t| **t != "admissible-commands")
            .map(|t| t.to_string())
            .collect();
        assert_eq!(inserted, free, "react offers only the admissible list");
    }

    /// The kinds structural moves insert into `h`, over many draws.
    fn inserted_kinds(h: &Harness) -> std::collections::BTreeSet<Kind> {
        (0..64)
            .flat_map(|seed| structural(h, Limits::default(), &mut ChaCha8Rng::seed_from_u64(seed)))
            .filter_map(|e| match e {
                Edit::Insert { component, .. } => Some(component.kind),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn no_structural_move_adds_or_removes_a_component_that_changes_nothing() {
        // Behind a log-likelihood selector, with no rewrite policy: the check never fires
        // (every choice is admissible) and nothing writes notes.
        let h = react();
        let kinds = inserted_kinds(&h);
        for k in [Kind::AdmissibleCheck, Kind::Scratchpad] {
            assert!(!kinds.contains(&k), "{k:?} inserted into react");
        }
        assert!(kinds.contains(&Kind::FailureMemory), "{kinds:?}");
        // An observation view is a move only where it changes how observations read.
        for seed in 0..64 {
            for e in structural(&h, Limits::default(), &mut ChaCha8Rng::seed_from_u64(seed)) {
                if let Edit::Insert { component, .. } = e
                    && component.kind == Kind::ObservationView
                {
                    assert_eq!(component.text("mode"), "compact");
                }
            }
        }
        // Behind free generation, or where the harness may rewrite itself, both are moves.
        let free = h
            .apply(&Edit::Replace {
                component: Component::new("act", Kind::FreeGeneration),
            })
            .expect("valid");
        let kinds = inserted_kinds(&free);
        assert!(kinds.contains(&Kind::AdmissibleCheck) && kinds.contains(&Kind::Scratchpad));
        let rewriting = h
            .apply(&Edit::Insert {
                component: Component::new("rw", Kind::RewritePolicy),
                edges: Vec::new(),
            })
            .expect("valid");
        let kinds = inserted_kinds(&rewriting);
        assert!(kinds.contains(&Kind::AdmissibleCheck) && kinds.contains(&Kind::Scratchpad));
        // A check already in react is not a removal worth a child either.
        let checked = h
            .apply(&Edit::Insert {
                component: Component::new("verify", Kind::AdmissibleCheck),
                edges: Vec::new(),
            })
            .expect("valid");
        let removes_check = (0..16).any(|seed| {
            structural(
                &checked,
                Limits::default(),
                &mut ChaCha8Rng::seed_from_u64(seed),
            )
            .iter()
            .any(|e| matches!(e, Edit::Remove { name } if name == "verify"))
        });
        assert!(!removes_check);
    }

    #[test]
    fn crossover_joins_parameter_changes_two_lines_made_in_one_component() {
        let base = react();
        let a = with_act(&base, "repeat-penalty", 1.0);
        let b = with_act(&base, "revisit-penalty", 3.0);
        let mut joined = 0;
        for seed in 0..40 {
            let child = crossover(&a, &b, seed).expect("a child differs from both parents");
            let act = child.harness.action_selector();
            // Every parameter comes from one parent or the other.
            assert!(
                [0.0, 1.0].contains(&act.float("repeat-penalty")),
                "seed {seed}"
            );
            assert!(
                [0.0, 3.0].contains(&act.float("revisit-penalty")),
                "seed {seed}"
            );
            assert_ne!(child.harness.id(), a.id());
            assert_ne!(child.harness.id(), b.id());
            if act.float("repeat-penalty") == 1.0 && act.float("revisit-penalty") == 3.0 {
                joined += 1;
            }
        }
        // Two of the four mixes are new (both changes, or neither): about half the children
        // join both changes; whole-component crossover never could.
        assert!((10..=30).contains(&joined), "joined {joined} of 40");
    }

    #[test]
    fn weighted_parametric_moves_the_parameters_that_helped_more_often() {
        let base = react();
        let key = param_key(Kind::LoglikScoring, "repeat-penalty");
        let moved = |weights: &ParamWeights| {
            (0..200)
                .filter(|&seed| {
                    let child = parametric_weighted(&base, Limits::default(), weights, seed)
                        .expect("a child");
                    changed_params(&base, &child.harness).contains(&key)
                })
                .count()
        };
        let even = moved(&ParamWeights::new());
        let mut favoured = ParamWeights::new();
        favoured.insert(key.clone(), 8.0);
        let more = moved(&favoured);
        // With every parameter at the prior, the repeat penalty is one of a dozen; weighted 16
        // times the prior, it is among the moves of most children.
        assert!(even < 100, "moved in {even} of 200 at even weights");
        assert!(
            more > 140 && more > 2 * even,
            "moved in {more} of 200 when favoured, {even} at even"
        );
        // Same seed, same weights: the same child.
        let a = parametric_weighted(&base, Limits::default(), &favoured, 7).expect("a child");
        let b = parametric_weighted(&base, Limits::default(), &favoured, 7).expect("a child");
        assert_eq!(a.harness.id(), b.harness.id());
    }

    #[test]
    fn no_move_touches_a_parameter_the_rest_of_the_harness_makes_moot() {
        let base = react();
        let moved = |h: &Harness, key: &str| {
            (0..300u64)
                .filter(|&seed| {
                    let mut rng = ChaCha8Rng::seed_from_u64(seed);
                    let child =
                        parametric_child(h, Limits::default(), None, &mut rng).expect("a child");
                    changed_params(h, &child.harness).contains(&key.to_owned())
                })
                .count()
        };
        let in_menu = |h: &Harness, param: &str| {
            let mut rng = ChaCha8Rng::seed_from_u64(3);
            menu(h, 1000, Limits::default(), &mut rng)
                .iter()
                .any(|e| matches!(e, Edit::SetParameter { param: p, .. } if p == param))
        };
        // `react` shows no worked example and gives no goal bonus: the example prior and the
        // goal bonus's form would change nothing.
        assert_eq!(moved(&base, "loglik-scoring.example-weight"), 0);
        assert_eq!(moved(&base, "loglik-scoring.goal-match"), 0);
        assert!(!in_menu(&base, "example-weight") && !in_menu(&base, "goal-match"));
        // With a `few-shot` component and a goal bonus, both are moves like any other.
        let shown = base
            .apply(&Edit::Insert {
                component: Component::new("few-shot", Kind::FewShot),
                edges: Vec::new(),
            })
            .expect("valid insert");
        let shown = with_act(&shown, "goal-weight", 1.0);
        assert!(moved(&shown, "loglik-scoring.example-weight") > 10);
        assert!(moved(&shown, "loglik-scoring.goal-match") > 10);
        assert!(in_menu(&shown, "example-weight") && in_menu(&shown, "goal-match"));
    }

    /// The neighbourhood holds each structural move once: every child the structural
    /// operator makes over many seeds is in it (up to the parameters [`wake`] draws), its
    /// children are distinct and differ from the parent, and the one that gains worked
    /// examples carries a drawn prior.
    #[test]
    fn the_neighbourhood_is_every_structural_child_once() {
        use crate::protocol::{MutationOp, MutationSpec};
        let base = react();
        let limits = Limits {
            episode_steps: Some(40),
        };
        let all = neighbourhood(&base, limits, 7, 1);
        assert_distinct_from(&all, &base);
        // A move: what the edit inserts, removes or replaces (a hint's text is drawn), read
        // from the first edit ([`wake`] may add a parameter).
        let key = |c: &Child| match &c.edits[0] {
            Edit::Insert { component, .. } => {
                format!("insert {:?} {:?}", component.kind, component.tool())
            }
            Edit::Replace { component } => format!("replace {:?}", component.kind),
            Edit::Remove { name } => format!("remove {name}"),
            e => panic!("not a structural move: {e:?}"),
        };
        let moves: std::collections::BTreeSet<String> = all.iter().map(key).collect();
        assert_eq!(moves.len(), all.len());
        for seed in 0..300u64 {
            let spec = MutationSpec {
                op: MutationOp::Structural,
                seed,
                failure_digest: String::new(),
            };
            let child = offline(&base, &spec, limits)
                .expect("needs no model")
                .expect("a child");
            let first = key(&child);
            assert!(moves.contains(&first), "{first} not in the neighbourhood");
        }
        let few_shot: Vec<_> = all
            .iter()
            .filter(|c| c.harness.components().any(|c| c.kind == Kind::FewShot))
            .collect();
        assert_eq!(few_shot.len(), 1);
        assert_eq!(few_shot[0].edits.len(), 2, "{:?}", few_shot[0].edits);
        // Another seed, the same moves in another order.
        let again = neighbourhood(&base, limits, 8, 1);
        let again_moves: std::collections::BTreeSet<String> = again.iter().map(key).collect();
        assert_eq!(again_moves, moves);
        assert_ne!(
            again.iter().map(key).collect::<Vec<_>>(),
            all.iter().map(key).collect::<Vec<_>>()
        );
    }

    /// With several draws, the move that wakes the example prior gives that many children,
    /// one prior in each part of its range (so a high prior is always tried), every other
    /// move still gives one child, and one draw makes the children a run made before draws
    /// existed (a resumed screen finds the children it raced).
    #[test]
    fn a_screen_with_draws_tries_the_woken_prior_in_every_part_of_its_range() {
        let base = react();
        let limits = Limits {
            episode_steps: Some(40),
        };
        let weight = |c: &Child| {
            c.harness
                .components()
                .find(|c| c.kind == Kind::LoglikScoring)
                .map(|c| c.float("example-weight"))
        };
        let gains = |c: &Child| c.harness.components().any(|c| c.kind == Kind::FewShot);
        let one = neighbourhood(&base, limits, 7, 1);
        for seed in [7u64, 8, 9] {
            let three = neighbourhood(&base, limits, seed, 3);
            let ids: std::collections::BTreeSet<_> = three.iter().map(|c| c.harness.id()).collect();
            assert_eq!(ids.len(), three.len(), "a child twice");
            assert_eq!(three.len(), one.len() + 2);
            let mut priors: Vec<f64> = three
                .iter()
                .filter(|c| gains(c))
                .map(|c| weight(c).expect("a scorer"))
                .collect();
            priors.sort_by(f64::total_cmp);
            assert_eq!(priors.len(), 3);
            // example-weight ranges over 0..=5: one prior in each third.
            for (k, w) in priors.iter().enumerate() {
                let (lo, hi) = (5.0 * k as f64 / 3.0, 5.0 * (k + 1) as f64 / 3.0);
                assert!(
                    *w >= lo - 0.01 && *w <= hi + 0.01,
                    "prior {w} not in [{lo}, {hi}]"
                );
            }
            for c in three.iter().filter(|c| !gains(c)) {
                assert_eq!(c.edits.len(), 1, "{:?}", c.edits);
            }
        }
        // One draw is the neighbourhood the screen made before draws existed: blocks-11 (run
        // seed 47, 40 steps) raced `b6ab144dbb36`, the few-shot child with its prior at 0.26
        // (benchmarks/runs/blocks-11.jsonl.gz), so its resume finds what it raced.
        let blocks_11 = neighbourhood(&base, limits, 47, 1);
        let few_shot = blocks_11
            .iter()
            .find(|c| gains(c))
            .expect("the few-shot move");
        assert_eq!(
            few_shot.harness.id().to_string(),
            "b6ab144dbb36b8d3ab9e96f98db97eec"
        );
        assert_eq!(weight(few_shot), Some(0.26));
        let ids = |n: &[Child]| n.iter().map(|c| c.harness.id()).collect::<Vec<_>>();
        assert_eq!(ids(&one), ids(&neighbourhood(&base, limits, 7, 1)));
        assert_eq!(
            ids(&neighbourhood(&base, limits, 9, 3)),
            ids(&neighbourhood(&base, limits, 9, 3))
        );
    }

    /// Switching on what is off: react's scorer has its goal, repeat, revisit and undo priors
    /// and its top-k at 0 (its example prior is moot without worked examples, its
    /// temperature is not 0), so with three draws each of those five gives three children,
    /// one in each third of its range above 0, each one edit but the goal prior's, which
    /// wakes and draws what it rewards; a parameter already on gives none.
    #[test]
    fn switching_on_tries_each_prior_that_is_off_in_every_part_of_its_range() {
        let base = react();
        let limits = Limits {
            episode_steps: Some(40),
        };
        let on = switch_ons(&base, limits, 5, 3);
        assert_distinct_from(&on, &base);
        let param = |c: &Child| match &c.edits[0] {
            Edit::SetParameter { param, .. } => param.clone(),
            e => panic!("not a parameter move: {e:?}"),
        };
        let mut names: Vec<String> = on.iter().map(param).collect();
        names.dedup();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            [
                "goal-weight",
                "repeat-penalty",
                "revisit-penalty",
                "top-k",
                "undo-penalty"
            ]
        );
        for name in &names {
            let mut values: Vec<f64> = on
                .iter()
                .filter(|c| param(c) == *name)
                .map(|c| c.harness.action_selector().float(name))
                .collect();
            values.sort_by(f64::total_cmp);
            assert_eq!(values.len(), 3, "{name}");
            let max = if name == "top-k" { 64.0 } else { 5.0 };
            for (k, v) in values.iter().enumerate() {
                let (lo, hi) = (max * k as f64 / 3.0, max * (k + 1) as f64 / 3.0);
                assert!(*v > 0.0 && *v >= lo - 1.0 && *v <= hi + 0.01, "{name} {v}");
            }
        }
        for c in &on {
            let want = if param(c) == "goal-weight" { 2 } else { 1 };
            assert_eq!(c.edits.len(), want, "{:?}", c.edits);
            assert_eq!(c.operator, "parametric");
        }
        // A prior already on is not switched on again; the same seed makes the same children.
        let repeats = with_act(&base, "repeat-penalty", 1.0);
        assert!(
            switch_ons(&repeats, limits, 5, 3)
                .iter()
                .all(|c| param(c) != "repeat-penalty")
        );
        let ids = |n: &[Child]| n.iter().map(|c| c.harness.id()).collect::<Vec<_>>();
        assert_eq!(ids(&on), ids(&switch_ons(&base, limits, 5, 3)));
        assert_eq!(switch_ons(&base, limits, 5, 1).len(), 5);
        // blocks-17 (run seed 71, three draws) screened `db8264d6c467`, react with the undo
        // prior at 4.94 (benchmarks/runs/blocks-17.jsonl.gz), so its resume finds it raced.
        assert!(
            switch_ons(&base, limits, 71, 3).iter().any(|c| c
                .harness
                .id()
                .to_string()
                .starts_with("db8264d6c467"))
        );
    }

    /// Dropping worked examples and settling gives back the harness that never had them (the
    /// prior they woke unset); a harness with nothing moot settles to itself.
    #[test]
    fn settling_unsets_the_parameters_nothing_reads() {
        let base = react();
        let woken = with_act(&base, "example-weight", 3.5)
            .apply(&Edit::Insert {
                component: Component::new("examples", Kind::FewShot).with("count", 1),
                edges: Vec::new(),
            })
            .expect("inserts few-shot");
        assert_eq!(settle(&woken).id(), woken.id(), "the prior is live here");
        let dropped = woken
            .apply(&Edit::Remove {
                name: "examples".into(),
            })
            .expect("removes few-shot");
        assert_ne!(dropped.id(), base.id(), "the moot prior still differs");
        assert_eq!(settle(&dropped).id(), base.id());
        assert_eq!(settle(&base).id(), base.id());
    }

    #[test]
    fn an_insert_that_makes_a_parameter_live_draws_it_afresh() {
        use crate::protocol::{MutationOp, MutationSpec};
        let base = react();
        let (mut gained, mut drawn) = (0, 0);
        for seed in 0..400u64 {
            let spec = MutationSpec {
                op: MutationOp::Structural,
                seed,
                failure_digest: String::new(),
            };
            let child = offline(&base, &spec, Limits::default())
                .expect("needs no model")
                .expect("a child");
            let weight = child
                .harness
                .components()
                .find(|c| c.kind == Kind::LoglikScoring)
                .map(|c| c.float("example-weight"));
            if child.harness.components().any(|c| c.kind == Kind::FewShot) {
                gained += 1;
                drawn += usize::from(weight != Some(0.0));
                assert_eq!(child.edits.len(), 2, "{:?}", child.edits);
            } else {
                // Any other structural move leaves the moot prior as it was.
                assert!(weight.is_none_or(|w| w == 0.0), "{:?}", child.edits);
                assert_eq!(child.edits.len(), 1, "{:?}", child.edits);
            }
        }
        assert!(gained > 5, "only {gained} children gained worked examples");
        assert!(drawn * 10 >= gained * 9, "{drawn} of {gained} drew a prior");
    }

    #[test]
    fn changed_params_names_each_move_by_kind_and_parameter() {
        let base = react();
        let child = with_act(
            &with_act(&base, "repeat-penalty", 1.0),
            "revisit-penalty",
            2.0,
        );
        assert_eq!(
            changed_params(&base, &child),
            vec![
                "loglik-scoring.repeat-penalty".to_owned(),
                "loglik-scoring.revisit-penalty".to_owned()
            ]
        );
        assert!(changed_params(&base, &base).is_empty());
    }

    #[test]
    fn crossover_of_parents_that_differ_nowhere_else_fails_with_a_reason() {
        let a = react();
        let e = crossover(&a, &a.clone(), 1).expect_err("no child differs from both");
        assert!(e.0.starts_with("crossover:"), "{e}");
    }
}
