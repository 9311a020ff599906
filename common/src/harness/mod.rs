//! The harness graph: typed components joined by stage-labelled edges, always valid.
//!
//! A [`Harness`] can only be made by validating a [`HarnessDoc`] (the plain shape files and the
//! wire carry) or by an operation of the [`algebra`], which validates too. So a `Harness` in hand
//! is valid, and its [`HarnessId`] is a content hash of its canonical form: components sorted by
//! name with every default filled in, edges sorted, so the id does not depend on the order
//! anything was written or inserted in.

pub mod algebra;
pub mod catalog;
pub mod format;
pub mod mutate;
pub mod param;
pub mod validate;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use algebra::{Edit, TextEdit};
pub use catalog::{Kind, KindSpec, Role, Stage};
pub use param::{ParamSpec, ParamType, ParamValue};
pub use validate::{Invalid, Rule, Violation};

/// One component of a harness: a named instance of a catalog kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Component {
    /// Unique within the harness; edges refer to components by name.
    pub name: String,
    /// What it is.
    pub kind: Kind,
    /// Where in a step it runs; empty in a file means the kind's default stages.
    #[serde(default)]
    pub stages: BTreeSet<Stage>,
    /// Its parameters; missing ones take the kind's defaults.
    #[serde(default)]
    pub params: BTreeMap<String, ParamValue>,
}

impl Component {
    /// A component of `kind` named `name`, at its default stages, with default parameters.
    pub fn new(name: impl Into<String>, kind: Kind) -> Self {
        Component {
            name: name.into(),
            kind,
            stages: BTreeSet::new(),
            params: BTreeMap::new(),
        }
    }

    /// The same component with one parameter set.
    pub fn with(mut self, param: &str, value: impl Into<ParamValue>) -> Self {
        self.params.insert(param.to_owned(), value.into());
        self
    }

    /// The same component running at the given stages.
    pub fn at(mut self, stages: &[Stage]) -> Self {
        self.stages = stages.iter().copied().collect();
        self
    }

    /// The catalog entry of its kind.
    pub fn spec(&self) -> &'static KindSpec {
        self.kind.spec()
    }

    /// Its role.
    pub fn role(&self) -> Role {
        self.spec().role
    }

    /// Its singleton group, if its kind has one.
    pub fn group(&self) -> Option<&'static str> {
        self.spec().singleton
    }

    /// A parameter's value.
    pub fn param(&self, name: &str) -> Option<&ParamValue> {
        self.params.get(name)
    }

    /// Integer parameter `name`: its value, or the catalog's default where none is written
    /// (a component of a `Harness` has every value filled in).
    ///
    /// The name is checked against the catalog: a name the catalog does not list for this kind,
    /// or a parameter of another type, is a bug in the caller (harness files cannot cause it:
    /// they are validated against the same catalog), and panics naming the kind and the name,
    /// where a plain lookup would quietly read 0. The same holds for [`Component::float`],
    /// [`Component::text`] and [`Component::flag`].
    pub fn int(&self, name: &str) -> i64 {
        let default = match self.catalog_param(name).default {
            param::ParamDefault::Int(v) => Some(v),
            _ => None,
        };
        self.typed(name, "an integer", ParamValue::as_int, default)
    }

    /// Number parameter `name` (integer or float), checked as [`Component::int`] is.
    pub fn float(&self, name: &str) -> f64 {
        let default = match self.catalog_param(name).default {
            param::ParamDefault::Float(v) => Some(v),
            param::ParamDefault::Int(v) => Some(v as f64),
            _ => None,
        };
        self.typed(name, "a number", ParamValue::as_float, default)
    }

    /// Text or choice parameter `name`, checked as [`Component::int`] is.
    pub fn text(&self, name: &str) -> &str {
        let default = match self.catalog_param(name).default {
            param::ParamDefault::Text(v) => Some(v),
            _ => None,
        };
        match self.params.get(name) {
            Some(v) => v.as_text(),
            None => default,
        }
        .unwrap_or_else(|| self.misread(name, "a text"))
    }

    /// Flag parameter `name`, checked as [`Component::int`] is.
    pub fn flag(&self, name: &str) -> bool {
        let default = match self.catalog_param(name).default {
            param::ParamDefault::Bool(v) => Some(v),
            _ => None,
        };
        self.typed(name, "a flag", ParamValue::as_bool, default)
    }

    fn catalog_param(&self, name: &str) -> &'static param::ParamSpec {
        self.spec().param(name).unwrap_or_else(|| {
            panic!(
                "the catalog lists no parameter `{name}` for {} (component {})",
                self.kind.as_str(),
                self.name
            )
        })
    }

    fn typed<T>(
        &self,
        name: &str,
        what: &str,
        get: impl Fn(&ParamValue) -> Option<T>,
        default: Option<T>,
    ) -> T {
        match self.params.get(name) {
            Some(v) => get(v),
            None => default,
        }
        .unwrap_or_else(|| self.misread(name, what))
    }

    fn misread(&self, name: &str, what: &str) -> ! {
        panic!(
            "parameter `{name}` of {} (component {}) is not {what} in the catalog, or has no value",
            self.kind.as_str(),
            self.name
        )
    }

    /// For a tool component, the tool it offers.
    pub fn tool(&self) -> Option<&str> {
        (self.kind == Kind::Tool)
            .then(|| self.param("tool").and_then(ParamValue::as_text))
            .flatten()
    }
}

/// "The output of `from` feeds `to` at `stage`": both run at that stage, `from` first.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Edge {
    /// The component that runs first.
    pub from: String,
    /// The component that runs after it.
    pub to: String,
    /// The stage at which this ordering holds.
    pub stage: Stage,
}

impl Edge {
    /// An edge `from -> to` at `stage`.
    pub fn new(from: impl Into<String>, to: impl Into<String>, stage: Stage) -> Self {
        Edge {
            from: from.into(),
            to: to.into(),
            stage,
        }
    }
}

impl fmt::Display for Edge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {} @ {}", self.from, self.to, self.stage)
    }
}

/// The plain, unvalidated shape of a harness, as files and messages carry it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HarnessDoc {
    /// The components.
    #[serde(default)]
    pub components: Vec<Component>,
    /// The edges.
    #[serde(default)]
    pub edges: Vec<Edge>,
}

/// Content hash of a harness's canonical form (128 bits of SHA-256).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HarnessId(pub [u8; 16]);

impl HarnessId {
    /// The first 12 hex digits, for people.
    pub fn short(&self) -> String {
        self.to_string()[..12].to_owned()
    }
}

impl fmt::Display for HarnessId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for HarnessId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HarnessId({self})")
    }
}

/// A string that is not 32 hex digits.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("harness id must be 32 hex digits, got {0:?}")]
pub struct BadId(pub String);

impl FromStr for HarnessId {
    type Err = BadId;

    fn from_str(s: &str) -> Result<Self, BadId> {
        let bad = || BadId(s.to_owned());
        if s.len() != 32 || !s.is_ascii() {
            return Err(bad());
        }
        let mut out = [0u8; 16];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(HarnessId(out))
    }
}

impl Serialize for HarnessId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for HarnessId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            s.parse().map_err(serde::de::Error::custom)
        } else {
            <[u8; 16]>::deserialize(d).map(HarnessId)
        }
    }
}

/// A valid harness graph. Cheap to query; edited only through the [`algebra`].
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "HarnessDoc", into = "HarnessDoc")]
pub struct Harness {
    graph: StableDiGraph<Component, Stage>,
    by_name: BTreeMap<String, NodeIndex>,
    id: HarnessId,
}

impl Harness {
    /// Validates a document and builds the harness, or says every rule it breaks.
    pub fn from_doc(doc: HarnessDoc) -> Result<Harness, Invalid> {
        validate::build(doc)
    }

    /// The canonical document: sorted, defaults filled in.
    pub fn to_doc(&self) -> HarnessDoc {
        let components = self.components().cloned().collect();
        let mut edges: Vec<Edge> = self.edges().collect();
        edges.sort();
        HarnessDoc { components, edges }
    }

    /// The content hash of the canonical form.
    pub fn id(&self) -> HarnessId {
        self.id
    }

    /// Components in name order.
    pub fn components(&self) -> impl Iterator<Item = &Component> {
        self.by_name.values().map(|&ix| &self.graph[ix])
    }

    /// The named component.
    pub fn component(&self, name: &str) -> Option<&Component> {
        self.by_name.get(name).map(|&ix| &self.graph[ix])
    }

    /// Number of components.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether the harness has no components (never true of a valid one).
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Edges, in no particular order.
    pub fn edges(&self) -> impl Iterator<Item = Edge> + '_ {
        self.graph.edge_indices().filter_map(|e| {
            let (a, b) = self.graph.edge_endpoints(e)?;
            Some(Edge::new(
                self.graph[a].name.clone(),
                self.graph[b].name.clone(),
                self.graph[e],
            ))
        })
    }

    /// The member of a singleton group, if present.
    pub fn in_group(&self, group: &str) -> Option<&Component> {
        self.components().find(|c| c.group() == Some(group))
    }

    /// The action selector (every valid harness has exactly one).
    pub fn action_selector(&self) -> &Component {
        self.in_group(catalog::ACTION_SELECTOR)
            .expect("a valid harness has exactly one action selector")
    }

    /// Episodes per task its `best-of` component asks for on average (1 without one).
    pub fn best_of_samples(&self) -> f64 {
        self.in_group("best-of").map_or(1.0, |c| c.float("samples"))
    }

    /// The sampling streams this harness plays on the task with seed `seed`: `0..n` for a
    /// `best-of` playing `n` episodes there (one for a harness without one), `1..n` for a
    /// best-of's rest ([`Harness::best_of_rest`]), which may be empty.
    pub fn best_of_streams(&self, seed: u64) -> std::ops::Range<u64> {
        let n = u64::from(catalog::best_of_episodes(self.best_of_samples(), seed));
        let rest = self.in_group("best-of").is_some_and(|c| c.flag("rest"));
        u64::from(rest)..n
    }

    /// The tool component offering `tool`, if present.
    pub fn tool(&self, tool: &str) -> Option<&Component> {
        self.components().find(|c| c.tool() == Some(tool))
    }

    /// Components with the given role, in name order.
    pub fn with_role(&self, role: Role) -> impl Iterator<Item = &Component> {
        self.components().filter(move |c| c.role() == role)
    }

    /// The components that run at `stage`, in the order they run: edges at that stage first,
    /// then by name. This is the runtime's schedule.
    pub fn schedule(&self, stage: Stage) -> Vec<&Component> {
        let order = validate::stage_order(&self.graph, stage)
            .expect("a valid harness has no cycle within a stage");
        order.into_iter().map(|ix| &self.graph[ix]).collect()
    }

    fn from_parts(graph: StableDiGraph<Component, Stage>) -> Harness {
        let by_name: BTreeMap<String, NodeIndex> = graph
            .node_indices()
            .map(|ix| (graph[ix].name.clone(), ix))
            .collect();
        let mut h = Harness {
            graph,
            by_name,
            id: HarnessId([0; 16]),
        };
        h.id = canonical_id(&h.to_doc());
        h
    }
}

/// The bytes a harness id hashes: a domain tag, then canonical JSON. Changing what these bytes
/// contain changes every id, so the tag carries a version.
fn canonical_id(doc: &HarnessDoc) -> HarnessId {
    let mut doc = doc.clone();
    for c in &mut doc.components {
        let spec = c.kind.spec();
        c.params.retain(|name, value| {
            !spec
                .param(name)
                .is_some_and(|p| p.id_omits_default && p.default.value().as_ref() == Some(value))
        });
    }
    let json = serde_json::to_vec(&doc).expect("a harness document always serializes");
    let mut hasher = Sha256::new();
    hasher.update(b"hx-harness/1\n");
    hasher.update(&json);
    let digest = hasher.finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    HarnessId(id)
}

impl TryFrom<HarnessDoc> for Harness {
    type Error = Invalid;
    fn try_from(doc: HarnessDoc) -> Result<Self, Invalid> {
        Harness::from_doc(doc)
    }
}

impl From<Harness> for HarnessDoc {
    fn from(h: Harness) -> Self {
        h.to_doc()
    }
}

impl PartialEq for Harness {
    fn eq(&self, other: &Self) -> bool {
        // Equal ids mean equal canonical forms, short of a hash collision; compare the forms so
        // that not even that can fool us.
        self.id == other.id && self.to_doc() == other.to_doc()
    }
}

impl fmt::Debug for Harness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Harness")
            .field("id", &self.id)
            .field("doc", &self.to_doc())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn small() -> Harness {
        Harness::from_doc(HarnessDoc {
            components: vec![
                Component::new("system", Kind::SystemPrompt).with("text", "You are an agent."),
                Component::new("history", Kind::HistoryWindow),
                Component::new("act", Kind::FreeGeneration),
            ],
            edges: vec![
                Edge::new("system", "act", Stage::BeforeModel),
                Edge::new("history", "act", Stage::BeforeModel),
            ],
        })
        .expect("valid")
    }

    #[test]
    fn defaults_are_filled_in_canonical_form() {
        let h = small();
        let act = h.component("act").expect("present");
        assert_eq!(act.param("max-tokens"), Some(&ParamValue::Int(64)));
        assert_eq!(act.param("temperature"), Some(&ParamValue::Float(0.0)));
        assert_eq!(
            act.stages,
            [Stage::BeforeModel, Stage::AfterModel]
                .into_iter()
                .collect()
        );
    }

    #[test]
    fn typed_parameters_read_values_and_catalog_defaults() {
        let h = small();
        let act = h.component("act").expect("present");
        assert_eq!(act.int("max-tokens"), 64);
        assert_eq!(act.float("temperature"), 0.0);
        assert_eq!(
            h.component("system").expect("present").text("text"),
            "You are an agent."
        );
        // A component outside a harness has no defaults written; the catalog's are read.
        let bare = Component::new("h", Kind::HistoryWindow);
        assert_eq!(bare.param("steps"), None);
        assert_eq!(
            bare.int("steps"),
            match Kind::HistoryWindow
                .spec()
                .param("steps")
                .expect("listed")
                .default
            {
                param::ParamDefault::Int(v) => v,
                other => panic!("{other:?}"),
            }
        );
    }

    #[test]
    #[should_panic(expected = "the catalog lists no parameter `max-token` for free-generation")]
    fn a_misspelt_parameter_name_is_a_loud_bug_not_a_zero() {
        small().component("act").expect("present").int("max-token");
    }

    #[test]
    #[should_panic(
        expected = "parameter `temperature` of free-generation (component act) is not an integer"
    )]
    fn reading_a_parameter_as_another_type_is_a_loud_bug() {
        small()
            .component("act")
            .expect("present")
            .int("temperature");
    }

    #[test]
    fn schedule_follows_edges_then_names() {
        let h = small();
        let names: Vec<_> = h
            .schedule(Stage::BeforeModel)
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(names, ["history", "system", "act"]);
    }

    #[test]
    fn id_parses_back_from_its_display() {
        let id = small().id();
        assert_eq!(id.to_string().parse::<HarnessId>(), Ok(id));
        assert!("xyz".parse::<HarnessId>().is_err());
        assert!("é".repeat(16).parse::<HarnessId>().is_err());
    }

    #[test]
    fn a_parameter_added_later_keeps_ids_at_its_default_and_changes_them_off_it() {
        let doc = || {
            let mut d = small().to_doc();
            d.components[0] = Component::new("act", Kind::LoglikScoring);
            d.components
                .push(Component::new("tools", Kind::Tool).with("tool", "admissible-commands"));
            d
        };
        let before = Harness::from_doc(doc()).expect("valid");
        // `revisit-penalty` came after ids were first given out: the canonical form has it,
        // the id does not see it at its default.
        let act = before.component("act").expect("present");
        assert_eq!(act.param("revisit-penalty"), Some(&ParamValue::Float(0.0)));
        let mut d = doc();
        d.components[0]
            .params
            .insert("revisit-penalty".into(), ParamValue::Float(0.0));
        assert_eq!(Harness::from_doc(d).expect("valid").id(), before.id());
        let mut d = doc();
        d.components[0]
            .params
            .insert("revisit-penalty".into(), ParamValue::Float(1.0));
        assert_ne!(Harness::from_doc(d).expect("valid").id(), before.id());
    }

    #[test]
    fn the_shipped_harnesses_keep_the_ids_their_runs_were_stored_under() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/harnesses");
        for (file, id) in [
            ("react.toml", "314443703ad3060c872861215c6ee822"),
            ("strong.toml", "8ba40a6cb736"),
        ] {
            let path = format!("{root}/{file}");
            let text = std::fs::read_to_string(&path).expect("shipped harness");
            let h = format::parse_as(&text, format::Format::Toml, &path).expect("valid");
            assert!(h.id().to_string().starts_with(id), "{file}: {}", h.id());
        }
    }

    #[test]
    fn explicit_defaults_hash_like_omitted_ones() {
        let mut doc = small().to_doc();
        doc.components[0].params.clear(); // `act`: every param back to default
        doc.components[0].stages.clear();
        assert_eq!(Harness::from_doc(doc).expect("valid").id(), small().id());
    }
}
