//! Properties of harness graphs: canonical ids, the algebra's closure under validity, and
//! round trips through every format.

use hx_common::harness::format::{self, Format};
use hx_common::harness::mutate::Limits;
use hx_common::harness::{Harness, HarnessDoc};
use proptest::prelude::*;
use proptest::test_runner::Config;

use crate::arb;

fn config() -> Config {
    Config {
        cases: 256,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// The id depends on content only: any order of components and edges, and spelling out
    /// or leaving out defaults, gives the same id.
    #[test]
    fn id_is_independent_of_insertion_order(
        raw in arb::raw_harness(),
        order in any::<u64>(),
        explicit in any::<bool>(),
    ) {
        let doc = arb::valid_doc(&raw);
        let h = Harness::from_doc(doc.clone()).expect("generator makes valid harnesses");

        let mut shuffled = if explicit { h.to_doc() } else { arb::without_defaults(&doc) };
        // A deterministic shuffle driven by `order`, so a failure reproduces.
        let mut state = order | 1;
        let mut next = || { state ^= state << 13; state ^= state >> 7; state ^= state << 17; state };
        for i in (1..shuffled.components.len()).rev() {
            let j = (next() % (i as u64 + 1)) as usize;
            shuffled.components.swap(i, j);
        }
        for i in (1..shuffled.edges.len()).rev() {
            let j = (next() % (i as u64 + 1)) as usize;
            shuffled.edges.swap(i, j);
        }
        // Repeating an edge says nothing new.
        if let Some(e) = shuffled.edges.first().cloned() {
            shuffled.edges.push(e);
        }
        let again = Harness::from_doc(shuffled).expect("same content, still valid");
        prop_assert_eq!(again.id(), h.id());
        prop_assert_eq!(again, h);
    }

    /// Every operation yields a harness that passes validation from scratch, or an error.
    #[test]
    fn every_edit_yields_a_valid_harness_or_an_error(
        h in arb::valid_harness(),
        edits in arb::raw_edits(),
    ) {
        let mut h = h;
        for raw in edits {
            let edit = arb::edit_for(&h, raw);
            let before = h.to_doc();
            let outcome = h.apply(&edit);
            // The input is never touched.
            prop_assert_eq!(&before, &h.to_doc());
            if let Ok(next) = outcome {
                let revalidated = Harness::from_doc(next.to_doc());
                prop_assert!(revalidated.is_ok(), "{edit:?} gave an invalid harness: {revalidated:?}");
                prop_assert_eq!(revalidated.expect("checked").id(), next.id());
                h = next;
            }
        }
    }

    /// Merge yields a valid harness or a typed conflict; it is commutative and idempotent.
    #[test]
    fn merge_is_valid_commutative_and_idempotent(
        a in arb::valid_harness(),
        b in arb::valid_harness(),
    ) {
        prop_assert_eq!(&(&a | &a).expect("a | a"), &a);
        match (&a | &b, &b | &a) {
            (Ok(ab), Ok(ba)) => {
                prop_assert!(Harness::from_doc(ab.to_doc()).is_ok());
                prop_assert_eq!(ab.id(), ba.id());
                for c in a.components().chain(b.components()) {
                    prop_assert_eq!(ab.component(&c.name), Some(c));
                }
            }
            (Err(_), Err(_)) => {}
            (x, y) => prop_assert!(false, "merge is not commutative: {x:?} vs {y:?}"),
        }
    }

    /// JSON, TOML and bincode round trips are identity on the canonical form.
    #[test]
    fn format_round_trips_are_identity(h in arb::valid_harness()) {
        let json = format::parse_as(&format::to_json(&h), Format::Json, "json").expect("json");
        prop_assert_eq!(&json, &h);
        let toml_text = format::to_toml(&h);
        let toml = format::parse_as(&toml_text, Format::Toml, "toml")
            .map_err(|e| TestCaseError::fail(format!("{e}\n{toml_text}")))?;
        prop_assert_eq!(&toml, &h);
        let cfg = bincode::config::standard();
        let bytes = bincode::serde::encode_to_vec(&h, cfg).expect("encodes");
        let (back, _): (Harness, usize) =
            bincode::serde::decode_from_slice(&bytes, cfg).expect("decodes");
        prop_assert_eq!(&back, &h);
        // The canonical document itself is a fixed point.
        prop_assert_eq!(Harness::from_doc(h.to_doc()).expect("valid").to_doc(), h.to_doc());
    }

    /// Validation never panics, whatever the document holds.
    #[test]
    fn validation_of_arbitrary_documents_never_panics(
        h in arb::valid_harness(),
        edits in arb::raw_edits(),
    ) {
        // Build a document by applying edits to the raw document without validation.
        let mut doc: HarnessDoc = h.to_doc();
        for raw in edits {
            match arb::edit_for(&h, raw) {
                hx_common::harness::Edit::Insert { component, edges } => {
                    doc.components.push(component);
                    doc.edges.extend(edges);
                }
                hx_common::harness::Edit::Rewire { add, .. } => doc.edges.extend(add),
                hx_common::harness::Edit::SetParameter { component, param, value } => {
                    if let Some(c) = doc.components.iter_mut().find(|c| c.name == component) {
                        c.params.insert(param, value);
                    }
                }
                _ => {}
            }
        }
        let _ = Harness::from_doc(doc);
    }

    /// A choosing proposer's menu: every entry applies, changes the harness, makes a child no
    /// other entry makes, never adds a best-of, and the menu keeps to its cap.
    #[test]
    fn the_menu_holds_distinct_valid_single_edits(h in arb::valid_harness(), seed in any::<u64>(), max in 1usize..60) {
        use rand::SeedableRng as _;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let menu = hx_common::harness::mutate::menu(&h, max, Limits::default(), &mut rng);
        prop_assert!(menu.len() <= max);
        let mut ids = std::collections::BTreeSet::new();
        for e in &menu {
            let child = h.apply(e);
            prop_assert!(child.is_ok(), "{e:?}: {child:?}");
            let child = child.unwrap();
            prop_assert_ne!(child.id(), h.id());
            prop_assert!(ids.insert(child.id()), "{e:?} repeats a child");
            prop_assert!(child.components().all(|c| c.kind.searched() || h.component(&c.name) == Some(c)));
        }
    }

    /// Under an episode step limit, no operator and no menu entry makes a child that plays
    /// exactly as its parent through its step budget: none sets `max-steps` past the limit,
    /// and none adds or removes a budget the limit already caps.
    #[test]
    fn no_child_differs_only_past_the_step_limit(h in arb::valid_harness(), seed in any::<u64>(), steps in 1u32..80) {
        use hx_common::harness::mutate::{menu, offline};
        use hx_common::protocol::{MutationOp, MutationSpec};
        use rand::SeedableRng as _;
        let limits = Limits { episode_steps: Some(steps) };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut children: Vec<Harness> = menu(&h, 60, limits, &mut rng)
            .iter()
            .map(|e| h.apply(e).expect("menu edits apply"))
            .collect();
        for op in [MutationOp::Structural, MutationOp::Parametric] {
            let spec = MutationSpec { op, seed, failure_digest: String::new() };
            if let Some(Ok(child)) = offline(&h, &spec, limits) {
                children.push(child.harness);
            }
        }
        for child in &children {
            prop_assert_ne!(acting(child, steps).id(), acting(&h, steps).id(), "{:?}", child);
        }
    }
}

/// `h` as it acts under an episode limit of `steps`: a step budget the limit caps removed.
fn acting(h: &Harness, steps: u32) -> Harness {
    match h.in_group("step-budget") {
        Some(c) if c.int("max-steps") >= i64::from(steps) => h
            .apply(&hx_common::harness::Edit::Remove {
                name: c.name.clone(),
            })
            .expect("a budget can be removed"),
        _ => h.clone(),
    }
}
