//! The reflective variation operator, GEPA- and HarnessX-style: a proposer model reads a
//! digest of the parent's failures, names its failure modes, and proposes harness edits in
//! the algebra's vocabulary as JSON. Every proposal goes through the algebra (so a child is
//! valid or refused with the reason); [`crate::job`] then gates the children on replays of
//! the failures they claim to fix and of a task the parent won before one is evaluated.
//!
//! Nothing the proposer writes is executed: it can only produce edits the catalog admits.

use hx_common::harness::catalog::{Kind, KindSpec};
use hx_common::harness::param::{ParamType, ParamValue};
use hx_common::harness::{Edit, Harness};
use hx_common::protocol::{ParentEpisode, ProposerMode, ProposerSpec};
use hx_model::{self as model, GenerateRequest, Message, ModelBackend, Role as MsgRole, Usage};
use serde::Deserialize;

use crate::mutate::{Child, Limits};

/// One proposal as the proposer wrote it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proposal {
    /// The edits, applied in order.
    pub edits: Vec<Edit>,
    /// One line saying why.
    #[serde(default)]
    pub rationale: String,
    /// Seeds of the search tasks it expects to fix.
    #[serde(default)]
    pub fixes: Vec<u64>,
}

/// What the proposer made of a parent.
#[derive(Debug, Clone, Default)]
pub struct Proposed {
    /// The failure modes it named (the digest step's answer).
    pub modes: String,
    /// Children the algebra accepted, each with its proposal, in the proposer's order.
    pub children: Vec<(Child, Proposal)>,
    /// Why each other proposal was refused.
    pub refused: Vec<String>,
    /// The proposer's tokens.
    pub usage: Usage,
}

/// The longest digest of failures the proposer is shown, in characters.
const DIGEST_CHARS: usize = 1500;

/// Asks `proposer` about `parent`: a digest of its failures, then proposals, each checked by
/// the algebra. A model error is an `Err`; a proposer that writes nonsense is not (its
/// proposals are refused with reasons).
pub fn propose(
    parent: &Harness,
    episodes: &[ParentEpisode],
    failure_digest: &str,
    spec: &ProposerSpec,
    seed: u64,
    limits: Limits,
    proposer: &dyn ModelBackend,
) -> Result<Proposed, model::Error> {
    let mut usage = Usage::default();
    let failed: Vec<&ParentEpisode> = episodes.iter().filter(|e| !e.won).collect();
    let record = episodes
        .iter()
        .map(|e| {
            if e.won {
                format!("task {}: won in {} steps", e.seed, e.steps)
            } else {
                format!("task {}: failed, progress {:.2}", e.seed, e.score)
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let digest: String = failure_digest.chars().take(DIGEST_CHARS).collect();
    // Digest: the failure modes, one line each.
    let modes = if failed.is_empty() || digest.trim().is_empty() {
        "(no failure details recorded)".to_owned()
    } else {
        let g = proposer.generate(&GenerateRequest {
            messages: vec![
                Message::new(
                    MsgRole::System,
                    "You analyse why an agent failed tasks in a text world.",
                ),
                Message::new(
                    MsgRole::User,
                    format!(
                        "Here is how an agent's failed episodes ended:\n{digest}\n\n\
                         Name its failure modes, one short line each."
                    ),
                ),
            ],
            stop: Vec::new(),
            max_tokens: (spec.max_tokens / 3).max(32),
            temperature: spec.temperature,
            seed,
        })?;
        usage += g.usage;
        g.text.trim().chars().take(DIGEST_CHARS).collect()
    };
    if spec.mode == ProposerMode::Choose {
        let mut p = choose(parent, &record, &modes, spec, seed, limits, proposer)?;
        usage += p.usage;
        p.usage = usage;
        p.modes = modes;
        return Ok(p);
    }
    let g = proposer.generate(&GenerateRequest {
        messages: vec![
            Message::new(
                MsgRole::System,
                "You improve agent harnesses. Answer with one JSON object and nothing else.",
            ),
            Message::new(
                MsgRole::User,
                proposal_prompt(parent, &record, &modes, spec.proposals),
            ),
        ],
        stop: Vec::new(),
        max_tokens: spec.max_tokens,
        temperature: spec.temperature,
        seed: seed.wrapping_add(1),
    })?;
    usage += g.usage;
    let (children, refused) = check(parent, &g.text, spec.proposals as usize);
    Ok(Proposed {
        modes,
        children,
        refused,
        usage,
    })
}

/// The most edits a `choose` proposer scores.
const MENU: usize = 48;

/// `choose` mode: the proposer scores a menu of single edits (the search's own, from
/// [`hx_common::harness::mutate::menu`]) as the answer to "which change fixes these
/// failures", and the `proposals` most likely (mean log-probability per token) become
/// children. Every menu edit is valid, so nothing is refused here; the caller fills in the
/// failure modes.
fn choose(
    parent: &Harness,
    record: &str,
    modes: &str,
    spec: &ProposerSpec,
    seed: u64,
    limits: Limits,
    proposer: &dyn ModelBackend,
) -> Result<Proposed, model::Error> {
    use rand::SeedableRng as _;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let menu = hx_common::harness::mutate::menu(parent, MENU, limits, &mut rng);
    if menu.is_empty() {
        return Ok(Proposed {
            refused: vec!["no edit to choose from".into()],
            ..Proposed::default()
        });
    }
    let mut harness = String::new();
    for c in parent.components() {
        harness.push_str(&format!(
            "- {} ({}): {}\n",
            c.name,
            c.kind,
            short(c.spec().doc)
        ));
    }
    let scores = proposer.score(&hx_model::ScoreRequest {
        messages: vec![
            Message::new(MsgRole::System, "You improve agent harnesses."),
            Message::new(
                MsgRole::User,
                format!(
                    "An agent acts in a text world through this harness:\n{harness}\n\
                     Its episodes on training tasks:\n{record}\n\n\
                     Failure modes seen:\n{modes}\n\n\
                     Name the one change to the harness that would fix these failures."
                ),
            ),
        ],
        candidates: menu.iter().map(|e| describe(parent, e)).collect(),
    })?;
    let mut order: Vec<usize> = (0..menu.len()).collect();
    let mean = |i: usize| scores.logprobs[i] / f64::from(scores.tokens[i].max(1));
    order.sort_by(|&a, &b| mean(b).total_cmp(&mean(a)).then(a.cmp(&b)));
    let children = order
        .into_iter()
        .take(spec.proposals as usize)
        .filter_map(|i| {
            let edit = menu[i].clone();
            let harness = parent.apply(&edit).ok()?;
            Some((
                Child {
                    harness,
                    edits: vec![edit],
                    operator: "reflective",
                },
                Proposal {
                    edits: vec![menu[i].clone()],
                    rationale: format!(
                        "chosen from {} edits: {} ({:.2} nats per token)",
                        menu.len(),
                        describe(parent, &menu[i]),
                        mean(i)
                    ),
                    fixes: Vec::new(),
                },
            ))
        })
        .collect();
    Ok(Proposed {
        children,
        usage: scores.usage,
        ..Proposed::default()
    })
}

/// An edit in words, as a `choose` proposer reads it.
pub fn describe(parent: &Harness, edit: &Edit) -> String {
    match edit {
        Edit::SetParameter {
            component,
            param,
            value,
        } => {
            let doc = parent
                .component(component)
                .and_then(|c| c.spec().param(param))
                .map(|p| short(p.doc))
                .unwrap_or_default();
            format!("set {component}.{param} to {value} ({doc})")
        }
        Edit::Insert { component, .. } => match component.tool() {
            Some(tool) => format!("add the {tool} tool"),
            None => format!("add a {} ({})", component.kind, short(component.spec().doc)),
        },
        Edit::Replace { component } => format!(
            "use a {} instead ({})",
            component.kind,
            short(component.spec().doc)
        ),
        Edit::Remove { name } => {
            let kind = parent
                .component(name)
                .map(|c| c.kind.as_str())
                .unwrap_or("component");
            format!("remove the {kind} {name}")
        }
        other => format!(
            "{} {}",
            other.op(),
            serde_json::to_string(other).unwrap_or_default()
        ),
    }
}

/// The proposal prompt: the harness, what may change and within which ranges, what happened,
/// and the answer's form.
fn proposal_prompt(parent: &Harness, record: &str, modes: &str, k: u32) -> String {
    let mut harness = String::new();
    let mut tunable = String::new();
    for c in parent.components() {
        let mut shown = Vec::new();
        for p in c.spec().params {
            let Some(v) = c.param(p.name) else { continue };
            match (&p.ty, v) {
                (ParamType::Text { .. }, ParamValue::Text(t)) => {
                    let t: String = t.chars().take(80).collect();
                    shown.push(format!("{}={t:?}", p.name));
                }
                _ => shown.push(format!("{}={v}", p.name)),
            }
            if c.kind.searched()
                && let Some(range) = range(&p.ty)
            {
                tunable.push_str(&format!(
                    "- {}.{}: {range}, now {v} ({})\n",
                    c.name,
                    p.name,
                    short(p.doc)
                ));
            }
        }
        harness.push_str(&format!(
            "- {} ({}): {}\n",
            c.name,
            c.kind,
            shown.join(", ")
        ));
    }
    let kinds: Vec<String> = Kind::all()
        .filter(|k| k.searched())
        .map(Kind::spec)
        .filter(|s| {
            s.singleton
                .is_none_or(|g| parent.in_group(g).is_none_or(|m| m.kind != s.kind))
        })
        .map(kind_line)
        .collect();
    format!(
        "An agent acts in a text world through this harness (components, kind, parameters):\n\
         {harness}\n\
         Parameters you may set, with their ranges:\n{tunable}\n\
         Component kinds you may insert or put in place of one of the same group:\n{}\n\n\
         Its episodes on training tasks:\n{record}\n\n\
         Failure modes seen:\n{modes}\n\n\
         Propose up to {k} changes that would fix failures without losing won tasks. Write \
         edits in this JSON form (set-parameter, insert, replace, remove, edit-text):\n\
         {{\"proposals\": [{{\"edits\": [{{\"set-parameter\": {{\"component\": \"act\", \
         \"param\": \"temperature\", \"value\": 0.5}}}}], \"rationale\": \"one line\", \
         \"fixes\": [0, 2]}}]}}\n\
         An insert looks like {{\"insert\": {{\"component\": {{\"name\": \"guard\", \"kind\": \
         \"loop-guard\", \"params\": {{\"window\": 6}}}}}}}}. \"fixes\" lists the task numbers \
         you expect to fix.",
        kinds.join("\n")
    )
}

fn range(ty: &ParamType) -> Option<String> {
    Some(match ty {
        ParamType::Bool => "true or false".into(),
        ParamType::Int { min, max } => format!("integer {min} to {max}"),
        ParamType::Float { min, max } => format!("number {min} to {max}"),
        ParamType::Choice(options) => format!("one of {}", options.join(", ")),
        _ => return None,
    })
}

fn kind_line(s: &KindSpec) -> String {
    let params: Vec<String> = s
        .params
        .iter()
        .filter_map(|p| range(&p.ty).map(|r| format!("{} ({r})", p.name)))
        .collect();
    format!(
        "- {}: {}{}",
        s.kind,
        short(s.doc),
        if params.is_empty() {
            String::new()
        } else {
            format!("; {}", params.join(", "))
        }
    )
}

/// A doc line cut at its first clause, for a prompt that must stay short.
fn short(doc: &str) -> &str {
    let end = doc
        .find([';', '(', '.'])
        .unwrap_or(doc.len())
        .min(doc.char_indices().nth(90).map_or(doc.len(), |(i, _)| i));
    doc[..end].trim_end()
}

/// Checks the proposer's answer `text` against the algebra: each of its first `k` proposals
/// becomes a child or a refusal with the reason. Malformed JSON, unknown kinds or parameters
/// and out-of-range values are refusals, never panics.
pub fn check(parent: &Harness, text: &str, k: usize) -> (Vec<(Child, Proposal)>, Vec<String>) {
    let mut children = Vec::new();
    let mut refused = Vec::new();
    let raw = match answer(text) {
        Ok(r) => r,
        Err(why) => return (children, vec![why]),
    };
    if raw.is_empty() {
        return (children, vec!["the proposer proposed nothing".into()]);
    }
    for (i, v) in raw.into_iter().take(k).enumerate() {
        let n = i + 1;
        let p: Proposal = match serde_json::from_value(v) {
            Ok(p) => p,
            Err(e) => {
                refused.push(format!("proposal {n}: {e}"));
                continue;
            }
        };
        if p.edits.is_empty() {
            refused.push(format!("proposal {n}: no edits"));
            continue;
        }
        if let Some(k) = p.edits.iter().find_map(|e| match e {
            Edit::Insert { component, .. } | Edit::Replace { component }
                if !component.kind.searched() =>
            {
                Some(component.kind)
            }
            _ => None,
        }) {
            refused.push(format!(
                "proposal {n}: {k} is not the search's to add (it buys success with cost)"
            ));
            continue;
        }
        match parent.apply_all(&p.edits) {
            Err(e) => refused.push(format!("proposal {n}: {e}")),
            Ok(h) if h.id() == parent.id() => {
                refused.push(format!("proposal {n}: changes nothing"));
            }
            Ok(h)
                if children
                    .iter()
                    .any(|(c, _): &(Child, _)| c.harness.id() == h.id()) =>
            {
                refused.push(format!("proposal {n}: the same child as an earlier one"));
            }
            Ok(harness) => children.push((
                Child {
                    harness,
                    edits: p.edits.clone(),
                    operator: "reflective",
                },
                p,
            )),
        }
    }
    (children, refused)
}

/// The proposals in the answer: the first JSON value in `text` (prose around it is
/// ignored), as `{"proposals": [...]}`, a bare list, or one proposal object.
fn answer(text: &str) -> Result<Vec<serde_json::Value>, String> {
    let Some(start) = text.find(['{', '[']) else {
        return Err(format!(
            "the proposer wrote no JSON: {:?}",
            text.chars().take(120).collect::<String>()
        ));
    };
    let mut values = serde_json::Deserializer::from_str(&text[start..]).into_iter();
    let v: serde_json::Value = match values.next() {
        Some(Ok(v)) => v,
        Some(Err(e)) => return Err(format!("malformed JSON: {e}")),
        None => return Err("the proposer wrote no JSON".into()),
    };
    match v {
        serde_json::Value::Array(list) => Ok(list),
        serde_json::Value::Object(mut o) => match o.remove("proposals") {
            Some(serde_json::Value::Array(list)) if o.is_empty() => Ok(list),
            Some(_) => Err("\"proposals\" must be the only key, holding a list".into()),
            None if o.contains_key("edits") => Ok(vec![serde_json::Value::Object(o)]),
            None => Err(format!(
                "the JSON has neither \"proposals\" nor \"edits\" (keys: {})",
                o.keys().cloned().collect::<Vec<_>>().join(", ")
            )),
        },
        other => Err(format!("expected a JSON object, got {other}")),
    }
}

/// The gate's tasks for a proposal: up to two of the parent's failures, those the proposal
/// claims to fix first (the parent's first failures where it claims none it failed), and
/// the first task the parent won. Seeds, with the parent's episode on each.
pub fn gate_tasks<'e>(
    proposal: &Proposal,
    episodes: &'e [ParentEpisode],
) -> (Vec<&'e ParentEpisode>, Option<&'e ParentEpisode>) {
    let failed = |e: &&ParentEpisode| !e.won;
    let mut fails: Vec<&ParentEpisode> = proposal
        .fixes
        .iter()
        .filter_map(|s| episodes.iter().filter(failed).find(|e| e.seed == *s))
        .collect();
    fails.dedup_by_key(|e| e.seed);
    for e in episodes.iter().filter(failed) {
        if fails.len() >= 2 {
            break;
        }
        if !fails.iter().any(|f| f.seed == e.seed) {
            fails.push(e);
        }
    }
    fails.truncate(2);
    (fails, episodes.iter().find(|e| e.won))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hx_common::harness::format::{Format, parse_as};

    fn parent() -> Harness {
        parse_as(
            r#"
[[components]]
name = "system"
kind = "system-prompt"
params.text = "Act."

[[components]]
name = "admissible"
kind = "tool"
stages = ["after-model"]
params.tool = "admissible-commands"

[[components]]
name = "act"
kind = "loglik-scoring"
params.tool = "admissible-commands"
"#,
            Format::Toml,
            "test",
        )
        .expect("valid")
    }

    #[test]
    fn valid_proposals_become_children_and_the_rest_are_refused_with_reasons() {
        let text = r#"Sure! Here is my answer:
{"proposals": [
  {"edits": [{"set-parameter": {"component": "act", "param": "repeat-penalty", "value": 1.0}}],
   "rationale": "stop repeating", "fixes": [2]},
  {"edits": [{"set-parameter": {"component": "act", "param": "temperature", "value": 99}}]},
  {"edits": [{"insert": {"component": {"name": "x", "kind": "teleporter"}}}]},
  {"edits": [{"insert": {"component": {"name": "guard", "kind": "loop-guard"}}}],
   "rationale": "break loops"},
  {"edits": []},
  {"edits": [{"insert": {"component": {"name": "b", "kind": "best-of"}}}]},
  {"edits": [{"set-parameter": {"component": "act", "param": "repeat-penalty", "value": 1.0}}]}
]} and some trailing words"#;
        let (children, refused) = check(&parent(), text, 10);
        let names: Vec<&str> = children.iter().map(|(c, _)| c.operator).collect();
        assert_eq!(names, ["reflective", "reflective"]);
        assert_eq!(children[0].1.fixes, [2]);
        assert_eq!(children[0].1.rationale, "stop repeating");
        assert_eq!(
            children[0]
                .0
                .harness
                .component("act")
                .expect("act")
                .float("repeat-penalty"),
            1.0
        );
        assert!(children[1].0.harness.component("guard").is_some());
        assert_eq!(refused.len(), 5, "{refused:#?}");
        assert!(refused[0].starts_with("proposal 2:") && refused[0].contains("temperature"));
        assert!(refused[1].starts_with("proposal 3:") && refused[1].contains("teleporter"));
        assert!(refused[2].contains("no edits"));
        assert!(refused[3].contains("best-of is not the search's"));
        assert!(refused[4].contains("same child"));
    }

    #[test]
    fn malformed_answers_are_refusals_not_panics() {
        let p = parent();
        for (text, why) in [
            ("I think the agent should try harder.", "no JSON"),
            ("{\"proposals\": [{\"edits\": [", "malformed JSON"),
            ("{\"ideas\": 3}", "neither"),
            ("{\"proposals\": 3}", "only key"),
            ("{\"proposals\": []}", "proposed nothing"),
            ("42 {", "malformed JSON"),
            ("\"just a string\"", "no JSON"),
        ] {
            let (children, refused) = check(&p, text, 3);
            assert!(children.is_empty(), "{text}");
            assert_eq!(refused.len(), 1, "{text}: {refused:?}");
            assert!(refused[0].contains(why), "{text}: {refused:?}");
        }
        // A bare list and a single proposal are read too; only the first k are considered.
        let one = r#"{"edits": [{"remove": {"name": "system"}}]}"#;
        assert_eq!(check(&p, one, 3).0.len(), 1);
        let list = r#"[{"edits": [{"remove": {"name": "system"}}]},
                       {"edits": [{"set-parameter": {"component": "act", "param": "top-k", "value": 3}}]}]"#;
        assert_eq!(check(&p, list, 1).0.len(), 1);
        assert_eq!(check(&p, list, 3).0.len(), 2);
        // Removing the action selector leaves an invalid harness: refused by the algebra.
        let (c, r) = check(&p, r#"{"edits": [{"remove": {"name": "act"}}]}"#, 3);
        assert!(c.is_empty() && r[0].contains("action"), "{r:?}");
    }

    #[test]
    fn the_gate_replays_claimed_failures_then_others_and_a_won_task() {
        let ep = |seed, won| ParentEpisode {
            seed,
            won,
            score: 0.0,
            steps: 10,
        };
        let eps = [
            ep(0, true),
            ep(1, false),
            ep(2, false),
            ep(3, true),
            ep(4, false),
        ];
        let with = |fixes: Vec<u64>| Proposal {
            edits: vec![],
            rationale: String::new(),
            fixes,
        };
        let seeds = |p: &Proposal| {
            let (f, w) = gate_tasks(p, &eps);
            (
                f.iter().map(|e| e.seed).collect::<Vec<_>>(),
                w.map(|e| e.seed),
            )
        };
        assert_eq!(seeds(&with(vec![4])), (vec![4, 1], Some(0)));
        assert_eq!(seeds(&with(vec![2, 4, 1])), (vec![2, 4], Some(0)));
        // Claims on won or unknown tasks are not failures to replay.
        assert_eq!(seeds(&with(vec![0, 9])), (vec![1, 2], Some(0)));
        let (f, w) = gate_tasks(&with(vec![]), &eps[1..3]);
        assert_eq!((f.len(), w.is_none()), (2, true));
    }

    /// A proposer that finds the repeat penalty the most likely change.
    struct LikesRepeatPenalty;

    impl ModelBackend for LikesRepeatPenalty {
        fn describe(&self) -> String {
            "likes".into()
        }
        fn generate(&self, _: &GenerateRequest) -> Result<hx_model::Generation, model::Error> {
            Ok(hx_model::Generation {
                text: "It repeats itself.".into(),
                finish: hx_model::Finish::Stop,
                usage: Usage::default(),
            })
        }
        fn score(&self, r: &hx_model::ScoreRequest) -> Result<hx_model::Scores, model::Error> {
            let n = r.candidates.len();
            let lp: Vec<f64> = r
                .candidates
                .iter()
                .map(|c| {
                    if c.contains("repeat-penalty to 1.25") {
                        -1.0
                    } else {
                        -5.0
                    }
                })
                .collect();
            Ok(hx_model::Scores {
                logprobs: lp,
                tokens: vec![1; n],
                per_token: vec![vec![-1.0]; n],
                usage: Usage {
                    prompt_tokens: 500,
                    cached_tokens: 0,
                    completion_tokens: 0,
                },
            })
        }
    }

    #[test]
    fn a_choosing_proposer_takes_the_most_likely_menu_edits() {
        let spec = ProposerSpec {
            mode: ProposerMode::Choose,
            proposals: 2,
            temperature: 0.7,
            max_tokens: 100,
            max_gates: 2,
        };
        let eps = [ParentEpisode {
            seed: 1,
            won: false,
            score: 0.0,
            steps: 10,
        }];
        // Over several seeds the menu's sample differs; whenever the liked edit is on it, it
        // comes first.
        let mut seen = 0;
        for seed in 0..6 {
            let p = propose(
                &parent(),
                &eps,
                "failed: looped",
                &spec,
                seed,
                Limits::default(),
                &LikesRepeatPenalty,
            )
            .expect("proposes");
            assert!(p.refused.is_empty());
            assert_eq!(p.children.len(), 2);
            assert_eq!(p.usage.prompt_tokens, 500);
            let first = &p.children[0].0.harness;
            if first.component("act").expect("act").float("repeat-penalty") == 1.25 {
                seen += 1;
                assert!(p.children[0].1.rationale.contains("repeat-penalty"));
            }
            for (c, _) in &p.children {
                assert_ne!(c.harness.id(), parent().id());
            }
        }
        assert!(seen >= 3, "the liked edit came first {seen} of 6 times");
    }

    #[test]
    fn the_prompt_names_the_ranges_and_never_offers_best_of() {
        let p = proposal_prompt(&parent(), "task 0: won in 3 steps", "(none)", 3);
        assert!(p.contains("act.repeat-penalty: number"), "{p}");
        assert!(p.contains("- loop-guard:"), "{p}");
        assert!(!p.contains("best-of"), "{p}");
        assert!(p.contains("up to 3 changes"));
    }
}
