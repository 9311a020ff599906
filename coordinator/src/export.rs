//! `hx export`: the best harnesses of a run as files people can use and read: JSON and TOML
//! (both load back into `hx run` with the same id), DOT for Graphviz, and a Markdown card with
//! scores and their intervals, lineage, and the in-task rewrites adopted on the way.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use hx_common::harness::format::{self, Format};
use hx_common::harness::{Harness, HarnessId};
use hx_common::task::Split;

use crate::search::{Final, Fitness};
use crate::store::Store;

/// A harness's scores on each split it was evaluated on.
#[derive(Debug, Clone)]
pub struct Scored {
    /// The harness.
    pub harness: Harness,
    /// (split, success, progress and cost with 95% intervals) for every split with
    /// evaluations, in split order.
    pub fits: Vec<(Split, Fitness)>,
}

impl Scored {
    /// The fitness on `split`, if it has evaluations there.
    pub fn on(&self, split: Split) -> Option<Fitness> {
        self.fits.iter().find(|(s, _)| *s == split).map(|(_, f)| *f)
    }
}

/// The run's harnesses, best first: the final choice, then the other finalists by their select
/// score, then the rest by the lower bound of their search score.
pub fn ranked(store: &Store) -> Result<Vec<Scored>> {
    let fin: Final = store.meta("final")?.unwrap_or_default();
    let mut all = Vec::new();
    for h in store.harnesses()? {
        // A best-of's rest is a part of the best-of's outcomes, not a harness of its own.
        if store
            .lineage(&h.id())?
            .is_some_and(|l| l.operator == crate::search::BEST_OF_REST)
        {
            continue;
        }
        let evals = store.evaluations(&h.id())?;
        let fits = [Split::Train, Split::Validation, Split::Test, Split::Heldout]
            .into_iter()
            .filter_map(|split| {
                let on: Vec<_> = evals.iter().filter(|o| o.task.split == split).collect();
                (!on.is_empty()).then(|| (split, Fitness::of(on, 0.95)))
            })
            .collect();
        all.push(Scored { harness: h, fits });
    }
    let key = |s: &Scored| {
        let id = s.harness.id();
        let chosen = fin.best == Some(id);
        // Pruning's trials played the select split too, but were not finalists.
        let select = fin
            .select
            .iter()
            .find(|(f, _)| *f == id && fin.role(f) != crate::search::PRUNE_TRIAL)
            .map_or(-1.0, |(_, r)| r.low);
        (chosen, select, s.on(Split::Train))
    };
    all.sort_by(|a, b| {
        let (ka, kb) = (key(a), key(b));
        kb.0.cmp(&ka.0)
            .then(kb.1.total_cmp(&ka.1))
            .then(match (kb.2, ka.2) {
                (Some(fb), Some(fa)) => fb.rank(&fa),
                (fb, fa) => fb.is_some().cmp(&fa.is_some()),
            })
            .then(a.harness.id().cmp(&b.harness.id()))
    });
    Ok(all)
}

/// Writes the top `k` harnesses into `out`; returns the files written.
pub fn export(store: &Store, k: usize, out: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut written = Vec::new();
    let fin: Final = store.meta("final")?.unwrap_or_default();
    for (i, s) in ranked(store)?.into_iter().take(k).enumerate() {
        let stem = format!("{}-{}", i + 1, s.harness.id().short());
        for (ext, f) in [
            ("json", Format::Json),
            ("toml", Format::Toml),
            ("dot", Format::Dot),
        ] {
            let path = out.join(format!("{stem}.{ext}"));
            std::fs::write(&path, format::render(&s.harness, f))
                .with_context(|| format!("writing {}", path.display()))?;
            written.push(path);
        }
        let path = out.join(format!("{stem}.md"));
        std::fs::write(
            &path,
            card(store, &s, i + 1, &stem, fin.best == Some(s.harness.id()))?,
        )
        .with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// The Markdown card of one exported harness.
fn card(store: &Store, s: &Scored, rank: usize, stem: &str, chosen: bool) -> Result<String> {
    let id = s.harness.id();
    let mut md = String::new();
    writeln!(md, "# Harness {} (rank {rank})\n", id.short())?;
    writeln!(md, "- id: `{id}`")?;
    writeln!(md, "- components: {}", s.harness.len())?;
    if chosen {
        writeln!(md, "- chosen by the run's select split as its best harness")?;
    }
    writeln!(
        md,
        "- use it: `hx run --harness {stem}.toml --suite SUITE --split test`\n"
    )?;
    writeln!(
        md,
        "## Scores (95% intervals: Wilson for success, t for mean progress)\n"
    )?;
    writeln!(
        md,
        "| split | success | progress | tokens per episode |\n|---|---|---|---|"
    )?;
    for (split, f) in &s.fits {
        let role = match split {
            Split::Train => "search",
            Split::Validation => "select",
            Split::Test => "held-out test",
            Split::Heldout => "held-out, in distribution",
        };
        writeln!(
            md,
            "| {split} ({role}) | {} | {} | {:.0} |",
            f.success, f.progress, f.tokens
        )?;
    }
    // The chosen harness against every other one on the same held-out tasks.
    if chosen && let Some(fin) = store.meta::<crate::search::Final>("final")? {
        let paired = crate::search::paired(store, &fin)?;
        if !paired.is_empty() {
            writeln!(
                md,
                "\n## Against the others on the same held-out tasks (mean difference, 95% t)\n"
            )?;
            writeln!(
                md,
                "| split | minus | role | success | progress |\n|---|---|---|---|---|"
            )?;
            for p in paired {
                writeln!(
                    md,
                    "| {} | `{}` | {} | {} | {} |",
                    p.split,
                    p.other.short(),
                    fin.role(&p.other),
                    p.success,
                    p.progress
                )?;
            }
        }
    }
    writeln!(md, "\n## Lineage\n")?;
    let mut at: Option<HarnessId> = Some(id);
    let mut depth = 0;
    while let Some(cur) = at.take() {
        let Some(l) = store.lineage(&cur)? else { break };
        let parents: Vec<String> = l
            .parents
            .iter()
            .map(|p| format!("`{}`", p.short()))
            .collect();
        writeln!(
            md,
            "{}- `{}`: {}{}",
            "  ".repeat(depth),
            cur.short(),
            l.operator,
            if parents.is_empty() {
                String::new()
            } else {
                format!(" of {}", parents.join(" and "))
            }
        )?;
        at = l.parents.first().copied();
        depth += 1;
        if depth > 64 {
            writeln!(md, "{}- ...", "  ".repeat(depth))?;
            break;
        }
    }
    let adopted = store.lineage(&id)?.map(|l| l.adopted).unwrap_or_default();
    writeln!(md, "\n## Adopted in-task rewrites\n")?;
    if adopted.is_empty() {
        writeln!(md, "None.")?;
    }
    for r in adopted {
        writeln!(
            md,
            "- {} at step {} of {} ({}): `{}`",
            r.edit.op(),
            r.step,
            r.task,
            r.trigger,
            serde_json::to_string(&r.edit)?
        )?;
    }
    Ok(md)
}
