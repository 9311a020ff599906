//! The validation rules, each with a name, and the one function that turns a document into a
//! harness by checking all of them.
//!
//! Every way of making a [`Harness`] goes through [`build`], so "valid" means one thing
//! everywhere: after loading a file, after decoding a message, after every algebra operation.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use petgraph::Direction;
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;

use super::catalog::{ACTION_SELECTOR, Kind};
use super::param::{Mismatch, ParamType};
use super::{Component, Harness, HarnessDoc, Stage};

/// Most components a harness may hold.
pub const MAX_COMPONENTS: usize = 64;
/// Most edges a harness may hold.
pub const MAX_EDGES: usize = 512;
/// Most bytes of text, over all text parameters together.
pub const MAX_TEXT_BYTES: usize = 32 * 1024;
/// Longest component name.
pub const MAX_NAME_LEN: usize = 48;

/// A named validation rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rule {
    /// Names are 1 to 48 characters of `a-z`, `0-9` and `-`, starting with a letter.
    NameFormat,
    /// No two components share a name.
    UniqueNames,
    /// Exactly one action selector.
    ExactlyOneActionSelector,
    /// At most one component per singleton group.
    SingletonGroups,
    /// At most one component per tool.
    UniqueTools,
    /// Every tool a parameter refers to is in the harness.
    ToolsExist,
    /// Parameters are known to their kind, of the right type, in range, and required ones given.
    ParamsInRange,
    /// Text parameters are within their own bound and all text within the harness bound.
    TextBounded,
    /// Components run only at stages their kind allows.
    StagesAllowed,
    /// Edges join existing components.
    EdgeEndpoints,
    /// Both ends of an edge run at the edge's stage.
    EdgeStageActive,
    /// The edges of any one stage form no cycle.
    AcyclicStages,
    /// At most 64 components and 512 edges.
    SizeBounded,
}

impl Rule {
    /// The rule's name, as messages print it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Rule::NameFormat => "name-format",
            Rule::UniqueNames => "unique-names",
            Rule::ExactlyOneActionSelector => "exactly-one-action-selector",
            Rule::SingletonGroups => "singleton-groups",
            Rule::UniqueTools => "unique-tools",
            Rule::ToolsExist => "tools-exist",
            Rule::ParamsInRange => "params-in-range",
            Rule::TextBounded => "text-bounded",
            Rule::StagesAllowed => "stages-allowed",
            Rule::EdgeEndpoints => "edge-endpoints",
            Rule::EdgeStageActive => "edge-stage-active",
            Rule::AcyclicStages => "acyclic-stages",
            Rule::SizeBounded => "size-bounded",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One broken rule: which, where (a component, parameter or edge), and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The rule broken.
    pub rule: Rule,
    /// Where: `component "act"`, `component "act", param "temperature"`, `edge a -> b @ stage`.
    pub at: String,
    /// Why.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} [{}]", self.at, self.detail, self.rule)
    }
}

/// Every rule a document breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Invalid {
    /// The violations, in the order found.
    pub violations: Vec<Violation>,
}

impl Invalid {
    /// Whether `rule` is among those broken.
    pub fn breaks(&self, rule: Rule) -> bool {
        self.violations.iter().any(|v| v.rule == rule)
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.violations.as_slice() {
            [one] => write!(f, "invalid harness: {one}"),
            many => {
                write!(f, "invalid harness, {} problems:", many.len())?;
                for v in many {
                    write!(f, "\n  - {v}")?;
                }
                Ok(())
            }
        }
    }
}

fn component_at(name: &str) -> String {
    format!("component {name:?}")
}

fn param_at(name: &str, param: &str) -> String {
    format!("component {name:?}, param {param:?}")
}

/// Normalizes a component to canonical form (default stages and parameters filled in, values
/// normalized) and reports what is wrong with it on its own.
fn normalize(mut c: Component, out: &mut Vec<Violation>) -> Component {
    let spec = c.spec();
    let mut push = |rule, at: String, detail: String| out.push(Violation { rule, at, detail });

    let name_ok = !c.name.is_empty()
        && c.name.len() <= MAX_NAME_LEN
        && c.name.starts_with(|ch: char| ch.is_ascii_lowercase())
        && c.name
            .chars()
            .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-');
    if !name_ok {
        push(
            Rule::NameFormat,
            component_at(&c.name),
            format!(
                "names are 1 to {MAX_NAME_LEN} characters of a-z, 0-9 and '-', starting with a letter"
            ),
        );
    }

    if c.stages.is_empty() {
        c.stages = spec.default_stages.iter().copied().collect();
    }
    for s in &c.stages {
        if !spec.stages.contains(s) {
            let allowed: Vec<_> = spec.stages.iter().map(Stage::as_str).collect();
            push(
                Rule::StagesAllowed,
                component_at(&c.name),
                format!("{} cannot run at {s}; it may run at {allowed:?}", c.kind),
            );
        }
    }

    let mut params = BTreeMap::new();
    for (key, value) in std::mem::take(&mut c.params) {
        let Some(ps) = spec.param(&key) else {
            let known: Vec<_> = spec.params.iter().map(|p| p.name).collect();
            push(
                Rule::ParamsInRange,
                param_at(&c.name, &key),
                format!("{} has no such parameter; it takes {known:?}", c.kind),
            );
            continue;
        };
        match ps.ty.normalize(value) {
            Ok(v) => {
                params.insert(key, v);
            }
            Err(e @ Mismatch::TooLong { .. }) => {
                push(Rule::TextBounded, param_at(&c.name, &key), e.to_string())
            }
            Err(e) => push(Rule::ParamsInRange, param_at(&c.name, &key), e.to_string()),
        }
    }
    for ps in spec.params {
        if params.contains_key(ps.name) {
            continue;
        }
        match ps.default.value() {
            Some(v) => {
                params.insert(ps.name.to_owned(), v);
            }
            None => push(
                Rule::ParamsInRange,
                param_at(&c.name, ps.name),
                format!("{} requires this parameter ({})", c.kind, ps.doc),
            ),
        }
    }
    c.params = params;
    c
}

/// Checks every rule and builds the harness.
pub(crate) fn build(doc: HarnessDoc) -> Result<Harness, Invalid> {
    let mut out = Vec::new();
    if doc.components.len() > MAX_COMPONENTS || doc.edges.len() > MAX_EDGES {
        // Refuse before doing work proportional to the input.
        out.push(Violation {
            rule: Rule::SizeBounded,
            at: "harness".into(),
            detail: format!(
                "{} components and {} edges; the limits are {MAX_COMPONENTS} and {MAX_EDGES}",
                doc.components.len(),
                doc.edges.len()
            ),
        });
        return Err(Invalid { violations: out });
    }

    let components: Vec<Component> = doc
        .components
        .into_iter()
        .map(|c| normalize(c, &mut out))
        .collect();

    check_membership(&components, &mut out);

    let text: usize = components
        .iter()
        .flat_map(|c| c.params.values())
        .filter_map(|v| v.as_text())
        .map(str::len)
        .sum();
    if text > MAX_TEXT_BYTES {
        out.push(Violation {
            rule: Rule::TextBounded,
            at: "harness".into(),
            detail: format!("{text} bytes of text in all; the limit is {MAX_TEXT_BYTES}"),
        });
    }

    let mut graph = StableDiGraph::with_capacity(components.len(), doc.edges.len());
    let mut by_name = BTreeMap::new();
    for c in components {
        if by_name.contains_key(&c.name) {
            out.push(Violation {
                rule: Rule::UniqueNames,
                at: component_at(&c.name),
                detail: "another component has this name".into(),
            });
            continue;
        }
        let name = c.name.clone();
        by_name.insert(name, graph.add_node(c));
    }

    // Edges are a set: a repeated edge says nothing new.
    let edges: BTreeSet<_> = doc.edges.into_iter().collect();
    for e in edges {
        let (Some(&a), Some(&b)) = (by_name.get(&e.from), by_name.get(&e.to)) else {
            let missing = if by_name.contains_key(&e.from) {
                &e.to
            } else {
                &e.from
            };
            out.push(Violation {
                rule: Rule::EdgeEndpoints,
                at: format!("edge {e}"),
                detail: format!("there is no component {missing:?}"),
            });
            continue;
        };
        for (ix, end) in [(a, &e.from), (b, &e.to)] {
            if !graph[ix].stages.contains(&e.stage) {
                out.push(Violation {
                    rule: Rule::EdgeStageActive,
                    at: format!("edge {e}"),
                    detail: format!("{end:?} does not run at {}", e.stage),
                });
            }
        }
        graph.add_edge(a, b, e.stage);
    }

    for stage in Stage::ALL {
        if let Err(cycle) = stage_order(&graph, stage) {
            let names: Vec<_> = cycle.iter().map(|&ix| graph[ix].name.as_str()).collect();
            out.push(Violation {
                rule: Rule::AcyclicStages,
                at: format!("stage {stage}"),
                detail: format!("edges form a cycle through {names:?}"),
            });
        }
    }

    if out.is_empty() {
        Ok(Harness::from_parts(graph))
    } else {
        Err(Invalid { violations: out })
    }
}

/// Singleton groups, the one action selector, unique tools, and tools that exist.
fn check_membership(components: &[Component], out: &mut Vec<Violation>) {
    let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut tools: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for c in components {
        if let Some(g) = c.group() {
            groups.entry(g).or_default().push(&c.name);
        }
        if let Some(t) = c.tool() {
            tools.entry(t).or_default().push(&c.name);
        }
    }
    match groups.get(ACTION_SELECTOR).map_or(0, Vec::len) {
        1 => {}
        n => out.push(Violation {
            rule: Rule::ExactlyOneActionSelector,
            at: "harness".into(),
            detail: format!(
                "{n} action selectors ({:?}); a harness needs exactly one of free-generation, \
                 loglik-scoring, sample-vote or random-choice",
                groups.get(ACTION_SELECTOR).cloned().unwrap_or_default()
            ),
        }),
    }
    for (group, members) in &groups {
        if members.len() > 1 && *group != ACTION_SELECTOR {
            out.push(Violation {
                rule: Rule::SingletonGroups,
                at: format!("group {group:?}"),
                detail: format!("at most one member allowed, found {members:?}"),
            });
        }
    }
    for (tool, members) in &tools {
        if members.len() > 1 {
            out.push(Violation {
                rule: Rule::UniqueTools,
                at: format!("tool {tool:?}"),
                detail: format!("offered by more than one component: {members:?}"),
            });
        }
    }
    for c in components {
        for ps in c.spec().params {
            if ps.ty != ParamType::ToolRef {
                continue;
            }
            let Some(t) = c.param(ps.name).and_then(|v| v.as_text()) else {
                continue;
            };
            if !tools.contains_key(t) {
                out.push(Violation {
                    rule: Rule::ToolsExist,
                    at: param_at(&c.name, ps.name),
                    detail: format!(
                        "refers to tool {t:?}, which no component offers; add a {} component \
                         with tool = {t:?}",
                        Kind::Tool
                    ),
                });
            }
        }
    }
}

/// The components running at `stage`, ordered by that stage's edges with ties broken by name;
/// or, if those edges form a cycle, the components on it (or caught between cycles).
pub(crate) fn stage_order(
    graph: &StableDiGraph<Component, Stage>,
    stage: Stage,
) -> Result<Vec<NodeIndex>, Vec<NodeIndex>> {
    let active: BTreeSet<NodeIndex> = graph
        .node_indices()
        .filter(|&ix| graph[ix].stages.contains(&stage))
        .collect();
    let stage_edges = |ix: NodeIndex, dir: Direction| {
        graph
            .edges_directed(ix, dir)
            .filter(|e| *e.weight() == stage)
            .map(move |e| {
                if dir == Direction::Outgoing {
                    e.target()
                } else {
                    e.source()
                }
            })
            .filter(|n| active.contains(n))
            .collect::<Vec<_>>()
    };
    let mut indegree: BTreeMap<NodeIndex, usize> = active
        .iter()
        .map(|&ix| (ix, stage_edges(ix, Direction::Incoming).len()))
        .collect();
    // Ready components keyed by name, so the order does not depend on node indices.
    let mut ready: BTreeMap<&str, NodeIndex> = indegree
        .iter()
        .filter(|(_, d)| **d == 0)
        .map(|(&ix, _)| (graph[ix].name.as_str(), ix))
        .collect();
    let mut order = Vec::with_capacity(active.len());
    while let Some((_, ix)) = ready.pop_first() {
        order.push(ix);
        for next in stage_edges(ix, Direction::Outgoing) {
            let d = indegree.get_mut(&next).expect("active node");
            *d -= 1;
            if *d == 0 {
                ready.insert(graph[next].name.as_str(), next);
            }
        }
    }
    if order.len() == active.len() {
        return Ok(order);
    }
    // What is left sits on a cycle or downstream of one; peel off the downstream part so the
    // report names the cycle itself.
    let placed: BTreeSet<_> = order.into_iter().collect();
    let mut left: BTreeSet<NodeIndex> = active.difference(&placed).copied().collect();
    loop {
        let sinks: Vec<_> = left
            .iter()
            .copied()
            .filter(|&ix| {
                stage_edges(ix, Direction::Outgoing)
                    .iter()
                    .all(|n| !left.contains(n))
            })
            .collect();
        if sinks.is_empty() {
            break;
        }
        for s in sinks {
            left.remove(&s);
        }
    }
    let mut cycle: Vec<_> = left.into_iter().collect();
    cycle.sort_by(|a, b| graph[*a].name.cmp(&graph[*b].name));
    Err(cycle)
}

#[cfg(test)]
mod tests {
    use super::super::{Edge, Kind};
    use super::*;

    fn act() -> Component {
        Component::new("act", Kind::FreeGeneration)
    }

    fn rules(doc: HarnessDoc) -> Vec<Rule> {
        build(doc)
            .expect_err("should be invalid")
            .violations
            .into_iter()
            .map(|v| v.rule)
            .collect()
    }

    #[test]
    fn needs_exactly_one_action_selector() {
        let none = HarnessDoc::default();
        assert_eq!(rules(none), [Rule::ExactlyOneActionSelector]);
        let two = HarnessDoc {
            components: vec![act(), Component::new("vote", Kind::SampleVote)],
            edges: vec![],
        };
        assert_eq!(rules(two), [Rule::ExactlyOneActionSelector]);
    }

    #[test]
    fn referenced_tools_must_exist() {
        let doc = HarnessDoc {
            components: vec![Component::new("act", Kind::LoglikScoring)],
            edges: vec![],
        };
        let err = build(doc).expect_err("no admissible-commands tool");
        assert_eq!(err.violations[0].rule, Rule::ToolsExist);
        assert!(err.to_string().contains("param \"tool\""), "{err}");
    }

    #[test]
    fn cycles_within_a_stage_are_named() {
        let doc = HarnessDoc {
            components: vec![
                act(),
                Component::new("a", Kind::Hint).with("text", "x"),
                Component::new("b", Kind::Hint).with("text", "y"),
            ],
            edges: vec![
                Edge::new("a", "b", Stage::BeforeModel),
                Edge::new("b", "a", Stage::BeforeModel),
                Edge::new("b", "act", Stage::BeforeModel),
            ],
        };
        let err = build(doc).expect_err("cycle");
        assert_eq!(err.violations.len(), 1);
        assert_eq!(err.violations[0].rule, Rule::AcyclicStages);
        assert!(err.violations[0].detail.contains(r#"["a", "b"]"#), "{err}");
    }

    #[test]
    fn self_loops_are_cycles() {
        let doc = HarnessDoc {
            components: vec![act()],
            edges: vec![Edge::new("act", "act", Stage::BeforeModel)],
        };
        assert_eq!(rules(doc), [Rule::AcyclicStages]);
    }

    #[test]
    fn edges_need_both_ends_at_their_stage() {
        let doc = HarnessDoc {
            components: vec![act(), Component::new("budget", Kind::StepBudget)],
            edges: vec![Edge::new("budget", "act", Stage::BeforeModel)],
        };
        assert_eq!(rules(doc), [Rule::EdgeStageActive]);
    }

    #[test]
    fn params_are_checked_against_the_catalog() {
        let doc = HarnessDoc {
            components: vec![
                act()
                    .with("temperature", 3.0)
                    .with("colour", "blue")
                    .with("max-tokens", "many"),
                Component::new("sys", Kind::SystemPrompt).with("text", "x".repeat(5000)),
            ],
            edges: vec![],
        };
        let err = build(doc).expect_err("bad params");
        let msg = err.to_string();
        assert!(
            msg.contains(r#"param "temperature": 3 is out of range 0..=2"#),
            "{msg}"
        );
        assert!(msg.contains(r#"param "colour""#), "{msg}");
        assert!(msg.contains("expected integer, found string"), "{msg}");
        assert!(err.breaks(Rule::TextBounded), "{msg}");
    }

    #[test]
    fn names_singletons_and_tools() {
        let tool = |n: &str| Component::new(n, Kind::Tool).with("tool", "inventory");
        let doc = HarnessDoc {
            components: vec![
                act(),
                Component::new("Bad Name", Kind::Hint).with("text", "x"),
                Component::new("h1", Kind::HistoryWindow),
                Component::new("h2", Kind::HistoryWindow),
                tool("inv"),
                tool("inv2"),
                Component::new("inv", Kind::Hint).with("text", "x"),
            ],
            edges: vec![Edge::new("ghost", "act", Stage::BeforeModel)],
        };
        let got: BTreeSet<_> = rules(doc).into_iter().collect();
        let want: BTreeSet<_> = [
            Rule::NameFormat,
            Rule::SingletonGroups,
            Rule::UniqueTools,
            Rule::UniqueNames,
            Rule::EdgeEndpoints,
        ]
        .into_iter()
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn oversized_documents_are_refused_early() {
        let doc = HarnessDoc {
            components: (0..=MAX_COMPONENTS)
                .map(|i| Component::new(format!("h{i}"), Kind::Hint).with("text", "x"))
                .collect(),
            edges: vec![],
        };
        assert_eq!(rules(doc), [Rule::SizeBounded]);
    }
}
