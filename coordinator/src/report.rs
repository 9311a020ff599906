//! `hx report`: one self-contained HTML page about a run, read from its store: best and median
//! success over time, the quality-diversity archive as a heat map, the lineage of the best
//! harness, the best harness drawn as a graph, in-task rewrite statistics, and the select and
//! test scores with their intervals. Plots are inline SVG drawn with plotters; the page needs
//! no script and nothing from the network. The coordinator's live view serves the same page.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;

use anyhow::{Result, anyhow};
use hx_common::config::Experiment;
use hx_common::harness::catalog::Stage;
use hx_common::harness::format::role_colour;
use hx_common::harness::{Harness, HarnessId};
use hx_common::stats::Rate;
use hx_common::task::Split;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::export::{Scored, ranked};
use crate::search::{
    ARCHIVE_COST_LABELS, ARCHIVE_SIZE_LABELS, Feedback, Final, RewriteStat, archive_cell,
};
use crate::store::{Lineage, Store};

/// What the page shows, gathered from a store.
pub struct RunView {
    /// The run's config.
    pub exp: Experiment,
    /// Harnesses, best first, with their scores per split.
    pub ranked: Vec<Scored>,
    /// (seconds, best, median) over the search.
    pub history: Vec<(f64, f64, f64)>,
    /// The end of the run, if reached.
    pub fin: Final,
    /// Why the search stopped, if it has.
    pub stopped: Option<String>,
    /// In-task rewrites by operation.
    pub rewrites: BTreeMap<String, RewriteStat>,
    /// Lineage by harness.
    pub lineage: HashMap<HarnessId, Lineage>,
    /// Tokens per step over each harness's search episodes.
    pub tokens_per_step: HashMap<HarnessId, f64>,
    /// Episodes run in the search (racing and the cache skip the rest).
    pub episodes_run: u64,
    /// Model tokens spent.
    pub tokens: u64,
    /// Seconds of search.
    pub elapsed_s: f64,
    /// What each variation operator made (from the run's status).
    pub operators: Vec<crate::search::OperatorStat>,
    /// The latest refusals workers reported, with their reasons.
    pub refusals: Vec<crate::search::Refusal>,
    /// The chosen harness minus each other one on the same held-out tasks.
    pub paired: Vec<crate::search::Paired>,
}

impl RunView {
    /// Reads everything the page shows from `store`.
    pub fn load(store: &Store) -> Result<RunView> {
        let exp: Experiment = store
            .meta("config")?
            .ok_or_else(|| anyhow!("the store {} holds no run", store.path().display()))?;
        let ranked = ranked(store)?;
        let mut lineage = HashMap::new();
        let mut tokens_per_step = HashMap::new();
        for s in &ranked {
            let id = s.harness.id();
            if let Some(l) = store.lineage(&id)? {
                lineage.insert(id, l);
            }
            if let Some(fb) = store.meta::<Feedback>(&format!("feedback/{id}"))? {
                tokens_per_step.insert(id, fb.tokens as f64 / fb.steps.max(1) as f64);
            }
        }
        let fin: Final = store.meta("final")?.unwrap_or_default();
        let paired = crate::search::paired(store, &fin)?;
        Ok(RunView {
            paired,
            ranked,
            history: store.meta("history")?.unwrap_or_default(),
            fin,
            stopped: store.meta("stopped")?,
            rewrites: store.meta("rewrite_stats")?.unwrap_or_default(),
            lineage,
            tokens_per_step,
            episodes_run: store.meta("episodes_run")?.unwrap_or(0),
            tokens: store.meta("tokens")?.unwrap_or(0),
            elapsed_s: store.meta("elapsed_s")?.unwrap_or(0.0),
            operators: crate::search::read_status(store.path())
                .map(|st| st.operators)
                .unwrap_or_default(),
            refusals: store.meta("refusals")?.unwrap_or_default(),
            exp,
        })
    }

    fn search_split(&self) -> Split {
        self.exp.suites[0].search_split
    }

    fn scored(&self, id: &HarnessId) -> Option<&Scored> {
        self.ranked.iter().find(|s| s.harness.id() == *id)
    }

    /// The harness the page is about: the final choice, else the best so far.
    fn best(&self) -> Option<&Scored> {
        match self.fin.best {
            Some(id) => self.scored(&id),
            None => self.ranked.first(),
        }
    }
}

/// Writes the whole page.
pub fn html(view: &RunView) -> Result<String> {
    let name = &view.exp.run.name;
    let mut page = String::new();
    write!(
        page,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>hx report: {}</title><style>{CSS}</style></head><body>\n",
        esc(name)
    )?;
    writeln!(page, "<h1>hx report: run <code>{}</code></h1>", esc(name))?;
    let phase = match (&view.fin.best, &view.stopped) {
        (Some(_), _) => "finished".to_owned(),
        (None, Some(why)) => format!("stopped ({why}), not yet finished"),
        (None, None) => "searching".to_owned(),
    };
    writeln!(
        page,
        "<p class=\"summary\">{phase}; {} episodes, {} model tokens, {:.0} s of search, {} \
         harnesses evaluated; suites {}.</p>",
        view.episodes_run,
        view.tokens,
        view.elapsed_s,
        view.ranked.len(),
        esc(&view
            .exp
            .suites
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")),
    )?;

    section(
        &mut page,
        "scores",
        "Held-out scores",
        "Success of the chosen harness and the seeds on the test split, which the search \
         never saw, and of the finalists on the select split; bars are 95% Wilson intervals.",
        &scores_svg(view)?,
    )?;
    if !view.paired.is_empty() {
        writeln!(
            page,
            "<p>The chosen harness minus each other one on the same held-out tasks (common \
             random numbers; mean difference with its 95% t interval):</p>\n{}",
            paired_table(view)
        )?;
    }
    section(
        &mut page,
        "fitness",
        "Fitness over time",
        &format!(
            "Success on the {} split of the best candidate (by the lower bound of its interval) \
             and the median candidate, as the search went on.",
            view.search_split()
        ),
        &fitness_svg(&view.history)?,
    )?;
    section(
        &mut page,
        "archive",
        "Archive",
        "The quality-diversity archive selection draws from: harness size against model \
         tokens per step. Each cell shows its best success and how many harnesses fell in it.",
        &archive_svg(view)?,
    )?;
    if let Some(best) = view.best() {
        let id = best.harness.id();
        section(
            &mut page,
            "lineage",
            "Lineage of the best harness",
            &format!(
                "How <code>{}</code> came about: each box is a harness with the operator that \
                 made it and its search success; arrows run from parent to child.",
                id.short()
            ),
            &lineage_svg(view, id)?,
        )?;
        section(
            &mut page,
            "harness",
            "The best harness",
            "Its components by the first stage they act in, coloured by role, with their \
             edges.",
            &harness_svg(&best.harness)?,
        )?;
    }
    section(
        &mut page,
        "rewrites",
        "In-task rewrites",
        "Rewrites agents made to their own harness mid-task, by operation: how often each \
         fired, was kept (not rolled back), and was kept in an episode that was won.",
        &rewrites_svg(&view.rewrites)?,
    )?;
    writeln!(page, "{}", rewrites_table(&view.rewrites))?;
    writeln!(
        page,
        "<h2>Variation operators</h2>\n<p>What each operator made: children evaluated, \
         children refused (invalid, or failed their gate), how many beat their first parent on \
         the same search tasks, the agents' tokens their search episodes spent, and for the \
         reflective operator its gates and the proposer's own tokens. The bandit draws each \
         with the weight shown.</p>\n{}",
        operators_table(&view.operators, &view.refusals)
    )?;
    writeln!(page, "<h2>Harnesses</h2>\n{}", harness_table(view))?;
    writeln!(page, "</body></html>")?;
    Ok(page)
}

const CSS: &str = "body{font-family:sans-serif;max-width:980px;margin:2em auto;color:#111}\
    h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em}figure{margin:0}\
    table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ccc;padding:3px 8px}\
    code{background:#f3f4f6;padding:0 3px}.summary{color:#374151}";

fn section(page: &mut String, id: &str, title: &str, caption: &str, svg: &str) -> Result<()> {
    writeln!(
        page,
        "<section id=\"{id}\"><h2>{title}</h2><p>{caption}</p>\
         <figure class=\"plot\" id=\"plot-{id}\">{svg}</figure></section>"
    )?;
    Ok(())
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn plot_err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing a plot: {e}")
}

/// An SVG of `size` drawn by `draw` into a string.
fn svg(
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, plotters::coord::Shift>) -> Result<()>,
) -> Result<String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, size).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        draw(&root)?;
        root.present().map_err(plot_err)?;
    }
    Ok(out)
}

fn note(text: &str) -> Result<String> {
    svg((720, 60), |root| {
        root.draw(&Text::new(
            text.to_owned(),
            (20, 30),
            ("sans-serif", 15)
                .into_font()
                .color(&RGBColor(107, 114, 128)),
        ))
        .map_err(plot_err)
    })
}

const BEST: RGBColor = RGBColor(37, 99, 235);
const MEDIAN: RGBColor = RGBColor(234, 88, 12);
/// Scores on the in-distribution held-out split.
const HELDOUT: RGBColor = RGBColor(22, 163, 74);

fn fitness_svg(history: &[(f64, f64, f64)]) -> Result<String> {
    if history.is_empty() {
        return note("No candidate has finished a rung yet.");
    }
    let xmax = history
        .iter()
        .map(|h| h.0 / 60.0)
        .fold(0.0, f64::max)
        .max(1.0 / 60.0);
    svg((820, 360), |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..xmax * 1.02, 0f64..100f64)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("minutes of search")
            .y_desc("success %")
            .draw()
            .map_err(plot_err)?;
        for (series, colour, label) in [(1, BEST, "best"), (2, MEDIAN, "median")] {
            let points = history.iter().map(|h| {
                let y = if series == 1 { h.1 } else { h.2 };
                (h.0 / 60.0, 100.0 * y)
            });
            chart
                .draw_series(LineSeries::new(points, colour.stroke_width(2)))
                .map_err(plot_err)?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .border_style(BLACK)
            .background_style(WHITE.mix(0.9))
            .draw()
            .map_err(plot_err)
    })
}

/// Blue scale from white (0) to dark blue (1).
fn heat(v: f64) -> RGBColor {
    let v = v.clamp(0.0, 1.0);
    let lerp = |a: f64, b: f64| (a + (b - a) * v).round() as u8;
    RGBColor(lerp(239.0, 30.0), lerp(246.0, 64.0), lerp(255.0, 175.0))
}

fn archive_svg(view: &RunView) -> Result<String> {
    let split = view.search_split();
    // (size bucket, cost bucket) -> (best success, harnesses).
    let mut cells: BTreeMap<(usize, usize), (f64, usize)> = BTreeMap::new();
    for s in &view.ranked {
        let Some(rate) = s.on(split).map(|f| f.success) else {
            continue;
        };
        let tps = view
            .tokens_per_step
            .get(&s.harness.id())
            .copied()
            .unwrap_or(0.0);
        let e = cells
            .entry(archive_cell(s.harness.len(), tps))
            .or_insert((0.0, 0));
        e.0 = e.0.max(rate.rate);
        e.1 += 1;
    }
    if cells.is_empty() {
        return note("No harness has search evaluations yet.");
    }
    svg((720, 420), |root| {
        // Segmented ranges are inclusive: 0..4 is five cells.
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(80)
            .build_cartesian_2d((0..4).into_segmented(), (0..4).into_segmented())
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_label_formatter(&|v| segment_label(&ARCHIVE_SIZE_LABELS, v))
            .y_label_formatter(&|v| segment_label(&ARCHIVE_COST_LABELS, v))
            .x_desc("harness size (components)")
            .y_desc("model tokens per step")
            .draw()
            .map_err(plot_err)?;
        for ((sx, cy), (best, n)) in &cells {
            let (x, y) = (*sx as i32, *cy as i32);
            let mut cell = Rectangle::new(
                [
                    (SegmentValue::Exact(x), SegmentValue::Exact(y)),
                    (SegmentValue::Exact(x + 1), SegmentValue::Exact(y + 1)),
                ],
                heat(*best).filled(),
            );
            cell.set_margin(2, 2, 2, 2);
            chart.draw_series(std::iter::once(cell)).map_err(plot_err)?;
            let ink = if *best > 0.55 { WHITE } else { BLACK };
            let style = ("sans-serif", 14)
                .into_font()
                .color(&ink)
                .pos(Pos::new(HPos::Center, VPos::Center));
            let centre = (SegmentValue::CenterOf(x), SegmentValue::CenterOf(y));
            chart
                .draw_series(std::iter::once(
                    EmptyElement::at(centre)
                        + Text::new(format!("{:.0}%", 100.0 * best), (0, -9), style.clone())
                        + Text::new(format!("n={n}"), (0, 9), style),
                ))
                .map_err(plot_err)?;
        }
        Ok(())
    })
}

/// The label of a segment's centre; nothing at its edges.
fn segment_label(labels: &[&str], v: &SegmentValue<i32>) -> String {
    match v {
        SegmentValue::CenterOf(i) => usize::try_from(*i)
            .ok()
            .and_then(|i| labels.get(i))
            .map(|s| s.to_string())
            .unwrap_or_default(),
        _ => String::new(),
    }
}

fn scores_svg(view: &RunView) -> Result<String> {
    // (label, split, rate)
    let mut rows: Vec<(String, Split, Rate)> = Vec::new();
    let seeds: BTreeSet<HarnessId> = view
        .lineage
        .iter()
        .filter(|(_, l)| l.operator == "seed")
        .map(|(id, _)| *id)
        .collect();
    let label = |id: &HarnessId| {
        let role = if Some(*id) == view.fin.best {
            "best"
        } else if seeds.contains(id) {
            "seed"
        } else if view.fin.role(id) == crate::search::PRUNE_TRIAL {
            crate::search::PRUNE_TRIAL
        } else if let Some(l) = view
            .lineage
            .get(id)
            .filter(|l| crate::search::final_only(&l.operator))
        {
            l.operator.as_str()
        } else {
            "finalist"
        };
        format!("{role} {}", id.short())
    };
    // The mean progress beside each label, where the run recorded it.
    let with_progress = |id: &HarnessId, of: &[(HarnessId, hx_common::stats::Mean)]| match of
        .iter()
        .find(|(p, _)| p == id)
    {
        Some((_, m)) => format!("{}, progress {:.2}", label(id), m.mean),
        None => label(id),
    };
    for (id, r) in &view.fin.test {
        rows.push((with_progress(id, &view.fin.test_progress), Split::Test, *r));
    }
    for (id, r) in &view.fin.heldout {
        rows.push((
            with_progress(id, &view.fin.heldout_progress),
            Split::Heldout,
            *r,
        ));
    }
    for (id, r) in &view.fin.select {
        rows.push((
            with_progress(id, &view.fin.select_progress),
            Split::Validation,
            *r,
        ));
    }
    if rows.is_empty() {
        return note("The run has not reached its end: no select or test scores yet.");
    }
    let h = 60 + 34 * rows.len() as u32;
    let n = rows.len() as i32;
    let names: Vec<String> = rows.iter().map(|(l, s, _)| format!("{l} ({s})")).collect();
    // Rows top to bottom in the order above.
    let row = |i: usize| SegmentValue::CenterOf(n - 1 - i as i32);
    svg((820, h), |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(330)
            .build_cartesian_2d(0f64..100f64, (0..n - 1).into_segmented())
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(rows.len() + 1)
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => {
                    names.get((n - 1 - i) as usize).cloned().unwrap_or_default()
                }
                _ => String::new(),
            })
            .x_desc("success % (95% Wilson interval)")
            .draw()
            .map_err(plot_err)?;
        for (i, (_, split, r)) in rows.iter().enumerate() {
            let colour = match split {
                Split::Test => BEST,
                Split::Heldout => HELDOUT,
                _ => MEDIAN,
            };
            chart
                .draw_series([PathElement::new(
                    vec![(100.0 * r.low, row(i)), (100.0 * r.high, row(i))],
                    colour.stroke_width(3),
                )])
                .map_err(plot_err)?;
            chart
                .draw_series([Circle::new((100.0 * r.rate, row(i)), 5, colour.filled())])
                .map_err(plot_err)?;
        }
        Ok(())
    })
}

/// The best harness's ancestors, generation by generation back to the seeds.
fn ancestry(view: &RunView, best: HarnessId) -> Vec<Vec<HarnessId>> {
    let mut levels = vec![vec![best]];
    let mut seen: BTreeSet<HarnessId> = [best].into();
    // Bounded: a run's lineage is a DAG over its harnesses; cap the drawing's depth.
    while levels.len() < 12 {
        let mut next = Vec::new();
        for id in levels.last().unwrap() {
            for p in view.lineage.get(id).map(|l| &l.parents[..]).unwrap_or(&[]) {
                if seen.insert(*p) {
                    next.push(*p);
                }
            }
        }
        if next.is_empty() {
            break;
        }
        levels.push(next);
    }
    levels
}

fn lineage_svg(view: &RunView, best: HarnessId) -> Result<String> {
    let levels = ancestry(view, best);
    let widest = levels.iter().map(Vec::len).max().unwrap_or(1).max(1);
    let (bw, bh, gap_x, gap_y) = (150i32, 44i32, 20i32, 36i32);
    let width = (widest as i32 * (bw + gap_x) + gap_x).max(400);
    let height = levels.len() as i32 * (bh + gap_y) + gap_y;
    // Seeds on top, the best at the bottom. Ordered, so the page is the same each time.
    let mut at: BTreeMap<HarnessId, (i32, i32)> = BTreeMap::new();
    for (depth, level) in levels.iter().rev().enumerate() {
        let row_w = level.len() as i32 * (bw + gap_x) - gap_x;
        let x0 = (width - row_w) / 2;
        for (i, id) in level.iter().enumerate() {
            at.insert(
                *id,
                (
                    x0 + i as i32 * (bw + gap_x),
                    gap_y / 2 + depth as i32 * (bh + gap_y),
                ),
            );
        }
    }
    let split = view.search_split();
    svg((width as u32, height as u32), |root| {
        for (id, (x, y)) in &at {
            for p in view.lineage.get(id).map(|l| &l.parents[..]).unwrap_or(&[]) {
                if let Some((px, py)) = at.get(p) {
                    root.draw(&PathElement::new(
                        vec![(px + bw / 2, py + bh), (x + bw / 2, *y)],
                        BLACK.mix(0.5).stroke_width(1),
                    ))
                    .map_err(plot_err)?;
                    root.draw(&Circle::new((x + bw / 2, *y), 3, BLACK.filled()))
                        .map_err(plot_err)?;
                }
            }
        }
        for (id, (x, y)) in &at {
            let fill = if *id == best {
                RGBColor(254, 215, 170)
            } else {
                RGBColor(243, 244, 246)
            };
            root.draw(&Rectangle::new([(*x, *y), (x + bw, y + bh)], fill.filled()))
                .map_err(plot_err)?;
            root.draw(&Rectangle::new(
                [(*x, *y), (x + bw, y + bh)],
                BLACK.stroke_width(1),
            ))
            .map_err(plot_err)?;
            let op = view
                .lineage
                .get(id)
                .map(|l| l.operator.as_str())
                .unwrap_or("?");
            let rate = view
                .scored(id)
                .and_then(|s| s.on(split))
                .map(|f| {
                    format!(
                        "{:.0}% of {}, progress {:.2}",
                        100.0 * f.success.rate,
                        f.success.trials,
                        f.progress.mean
                    )
                })
                .unwrap_or_else(|| "not scored".into());
            let font = ("sans-serif", 12).into_font();
            root.draw(&Text::new(
                format!("{} {op}", id.short()),
                (x + 6, y + 6),
                font.clone(),
            ))
            .map_err(plot_err)?;
            root.draw(&Text::new(rate, (x + 6, y + 24), font))
                .map_err(plot_err)?;
        }
        Ok(())
    })
}

fn hex(c: &str) -> RGBColor {
    let v = u32::from_str_radix(c.trim_start_matches('#'), 16).unwrap_or(0xe5e7eb);
    RGBColor((v >> 16) as u8, (v >> 8) as u8, v as u8)
}

fn harness_svg(h: &Harness) -> Result<String> {
    // Columns: the stages in order; each component in the column of its first stage.
    let mut columns: BTreeMap<usize, Vec<&hx_common::harness::Component>> = BTreeMap::new();
    for c in h.components() {
        let first = c
            .stages
            .iter()
            .next()
            .and_then(|s| Stage::ALL.iter().position(|x| x == s))
            .unwrap_or(0);
        columns.entry(first).or_default().push(c);
    }
    let (bw, bh, gap_x, gap_y, top) = (150i32, 40i32, 24i32, 14i32, 40i32);
    let tallest = columns.values().map(Vec::len).max().unwrap_or(1) as i32;
    let width = columns.len() as i32 * (bw + gap_x) + gap_x;
    let height = top + tallest * (bh + gap_y) + gap_y;
    let mut at: HashMap<&str, (i32, i32)> = HashMap::new();
    for (col, (_, comps)) in columns.iter().enumerate() {
        for (row, c) in comps.iter().enumerate() {
            at.insert(
                &c.name,
                (
                    gap_x + col as i32 * (bw + gap_x),
                    top + row as i32 * (bh + gap_y),
                ),
            );
        }
    }
    svg((width.max(400) as u32, height as u32), |root| {
        for (col, stage) in columns.keys().enumerate() {
            root.draw(&Text::new(
                Stage::ALL[*stage].to_string(),
                (gap_x + col as i32 * (bw + gap_x), 12),
                ("sans-serif", 13).into_font().color(&RGBColor(75, 85, 99)),
            ))
            .map_err(plot_err)?;
        }
        for e in h.edges() {
            if let (Some((fx, fy)), Some((tx, ty))) =
                (at.get(e.from.as_str()), at.get(e.to.as_str()))
            {
                root.draw(&PathElement::new(
                    vec![(fx + bw, fy + bh / 2), (*tx, ty + bh / 2)],
                    BLACK.mix(0.6).stroke_width(1),
                ))
                .map_err(plot_err)?;
                root.draw(&Circle::new((*tx, ty + bh / 2), 3, BLACK.filled()))
                    .map_err(plot_err)?;
            }
        }
        for c in h.components() {
            let (x, y) = at[c.name.as_str()];
            root.draw(&Rectangle::new(
                [(x, y), (x + bw, y + bh)],
                hex(role_colour(c.role())).filled(),
            ))
            .map_err(plot_err)?;
            root.draw(&Rectangle::new(
                [(x, y), (x + bw, y + bh)],
                BLACK.stroke_width(1),
            ))
            .map_err(plot_err)?;
            root.draw(&Text::new(
                c.name.clone(),
                (x + 6, y + 5),
                ("sans-serif", 12).into_font(),
            ))
            .map_err(plot_err)?;
            root.draw(&Text::new(
                c.kind.to_string(),
                (x + 6, y + 22),
                ("sans-serif", 11).into_font().color(&RGBColor(55, 65, 81)),
            ))
            .map_err(plot_err)?;
        }
        Ok(())
    })
}

fn rewrites_svg(stats: &BTreeMap<String, RewriteStat>) -> Result<String> {
    if stats.values().all(|s| s.fired == 0) {
        return note("No in-task rewrite fired in this run.");
    }
    // One row per operation and measure, top to bottom.
    let kinds = [
        ("fired", RGBColor(156, 163, 175)),
        ("kept", BEST),
        ("helped", RGBColor(22, 163, 74)),
    ];
    let rows: Vec<(String, u64, RGBColor)> = stats
        .iter()
        .flat_map(|(op, s)| {
            [s.fired, s.kept, s.helped]
                .into_iter()
                .zip(kinds)
                .map(move |(v, (k, c))| (format!("{op}: {k}"), v, c))
        })
        .collect();
    let n = rows.len() as i32;
    let xmax = rows.iter().map(|r| r.1).max().unwrap_or(1).max(1) as f64 * 1.1;
    let h = 60 + 22 * rows.len() as u32;
    svg((820, h), |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(200)
            .build_cartesian_2d(0f64..xmax, (0..n - 1).into_segmented())
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(rows.len() + 1)
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => rows
                    .get((n - 1 - i) as usize)
                    .map(|r| r.0.clone())
                    .unwrap_or_default(),
                _ => String::new(),
            })
            .x_desc("rewrites")
            .draw()
            .map_err(plot_err)?;
        for (i, (_, v, colour)) in rows.iter().enumerate() {
            let y = n - 1 - i as i32;
            let mut bar = Rectangle::new(
                [
                    (0.0, SegmentValue::Exact(y)),
                    (*v as f64, SegmentValue::Exact(y + 1)),
                ],
                colour.filled(),
            );
            bar.set_margin(3, 3, 0, 0);
            chart.draw_series(std::iter::once(bar)).map_err(plot_err)?;
        }
        Ok(())
    })
}

fn rewrites_table(stats: &BTreeMap<String, RewriteStat>) -> String {
    let mut t = String::from(
        "<table id=\"rewrite-table\"><tr><th>operation</th><th>fired</th><th>kept</th>\
         <th>helped</th></tr>",
    );
    for (op, s) in stats {
        let _ = write!(
            t,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(op),
            s.fired,
            s.kept,
            s.helped
        );
    }
    t.push_str("</table>");
    t
}

fn paired_table(view: &RunView) -> String {
    let mut t = String::from(
        "<table id=\"paired-table\"><tr><th>split</th><th>chosen minus</th><th>role</th>\
         <th>success</th><th>progress</th></tr>",
    );
    for p in &view.paired {
        let _ = write!(
            t,
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            p.split,
            p.other.short(),
            esc(view.fin.role(&p.other)),
            p.success,
            p.progress
        );
    }
    t.push_str("</table>");
    t
}

fn operators_table(
    ops: &[crate::search::OperatorStat],
    refusals: &[crate::search::Refusal],
) -> String {
    let mut t = String::from(
        "<table id=\"operator-table\"><tr><th>operator</th><th>children</th><th>refused</th>\
         <th>beat parent</th><th>agent tokens</th><th>gates passed</th>\
         <th>proposer tokens</th><th>weight</th></tr>",
    );
    for o in ops {
        let gates = o.gate_passed + o.gate_failed;
        let _ = write!(
            t,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{} of {}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{:.2}</td></tr>",
            esc(&o.operator),
            o.children,
            o.refused,
            o.improved,
            o.compared,
            o.tokens,
            if gates > 0 {
                format!("{} of {gates}", o.gate_passed)
            } else {
                String::new()
            },
            if o.proposer_tokens > 0 {
                o.proposer_tokens.to_string()
            } else {
                String::new()
            },
            o.weight()
        );
    }
    t.push_str("</table>");
    if !refusals.is_empty() {
        t.push_str("<p>Latest refusals, with the reasons given:</p><ul id=\"refusals\">");
        for r in refusals.iter().rev().take(20) {
            let _ = write!(
                t,
                "<li>job {} ({}): {}</li>",
                r.job,
                esc(&r.operator),
                esc(&r.reason)
            );
        }
        t.push_str("</ul>");
    }
    t
}

fn harness_table(view: &RunView) -> String {
    let mut t = String::from(
        "<table id=\"harness-table\"><tr><th>harness</th><th>operator</th><th>parents</th>\
         <th>components</th><th>train</th><th>validation</th><th>test</th>\
         <th>heldout</th></tr>",
    );
    for s in view.ranked.iter().take(30) {
        let id = s.harness.id();
        let l = view.lineage.get(&id);
        let rate = |split| {
            s.on(split)
                .map(|f| format!("{}; progress {}", f.success, f.progress))
                .unwrap_or_default()
        };
        let _ = write!(
            t,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td></tr>",
            id.short(),
            esc(l.map(|l| l.operator.as_str()).unwrap_or("?")),
            l.map(|l| {
                l.parents
                    .iter()
                    .map(|p| p.short())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default(),
            s.harness.len(),
            esc(&rate(Split::Train)),
            esc(&rate(Split::Validation)),
            esc(&rate(Split::Test)),
            esc(&rate(Split::Heldout)),
        );
    }
    t.push_str("</table>");
    t
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use hx_common::harness::format;

    use super::*;
    use crate::search::Fitness;

    fn configs() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs")
    }

    /// A view of a finished run of the two seed harnesses and one child, made by hand.
    fn view() -> RunView {
        let exp = Experiment::load(&configs().join("quickstart.toml"), &[]).unwrap();
        let react = format::load(&configs().join("harnesses/react.toml")).unwrap();
        let strong = format::load(&configs().join("harnesses/strong.toml")).unwrap();
        let child = strong
            .apply(&hx_common::harness::algebra::Edit::Remove {
                name: strong
                    .components()
                    .find(|c| c.role() == hx_common::harness::catalog::Role::Reflection)
                    .unwrap()
                    .name
                    .clone(),
            })
            .unwrap();
        let mut lineage = HashMap::new();
        for h in [&react, &strong] {
            lineage.insert(h.id(), Lineage::seed(None));
        }
        lineage.insert(
            child.id(),
            Lineage {
                parents: vec![strong.id()],
                operator: "structural".into(),
                adopted: vec![],
                job: None,
                at_ms: 1000,
            },
        );
        let r = |k, n| Rate::wilson95(k, n);
        let f = |k, n| Fitness {
            success: r(k, n),
            progress: hx_common::stats::Mean::t95(&[k as f64 / n as f64, 0.5]),
            tokens: 1000.0,
        };
        let ranked = vec![
            Scored {
                harness: child.clone(),
                fits: vec![(Split::Train, f(3, 6)), (Split::Test, f(4, 20))],
            },
            Scored {
                harness: strong.clone(),
                fits: vec![(Split::Train, f(2, 6)), (Split::Test, f(2, 20))],
            },
            Scored {
                harness: react.clone(),
                fits: vec![(Split::Train, f(0, 3)), (Split::Test, f(0, 20))],
            },
        ];
        let mut rewrites = BTreeMap::new();
        rewrites.insert(
            "set-parameter".to_owned(),
            RewriteStat {
                fired: 7,
                kept: 4,
                helped: 1,
            },
        );
        RunView {
            exp,
            ranked,
            history: vec![(10.0, 0.0, 0.0), (70.0, 0.33, 0.0), (130.0, 0.5, 0.33)],
            fin: Final {
                best: Some(child.id()),
                select: vec![(child.id(), r(2, 10))],
                test: vec![
                    (child.id(), r(4, 20)),
                    (strong.id(), r(2, 20)),
                    (react.id(), r(0, 20)),
                ],
                roles: vec![(react.id(), "seed".into())],
                ..Final::default()
            },
            stopped: Some("evaluation budget reached".into()),
            rewrites,
            lineage,
            tokens_per_step: HashMap::new(),
            episodes_run: 60,
            tokens: 123_456,
            elapsed_s: 130.0,
            operators: vec![crate::search::OperatorStat {
                operator: "reflective".into(),
                children: 3,
                refused: 5,
                compared: 3,
                improved: 1,
                tokens: 9000,
                gate_passed: 3,
                gate_failed: 2,
                proposer_tokens: 41_000,
            }],
            paired: vec![crate::search::Paired {
                split: Split::Test,
                other: react.id(),
                success: hx_common::stats::Diff::t95(&[1.0, 0.0, 1.0, 0.0]),
                progress: hx_common::stats::Diff::t95(&[0.5, 0.0, 0.25, 0.25]),
            }],
            refusals: vec![crate::search::Refusal {
                job: 12,
                operator: "reflective".into(),
                reason: "proposal 1: unknown variant `<teleporter>`".into(),
            }],
        }
    }

    #[test]
    fn the_page_is_the_same_each_time_it_is_written() {
        // Each map's hasher is seeded afresh, so an order taken from a hash map shows here.
        let first = html(&view()).unwrap();
        for _ in 0..16 {
            assert_eq!(html(&view()).unwrap(), first);
        }
    }

    fn figure<'a>(page: &'a str, id: &str) -> &'a str {
        let start = page
            .find(&format!("id=\"plot-{id}\""))
            .unwrap_or_else(|| panic!("no figure {id}"));
        let end = start + page[start..].find("</figure>").unwrap();
        &page[start..end]
    }

    #[test]
    fn every_plot_of_a_finished_run_is_drawn() {
        let page = html(&view()).unwrap();
        for id in [
            "scores", "fitness", "archive", "lineage", "harness", "rewrites",
        ] {
            let fig = figure(&page, id);
            assert!(fig.contains("<svg"), "{id}: {fig}");
            // Drawn, not a note that there is nothing to draw.
            let shapes = ["<rect", "<polyline", "<circle", "<line"]
                .iter()
                .map(|s| fig.matches(s).count())
                .sum::<usize>();
            assert!(shapes > 2, "{id} draws {shapes} shapes: {fig}");
        }
        // The lineage names the child and its parent; the graph names the components.
        let best = view().fin.best.unwrap();
        assert!(figure(&page, "lineage").contains(&best.short()));
        assert!(figure(&page, "lineage").contains("structural"));
        let child = &view().ranked[0].harness;
        for c in child.components() {
            assert!(figure(&page, "harness").contains(&c.name), "{}", c.name);
        }
        assert!(page.contains("<td>set-parameter</td><td>7</td><td>4</td><td>1</td>"));
        // The operator table, with the reflective operator's gates and proposer tokens, and
        // the refusals with their reasons (escaped).
        assert!(page.contains(
            "<td>reflective</td><td>3</td><td>5</td><td>1 of 3</td><td>9000</td>\
             <td>3 of 5</td><td>41000</td>"
        ));
        assert!(
            page.contains("job 12 (reflective): proposal 1: unknown variant `&lt;teleporter&gt;`")
        );
        // The paired differences: split, the other harness and its role, both differences.
        assert!(page.contains("id=\"paired-table\""));
        assert!(
            page.contains("<td>seed</td><td>+0.50 [-0.42, +1.00] (n=4)</td><td>+0.25 ["),
            "{}",
            &page[page.find("paired-table").unwrap()..][..600]
        );
    }

    #[test]
    fn a_run_without_results_says_so_instead_of_drawing_empty_axes() {
        let mut v = view();
        v.history.clear();
        v.fin = Final::default();
        v.rewrites.clear();
        let page = html(&v).unwrap();
        assert!(figure(&page, "fitness").contains("No candidate has finished a rung yet."));
        assert!(figure(&page, "scores").contains("not reached its end"));
        assert!(figure(&page, "rewrites").contains("No in-task rewrite fired"));
    }

    #[test]
    fn text_from_the_run_is_escaped() {
        let mut v = view();
        v.exp.suites[0].name = "a<b>&c".into();
        v.rewrites.insert("<script>".into(), RewriteStat::default());
        let page = html(&v).unwrap();
        assert!(!page.contains("a<b>"));
        assert!(!page.contains("<script>"));
        assert!(page.contains("a&lt;b&gt;&amp;c"));
    }
}
