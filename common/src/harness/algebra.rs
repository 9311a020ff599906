//! The substitution algebra: the only way to change a harness.
//!
//! Each [`Edit`] and [`merge`](Harness::merge) takes a valid harness and returns a new valid one
//! or a typed [`Error`]; the input is never touched. Mutation operators, crossover, and the
//! agent's own mid-task rewrites are all sequences of these edits, so they are recorded,
//! replayed and checked the same way.

use std::ops::BitOr;

use serde::{Deserialize, Serialize};

use super::catalog::Kind;
use super::param::{ParamType, ParamValue};
use super::validate::{Invalid, Rule, Violation};
use super::{Component, Edge, Harness, HarnessDoc};

/// How to change a text parameter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum TextEdit {
    /// Replace the whole text.
    Set(String),
    /// Add to the end (a newline is put between if the text does not end with one).
    Append(String),
    /// Replace every occurrence of `find`.
    Replace {
        /// The text to find; must occur.
        find: String,
        /// What to put in its place.
        with: String,
    },
}

/// One operation of the algebra.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum Edit {
    /// Add a component, with edges to and from it.
    Insert {
        /// The new component; its name must be free and its group and tool unused.
        component: Component,
        /// Edges to add with it.
        #[serde(default)]
        edges: Vec<Edge>,
    },
    /// Put a component in place of the member of its singleton group, keeping that member's
    /// edges.
    Replace {
        /// The replacement; its kind must have a singleton group.
        component: Component,
    },
    /// Take a component out, with its edges.
    Remove {
        /// The component's name.
        name: String,
    },
    /// Remove and add edges.
    Rewire {
        /// Edges to take out; each must exist.
        #[serde(default)]
        remove: Vec<Edge>,
        /// Edges to add.
        #[serde(default)]
        add: Vec<Edge>,
    },
    /// Set one parameter.
    SetParameter {
        /// The component's name.
        component: String,
        /// The parameter.
        param: String,
        /// Its new value.
        value: ParamValue,
    },
    /// Change a text parameter.
    EditText {
        /// The component's name.
        component: String,
        /// The text parameter.
        param: String,
        /// The change.
        edit: TextEdit,
    },
}

impl Edit {
    /// The operation's name, as rewrite policies list it (see [`super::catalog::EDIT_OPS`]).
    pub fn op(&self) -> &'static str {
        match self {
            Edit::Insert { .. } => "insert",
            Edit::Replace { .. } => "replace",
            Edit::Remove { .. } => "remove",
            Edit::Rewire { .. } => "rewire",
            Edit::SetParameter { .. } => "set-parameter",
            Edit::EditText { .. } => "edit-text",
        }
    }
}

/// Why an operation did not apply.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The result would break a rule.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// No component has that name.
    #[error("no component named {0:?}")]
    NoSuchComponent(String),
    /// The name is in use.
    #[error("a component named {0:?} already exists")]
    NameTaken(String),
    /// Replace needs a kind with a singleton group.
    #[error(
        "{0} has no singleton group to replace within; remove one component and insert the other"
    )]
    NotSingleton(Kind),
    /// Replace found no member of the group.
    #[error("no component in group {0:?} to replace; insert instead")]
    NoSuchGroup(&'static str),
    /// Rewire was asked to remove an edge that is not there.
    #[error("no edge {0}")]
    NoSuchEdge(Edge),
    /// The component's kind takes no such parameter.
    #[error("component {component:?} ({kind}) has no parameter {param:?}")]
    NoSuchParam {
        /// The component.
        component: String,
        /// Its kind.
        kind: Kind,
        /// The parameter asked for.
        param: String,
    },
    /// Edit-text on a parameter that is not free text.
    #[error("param {param:?} of component {component:?} is not free text")]
    NotText {
        /// The component.
        component: String,
        /// The parameter.
        param: String,
    },
    /// Replace-text did not find its target.
    #[error("{find:?} does not occur in param {param:?} of component {component:?}")]
    TextNotFound {
        /// The component.
        component: String,
        /// The parameter.
        param: String,
        /// What was looked for.
        find: String,
    },
    /// Two components would hold one singleton group.
    #[error("duplicate singleton: group {group:?} would hold both {left:?} and {right:?}")]
    DuplicateSingleton {
        /// The group.
        group: &'static str,
        /// The member already there (or on the left of a merge).
        left: String,
        /// The member arriving.
        right: String,
    },
    /// Two components would offer one tool.
    #[error("duplicate tool: {tool:?} would be offered by both {left:?} and {right:?}")]
    DuplicateTool {
        /// The tool.
        tool: String,
        /// The component already offering it.
        left: String,
        /// The component arriving.
        right: String,
    },
    /// Both sides of a merge have a component of this name, and they differ.
    #[error("name clash: both sides have a component {0:?} and they differ")]
    NameClash(String),
    /// The two sides of a merge order components in opposite ways within a stage.
    #[error("contradictory ordering: {0}")]
    ContradictoryOrdering(Violation),
}

impl Harness {
    /// This harness playing `samples` episodes per task and keeping the most certain one (a
    /// `best-of` component, inserted or set): the equal-budget baseline of test-time scaling.
    pub fn with_best_of(&self, samples: f64) -> Result<Harness, Error> {
        let value = ParamValue::Float((samples * 100.0).round() / 100.0);
        match self.in_group("best-of") {
            Some(c) => self.apply(&Edit::SetParameter {
                component: c.name.clone(),
                param: "samples".into(),
                value,
            }),
            None => self.apply(&Edit::Insert {
                component: Component::new("best-of", Kind::BestOf).with("samples", value),
                edges: Vec::new(),
            }),
        }
    }

    /// The harness whose single episode this one plays on the task with seed `seed`: where a
    /// `best-of` plays one episode there ([`super::catalog::best_of_episodes`]), that episode
    /// is exactly the one this harness without its best-of plays (sampling stream 0; a
    /// best-of writes nothing into the context). `None` where it plays several, or has no
    /// best-of.
    pub fn single_episode_as(&self, seed: u64) -> Option<Harness> {
        if super::catalog::best_of_episodes(self.best_of_samples(), seed) != 1 {
            return None;
        }
        self.best_of_base()
    }

    /// This harness without its `best-of` (whose episode is the best-of's first, on sampling
    /// stream 0), or `None` where it has none or is a best-of's rest.
    pub fn best_of_base(&self) -> Option<Harness> {
        let c = self.in_group("best-of").filter(|c| !c.flag("rest"))?;
        self.apply(&Edit::Remove {
            name: c.name.clone(),
        })
        .ok()
    }

    /// A best-of's episodes but the first (`rest` set): what is left to play on a task where
    /// the base's episode ([`Harness::best_of_base`]) is recorded already. The task's outcome
    /// is then the more certain of the two ([`TaskOutcome::best_of`]). `None` where this
    /// harness has no `best-of`, or is a rest already.
    ///
    /// [`TaskOutcome::best_of`]: crate::protocol::TaskOutcome::best_of
    pub fn best_of_rest(&self) -> Option<Harness> {
        let c = self.in_group("best-of").filter(|c| !c.flag("rest"))?;
        self.apply(&Edit::SetParameter {
            component: c.name.clone(),
            param: "rest".into(),
            value: ParamValue::Bool(true),
        })
        .ok()
    }

    /// Applies one edit, giving a new valid harness or the reason it cannot.
    pub fn apply(&self, edit: &Edit) -> Result<Harness, Error> {
        let mut doc = self.to_doc();
        match edit {
            Edit::Insert { component, edges } => {
                self.check_free(component)?;
                doc.components.push(component.clone());
                doc.edges.extend(edges.iter().cloned());
            }
            Edit::Replace { component } => {
                let group = component
                    .group()
                    .ok_or(Error::NotSingleton(component.kind))?;
                let old = self.in_group(group).ok_or(Error::NoSuchGroup(group))?;
                if component.name != old.name && self.component(&component.name).is_some() {
                    return Err(Error::NameTaken(component.name.clone()));
                }
                let old = old.name.clone();
                doc.components.retain(|c| c.name != old);
                doc.components.push(component.clone());
                for e in &mut doc.edges {
                    for end in [&mut e.from, &mut e.to] {
                        if *end == old {
                            end.clone_from(&component.name);
                        }
                    }
                }
            }
            Edit::Remove { name } => {
                self.named(name)?;
                doc.components.retain(|c| c.name != *name);
                doc.edges.retain(|e| e.from != *name && e.to != *name);
            }
            Edit::Rewire { remove, add } => {
                for e in remove {
                    let before = doc.edges.len();
                    doc.edges.retain(|x| x != e);
                    if doc.edges.len() == before {
                        return Err(Error::NoSuchEdge(e.clone()));
                    }
                }
                doc.edges.extend(add.iter().cloned());
            }
            Edit::SetParameter {
                component,
                param,
                value,
            } => {
                self.param_spec(component, param)?;
                slot(&mut doc, component, param).clone_from(value);
            }
            Edit::EditText {
                component,
                param,
                edit,
            } => {
                if !matches!(self.param_spec(component, param)?, ParamType::Text { .. }) {
                    return Err(Error::NotText {
                        component: component.clone(),
                        param: param.clone(),
                    });
                }
                let value = slot(&mut doc, component, param);
                let old = value.as_text().unwrap_or_default();
                let new = match edit {
                    TextEdit::Set(s) => s.clone(),
                    TextEdit::Append(s) if old.is_empty() || old.ends_with('\n') => {
                        old.to_owned() + s
                    }
                    TextEdit::Append(s) => format!("{old}\n{s}"),
                    TextEdit::Replace { find, with } => {
                        if find.is_empty() || !old.contains(find.as_str()) {
                            return Err(Error::TextNotFound {
                                component: component.clone(),
                                param: param.clone(),
                                find: find.clone(),
                            });
                        }
                        old.replace(find.as_str(), with)
                    }
                };
                *value = ParamValue::Text(new);
            }
        }
        Ok(Harness::from_doc(doc)?)
    }

    /// Applies edits in order; the first that fails stops the chain.
    pub fn apply_all<'a>(
        &self,
        edits: impl IntoIterator<Item = &'a Edit>,
    ) -> Result<Harness, Error> {
        let mut h = self.clone();
        for e in edits {
            h = h.apply(e)?;
        }
        Ok(h)
    }

    /// `a | b`: the union of two harnesses. Components both sides hold identically are kept
    /// once; any other overlap is a typed conflict. Merge is commutative and `a | a == a`.
    pub fn merge(&self, other: &Harness) -> Result<Harness, Error> {
        let mut doc = self.to_doc();
        for c in other.components() {
            match self.component(&c.name) {
                Some(mine) if mine == c => continue,
                Some(_) => {
                    // Same name, different content: report the most specific conflict.
                    return Err(match self.check_free(c) {
                        Err(
                            e @ (Error::DuplicateSingleton { .. } | Error::DuplicateTool { .. }),
                        ) => e,
                        _ => Error::NameClash(c.name.clone()),
                    });
                }
                None => {
                    self.check_free(c)?;
                    doc.components.push(c.clone());
                }
            }
        }
        doc.edges.extend(other.edges());
        Harness::from_doc(doc).map_err(|invalid| {
            // Each side is acyclic on its own, so a cycle here is the two orderings disagreeing.
            match invalid
                .violations
                .iter()
                .find(|v| v.rule == Rule::AcyclicStages)
            {
                Some(v) => Error::ContradictoryOrdering(v.clone()),
                None => Error::Invalid(invalid),
            }
        })
    }

    /// Whether `c` could join this harness: its group, tool and name unused.
    fn check_free(&self, c: &Component) -> Result<(), Error> {
        if let Some(group) = c.group()
            && let Some(held) = self.in_group(group)
        {
            return Err(Error::DuplicateSingleton {
                group,
                left: held.name.clone(),
                right: c.name.clone(),
            });
        }
        if let Some(tool) = c.tool()
            && let Some(held) = self.tool(tool)
        {
            return Err(Error::DuplicateTool {
                tool: tool.to_owned(),
                left: held.name.clone(),
                right: c.name.clone(),
            });
        }
        if self.component(&c.name).is_some() {
            return Err(Error::NameTaken(c.name.clone()));
        }
        Ok(())
    }

    fn named(&self, name: &str) -> Result<&Component, Error> {
        self.component(name)
            .ok_or_else(|| Error::NoSuchComponent(name.to_owned()))
    }

    fn param_spec(&self, component: &str, param: &str) -> Result<ParamType, Error> {
        let c = self.named(component)?;
        c.spec()
            .param(param)
            .map(|p| p.ty)
            .ok_or_else(|| Error::NoSuchParam {
                component: component.to_owned(),
                kind: c.kind,
                param: param.to_owned(),
            })
    }
}

/// The value slot of a parameter in a canonical document (where every parameter is present).
fn slot<'a>(doc: &'a mut HarnessDoc, component: &str, param: &str) -> &'a mut ParamValue {
    doc.components
        .iter_mut()
        .find(|c| c.name == component)
        .and_then(|c| c.params.get_mut(param))
        .expect("checked against the harness and its canonical form has every parameter")
}

impl BitOr for &Harness {
    type Output = Result<Harness, Error>;

    fn bitor(self, rhs: &Harness) -> Self::Output {
        self.merge(rhs)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Kind, Stage};
    use super::*;

    fn base() -> Harness {
        Harness::from_doc(HarnessDoc {
            components: vec![
                Component::new("sys", Kind::SystemPrompt).with("text", "Be brief."),
                Component::new("act", Kind::FreeGeneration),
            ],
            edges: vec![Edge::new("sys", "act", Stage::BeforeModel)],
        })
        .expect("valid")
    }

    fn hint(name: &str, text: &str) -> Component {
        Component::new(name, Kind::Hint).with("text", text)
    }

    #[test]
    fn replace_keeps_the_edges_of_the_replaced() {
        let h = base()
            .apply(&Edit::Insert {
                component: Component::new("admissible", Kind::Tool)
                    .with("tool", "admissible-commands"),
                edges: vec![],
            })
            .expect("insert");
        let h = h
            .apply(&Edit::Replace {
                component: Component::new("score", Kind::LoglikScoring),
            })
            .expect("replace");
        assert_eq!(h.action_selector().name, "score");
        assert!(
            h.edges()
                .any(|e| e == Edge::new("sys", "score", Stage::BeforeModel))
        );
    }

    #[test]
    fn typed_conflicts() {
        let h = base();
        let err = h
            .apply(&Edit::Insert {
                component: Component::new("vote", Kind::SampleVote),
                edges: vec![],
            })
            .expect_err("second selector");
        assert!(matches!(
            err,
            Error::DuplicateSingleton {
                group: "action-selector",
                ..
            }
        ));

        let inv = |n: &str| Component::new(n, Kind::Tool).with("tool", "inventory");
        let h = h
            .apply(&Edit::Insert {
                component: inv("inv"),
                edges: vec![],
            })
            .expect("first tool");
        let err = h
            .apply(&Edit::Insert {
                component: inv("inv2"),
                edges: vec![],
            })
            .expect_err("second inventory");
        assert!(matches!(err, Error::DuplicateTool { .. }), "{err}");

        let err = h
            .apply(&Edit::Remove { name: "act".into() })
            .expect_err("sole selector");
        assert!(
            matches!(&err, Error::Invalid(i) if i.breaks(Rule::ExactlyOneActionSelector)),
            "{err}"
        );
    }

    #[test]
    fn merge_is_union_with_conflicts() {
        let a = base()
            .apply(&Edit::Insert {
                component: hint("h1", "look first"),
                edges: vec![Edge::new("h1", "act", Stage::BeforeModel)],
            })
            .expect("a");
        let b = base()
            .apply(&Edit::Insert {
                component: hint("h2", "check the fridge"),
                edges: vec![],
            })
            .expect("b");
        let ab = (&a | &b).expect("compatible");
        assert_eq!(ab.len(), 4);
        assert_eq!(ab, (&b | &a).expect("commutes"));
        assert_eq!((&a | &a).expect("idempotent"), a);

        // Opposite orderings of the same two components within one stage.
        let both = (&a | &b).expect("compatible");
        let x = both
            .apply(&Edit::Rewire {
                remove: vec![],
                add: vec![Edge::new("h1", "h2", Stage::BeforeModel)],
            })
            .expect("x");
        let y = both
            .apply(&Edit::Rewire {
                remove: vec![],
                add: vec![Edge::new("h2", "h1", Stage::BeforeModel)],
            })
            .expect("y");
        assert!(matches!(&x | &y, Err(Error::ContradictoryOrdering(_))));

        let c = base()
            .apply(&Edit::EditText {
                component: "sys".into(),
                param: "text".into(),
                edit: TextEdit::Append("Think.".into()),
            })
            .expect("c");
        assert!(matches!(&a | &c, Err(Error::DuplicateSingleton { .. })));
        let d = base()
            .apply(&Edit::Insert {
                component: hint("h1", "other"),
                edges: vec![],
            })
            .expect("d");
        assert_eq!(&a | &d, Err(Error::NameClash("h1".into())));
    }

    #[test]
    fn text_edits() {
        let h = base();
        let edit = |e| {
            h.apply(&Edit::EditText {
                component: "sys".into(),
                param: "text".into(),
                edit: e,
            })
        };
        let text = |h: Harness| {
            h.component("sys")
                .expect("sys")
                .param("text")
                .expect("text")
                .clone()
        };
        assert_eq!(
            text(edit(TextEdit::Append("Act.".into())).expect("append")),
            ParamValue::Text("Be brief.\nAct.".into())
        );
        assert_eq!(
            text(
                edit(TextEdit::Replace {
                    find: "brief".into(),
                    with: "careful".into()
                })
                .expect("replace")
            ),
            ParamValue::Text("Be careful.".into())
        );
        assert!(matches!(
            edit(TextEdit::Replace {
                find: "absent".into(),
                with: "".into()
            }),
            Err(Error::TextNotFound { .. })
        ));
        let err = h
            .apply(&Edit::EditText {
                component: "act".into(),
                param: "format".into(),
                edit: TextEdit::Set("x".into()),
            })
            .expect_err("a choice is not free text");
        assert!(matches!(err, Error::NotText { .. }));
    }

    #[test]
    fn set_parameter_is_range_checked() {
        let h = base();
        let set = |v: ParamValue| {
            h.apply(&Edit::SetParameter {
                component: "act".into(),
                param: "temperature".into(),
                value: v,
            })
        };
        assert!(set(ParamValue::Float(0.5)).is_ok());
        assert!(matches!(
            set(ParamValue::Float(9.0)),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            h.apply(&Edit::SetParameter {
                component: "act".into(),
                param: "nope".into(),
                value: ParamValue::Int(1)
            }),
            Err(Error::NoSuchParam { .. })
        ));
    }
}
