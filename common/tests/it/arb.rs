//! Generators for property tests. Strategies produce plain numbers; these functions turn them
//! into harness documents and edits, so proptest's shrinking still shrinks structure.

use std::collections::{BTreeMap, BTreeSet};

use hx_common::harness::catalog::Kind;
use hx_common::harness::param::ParamType;
use hx_common::harness::{Component, Edge, Edit, Harness, HarnessDoc, ParamValue, Stage, TextEdit};
use proptest::prelude::*;

/// Raw material of one component: kind, stage bits, parameter choices.
pub type RawPart = (u8, u8, Vec<u64>);
/// Raw material of one edge: two component picks and a stage pick.
pub type RawEdge = (u8, u8, u8);

pub fn raw_harness() -> impl Strategy<Value = (u8, Vec<RawPart>, Vec<RawEdge>)> {
    (
        any::<u8>(),
        prop::collection::vec(
            (
                any::<u8>(),
                any::<u8>(),
                prop::collection::vec(any::<u64>(), 8),
            ),
            0..14,
        ),
        prop::collection::vec(any::<(u8, u8, u8)>(), 0..24),
    )
}

fn kinds() -> Vec<Kind> {
    Kind::all().collect()
}

/// A value of the parameter's type, in range; `None` leaves it to the default.
fn value_for(ty: ParamType, r: u64) -> Option<ParamValue> {
    if r >> 63 == 1 {
        return None;
    }
    Some(match ty {
        ParamType::Bool => ParamValue::Bool(r.is_multiple_of(2)),
        ParamType::Int { min, max } => {
            let span = (max - min) as u64 + 1;
            ParamValue::Int(min + (r % span) as i64)
        }
        ParamType::Float { min, max } => {
            ParamValue::Float(min + (r % 1001) as f64 / 1000.0 * (max - min))
        }
        ParamType::Text { max_len } => {
            let mut s = format!("text {r} é");
            s.truncate(max_len.min(s.len()));
            ParamValue::Text(s)
        }
        ParamType::Choice(opts) => ParamValue::Text(opts[(r as usize) % opts.len()].to_owned()),
        ParamType::Set(opts) => ParamValue::List(
            opts.iter()
                .enumerate()
                .filter(|(i, _)| (r >> i) & 1 == 1)
                .map(|(_, o)| (*o).to_owned())
                .collect(),
        ),
        ParamType::ToolRef => ParamValue::Text("admissible-commands".into()),
    })
}

/// Any value at all, often of the wrong type or out of range.
pub fn wild_value(r: u64) -> ParamValue {
    match r % 7 {
        0 => ParamValue::Bool(r.is_multiple_of(2)),
        1 => ParamValue::Int((r >> 3) as i64 - (1 << 40)),
        2 => ParamValue::Int((r >> 3) as i64 % 100),
        3 => ParamValue::Float(if r.is_multiple_of(5) {
            f64::NAN
        } else {
            (r >> 3) as f64 / 1e6
        }),
        4 => ParamValue::Text("x".repeat((r >> 3) as usize % 5000)),
        5 => ParamValue::Text(
            ["mean", "raw", "admissible-commands", "inventory"][(r >> 3) as usize % 4].into(),
        ),
        _ => ParamValue::List(
            vec!["edit-text".into(), "nope".into()][..(r >> 3) as usize % 3].to_vec(),
        ),
    }
}

fn stages_for(kind: Kind, bits: u8) -> BTreeSet<Stage> {
    kind.spec()
        .stages
        .iter()
        .enumerate()
        .filter(|(i, _)| (bits >> i) & 1 == 1)
        .map(|(_, s)| *s)
        .collect()
}

fn component(kind: Kind, name: String, bits: u8, params: &[u64]) -> Component {
    let mut c = Component::new(name, kind);
    c.stages = stages_for(kind, bits);
    for (spec, &r) in kind.spec().params.iter().zip(params.iter().cycle()) {
        // Required parameters are always given; others are sometimes left to their default.
        let r = if spec.default.value().is_none() {
            r & !(1 << 63)
        } else {
            r
        };
        if let Some(v) = value_for(spec.ty, r) {
            c.params.insert(spec.name.to_owned(), v);
        }
    }
    c
}

/// A valid document built from raw numbers: singleton groups and tools are kept unique, tool
/// references always point at an admissible-commands tool that is added, and edges only run
/// forwards in insertion order, so no stage has a cycle.
pub fn valid_doc((selector, parts, edges): &(u8, Vec<RawPart>, Vec<RawEdge>)) -> HarnessDoc {
    let selectors = [Kind::FreeGeneration, Kind::LoglikScoring, Kind::SampleVote];
    let all = kinds();
    let mut comps = vec![component(
        selectors[*selector as usize % 3],
        "act".into(),
        *selector,
        &[u64::from(*selector); 8],
    )];
    let mut groups: BTreeSet<&str> = ["action-selector"].into();
    let mut tools = BTreeSet::new();
    for (i, (k, bits, params)) in parts.iter().enumerate() {
        let kind = all[*k as usize % all.len()];
        let c = component(kind, format!("{}-{i}", kind.as_str()), *bits, params);
        if let Some(g) = c.group()
            && !groups.insert(g)
        {
            continue;
        }
        if let Some(t) = c.tool()
            && !tools.insert(t.to_owned())
        {
            continue;
        }
        comps.push(c);
    }
    if !tools.contains("admissible-commands") {
        comps.push(Component::new("admissible", Kind::Tool).with("tool", "admissible-commands"));
    }
    // Effective stages, defaults filled, to pick edge stages both ends run at.
    let effective: Vec<BTreeSet<Stage>> = comps
        .iter()
        .map(|c| {
            if c.stages.is_empty() {
                c.spec().default_stages.iter().copied().collect()
            } else {
                c.stages.clone()
            }
        })
        .collect();
    let n = comps.len();
    let mut out_edges = Vec::new();
    for &(a, b, s) in edges {
        let (a, b) = (a as usize % n, b as usize % n);
        if a == b {
            continue;
        }
        let (from, to) = (a.min(b), a.max(b));
        let common: Vec<Stage> = effective[from]
            .intersection(&effective[to])
            .copied()
            .collect();
        if common.is_empty() {
            continue;
        }
        out_edges.push(Edge::new(
            comps[from].name.clone(),
            comps[to].name.clone(),
            common[s as usize % common.len()],
        ));
    }
    HarnessDoc {
        components: comps,
        edges: out_edges,
    }
}

pub fn valid_harness() -> impl Strategy<Value = Harness> {
    raw_harness().prop_map(|raw| {
        let doc = valid_doc(&raw);
        Harness::from_doc(doc.clone())
            .unwrap_or_else(|e| panic!("generator made an invalid harness: {e}\n{doc:#?}"))
    })
}

/// Raw material of one edit.
pub type RawEdit = (u8, u64, u64, u64, u8);

pub fn raw_edits() -> impl Strategy<Value = Vec<RawEdit>> {
    prop::collection::vec(any::<(u8, u64, u64, u64, u8)>(), 1..12)
}

fn pick<T: Clone>(items: &[T], r: u64) -> Option<T> {
    (!items.is_empty()).then(|| items[r as usize % items.len()].clone())
}

/// An edit against `h`, built from raw numbers: often sensible, often not.
pub fn edit_for(h: &Harness, (op, a, b, c, d): RawEdit) -> Edit {
    let names: Vec<String> = h.components().map(|x| x.name.clone()).collect();
    let name = |r: u64| {
        if r.is_multiple_of(10) {
            format!("ghost-{}", r % 3)
        } else {
            pick(&names, r).unwrap_or_default()
        }
    };
    let all = kinds();
    let fresh = |r: u64, bits: u8| {
        let kind = all[r as usize % all.len()];
        let n = if r.is_multiple_of(7) {
            name(r / 7)
        } else {
            format!("new-{}", r % 5)
        };
        component(
            kind,
            n,
            bits,
            &[r, r / 3, r / 5, r / 7, r / 11, r / 13, r / 17, r / 19],
        )
    };
    let edge = |r: u64| {
        Edge::new(
            name(r),
            name(r / 31),
            Stage::ALL[(r / 997) as usize % Stage::ALL.len()],
        )
    };
    let existing: Vec<Edge> = h.edges().collect();
    match op % 6 {
        0 => Edit::Insert {
            component: fresh(a, d),
            edges: (0..(c % 3)).map(|i| edge(b.wrapping_add(i))).collect(),
        },
        1 => Edit::Replace {
            component: fresh(a, d),
        },
        2 => Edit::Remove { name: name(a) },
        3 => Edit::Rewire {
            remove: if b % 3 == 0 {
                vec![edge(b)]
            } else {
                pick(&existing, b).into_iter().collect()
            },
            add: (0..(c % 3))
                .map(|i| edge(a.wrapping_add(i * 7919)))
                .collect(),
        },
        4 => {
            let component = name(a);
            let params: Vec<String> = h
                .component(&component)
                .map(|x| x.params.keys().cloned().collect())
                .unwrap_or_default();
            let param = if b % 9 == 0 {
                "nope".into()
            } else {
                pick(&params, b).unwrap_or_default()
            };
            let value = if c % 2 == 0 {
                h.component(&component)
                    .and_then(|x| x.spec().param(&param))
                    .and_then(|p| value_for(p.ty, c >> 1 & !(1 << 62)))
                    .unwrap_or_else(|| wild_value(c))
            } else {
                wild_value(c)
            };
            Edit::SetParameter {
                component,
                param,
                value,
            }
        }
        _ => {
            // Mostly components that have text, sometimes anything.
            let texty: Vec<String> = h
                .components()
                .filter(|x| x.params.contains_key("text"))
                .map(|x| x.name.clone())
                .collect();
            let component = match pick(&texty, a) {
                Some(n) if a % 4 != 0 => n,
                _ => name(a),
            };
            let param = ["text", "text", "mode", "steps"][b as usize % 4].to_owned();
            let edit = match c % 3 {
                0 => TextEdit::Set(format!("new text {c}")),
                1 if c % 5 == 0 => TextEdit::Append("x".repeat((c as usize >> 2) % 6000)),
                1 => TextEdit::Append(format!("more {c}")),
                _ => TextEdit::Replace {
                    find: ["text", "goal", "", "zzz"][(c >> 2) as usize % 4].into(),
                    with: "it".into(),
                },
            };
            Edit::EditText {
                component,
                param,
                edit,
            }
        }
    }
}

/// A document with defaults dropped: every parameter equal to its default removed, and
/// default stages left empty.
pub fn without_defaults(doc: &HarnessDoc) -> HarnessDoc {
    let mut doc = doc.clone();
    for c in &mut doc.components {
        let spec = c.spec();
        let defaults: BTreeMap<&str, ParamValue> = spec
            .params
            .iter()
            .filter_map(|p| Some((p.name, p.default.value()?)))
            .collect();
        c.params.retain(|k, v| defaults.get(k.as_str()) != Some(v));
        if c.stages
            .iter()
            .copied()
            .eq(spec.default_stages.iter().copied().collect::<BTreeSet<_>>())
        {
            c.stages.clear();
        }
    }
    doc
}
