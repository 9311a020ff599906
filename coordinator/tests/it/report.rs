//! `hx report` as a user meets it: a small real run (`hx evolve` with the embedded model),
//! its best harness exported and played again by `hx run` under the same id, then the report
//! page rendered by headless Chromium, which must lay out every plot as an SVG with drawn
//! content. The browser check is `#[ignore]`d, so a plain `cargo test` reports it as not run;
//! `scripts/test` installs Chromium (Debian) and runs it with `--include-ignored`. Both tests
//! share one run, made by whichever asks first.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

use hx_coordinator::search::read_status;

/// The figures every report has, in the page's order.
const FIGURES: [&str; 6] = [
    "plot-scores",
    "plot-fitness",
    "plot-archive",
    "plot-lineage",
    "plot-harness",
    "plot-rewrites",
];

fn hx(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_hx"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("hx runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "hx {args:?} failed:\n{stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A tiny local run with the real embedded model (see `tiny_config`).
fn tiny_run(dir: &Path) -> PathBuf {
    let config = crate::tiny_config(dir, "report", 9, 2, "kind = \"local\"\nworkers = 2");
    hx(
        dir,
        &["evolve", "--config", config.to_str().expect("utf-8")],
    );
    dir.join("store")
}

/// The shared run: its directory, its store and its report page.
struct Run {
    dir: PathBuf,
    store: PathBuf,
    page: PathBuf,
}

/// The tiny run and its report, made once per test process in cargo's scratch directory.
/// Its users take turns: each holds the guard while it works, since a command that opens the
/// store takes sled's lock on it and a second one at the same time is refused.
fn shared_run() -> (&'static Run, MutexGuard<'static, ()>) {
    static RUN: OnceLock<Run> = OnceLock::new();
    static TURN: Mutex<()> = Mutex::new(());
    let turn = TURN.lock().unwrap_or_else(PoisonError::into_inner);
    let run = RUN.get_or_init(|| {
        hx_model::fetch::ensure_default(&mut |m| eprintln!("{m}"))
            .unwrap_or_else(|e| panic!("the model is needed for this test: {e}"));
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-run");
        if dir.exists() {
            std::fs::remove_dir_all(&dir).expect("an old run is removed");
        }
        std::fs::create_dir_all(&dir).expect("run directory");
        let store = tiny_run(&dir);
        let page = dir.join("report.html");
        let printed = hx(
            &dir,
            &[
                "report",
                store.to_str().expect("utf-8"),
                "--out",
                page.to_str().expect("utf-8"),
            ],
        );
        assert_eq!(printed.trim(), page.display().to_string());
        Run { dir, store, page }
    });
    (run, turn)
}

/// What Chromium measured of each figure: (id, width, height, drawn elements).
fn measure_in_chromium(page: &Path) -> Vec<(String, f64, f64, u64)> {
    let have = Command::new("chromium").arg("--version").output().is_ok();
    assert!(
        have,
        "chromium is not installed: apt-get install chromium (scripts/test does)"
    );
    // The page itself has no script; a copy gets a probe that records the laid-out size and
    // drawn content of each figure's SVG into the DOM, which --dump-dom prints.
    let html = std::fs::read_to_string(page).expect("report written");
    let probe = r#"<script>
const out = [...document.querySelectorAll('figure.plot')].map(f => {
  const s = f.querySelector('svg');
  const r = s ? s.getBoundingClientRect() : {width: 0, height: 0};
  const n = s ? s.querySelectorAll('rect,polyline,polygon,circle,line,path,text').length : 0;
  return [f.id, r.width, r.height, n];
});
document.body.setAttribute('data-probe', JSON.stringify(out));
</script></body>"#;
    let probed = page.with_file_name("probe.html");
    std::fs::write(&probed, html.replace("</body>", probe)).expect("probe written");
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--virtual-time-budget=5000",
            "--dump-dom",
        ])
        .arg(format!("file://{}", probed.display()))
        .output()
        .expect("chromium runs");
    let dom = String::from_utf8_lossy(&out.stdout);
    let start = dom.find("data-probe=\"").unwrap_or_else(|| {
        panic!(
            "chromium did not run the probe:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    }) + "data-probe=\"".len();
    let end = start + dom[start..].find('"').expect("attribute ends");
    let json = dom[start..end]
        .replace("&quot;", "\"")
        .replace("&amp;", "&");
    serde_json::from_str(&json).expect("probe JSON")
}

#[test]
fn a_real_run_reports_and_exports_its_best_harness() {
    let (Run { dir, store, page }, _turn) = shared_run();
    let st = read_status(store).expect("status");
    assert_eq!(st.phase, "done", "{st:?}");
    let html = std::fs::read_to_string(page).expect("written");
    // Self-contained: nothing fetched from anywhere.
    for outside in ["src=\"http", "href=\"http", "<link", "<script"] {
        assert!(!html.contains(outside), "the page loads {outside}");
    }
    // The chosen harness and its test score are on the page.
    let best = st
        .final_
        .as_ref()
        .and_then(|f| f.best)
        .expect("a chosen harness");
    assert!(
        html.contains(&best.short()),
        "best {} not shown",
        best.short()
    );

    // The exported best harness loads back into `hx run` with the same id.
    let exported = dir.join("best");
    let files = hx(
        dir,
        &[
            "export",
            store.to_str().expect("utf-8"),
            "--out",
            exported.to_str().expect("utf-8"),
        ],
    );
    let json_file = files
        .lines()
        .find(|f| f.ends_with(".json"))
        .expect("a JSON export");
    // The chosen harness's card compares it with the seed on the same test task.
    let card = files
        .lines()
        .find(|f| f.ends_with(".md"))
        .map(|f| std::fs::read_to_string(f).expect("a card"))
        .expect("a Markdown card");
    let seeds_only = st
        .final_
        .as_ref()
        .is_some_and(|f| f.test.iter().all(|(id, _)| *id == best));
    assert!(
        seeds_only || card.contains("## Against the others on the same held-out tasks"),
        "{card}"
    );
    let ran: serde_json::Value = serde_json::from_str(&hx(
        dir,
        &[
            "run",
            "--harness",
            json_file,
            "--split",
            "test",
            "--tasks",
            "1",
            "--max-steps",
            "1",
            "--json",
        ],
    ))
    .expect("hx run --json");
    assert_eq!(ran["harness_id"], best.to_string());
    // Progress is reported beside success.
    assert!(ran["progress"]["mean"].is_number(), "{ran}");
}

/// A real run copied to text and back (`hx store dump`, `hx store load`) reads as the
/// original: the same status with the same paired differences, the same report; loading
/// again into the copy is refused.
#[test]
fn a_dumped_run_loads_into_a_new_store_as_the_original() {
    let (Run { dir, store, .. }, _turn) = shared_run();
    let dump = dir.join("run.jsonl");
    let copy = dir.join("copy");
    if copy.exists() {
        std::fs::remove_dir_all(&copy).expect("an old copy is removed");
    }
    let path = |p: &Path| p.to_str().expect("utf-8").to_owned();
    hx(dir, &["store", "dump", &path(store), "--out", &path(&dump)]);
    hx(dir, &["store", "load", &path(&copy), &path(&dump)]);
    let status = |s: &Path| hx(dir, &["status", &path(s), "--json"]);
    assert_eq!(status(&copy), status(store));
    let page = |s: &Path, out: &str| {
        hx(dir, &["report", &path(s), "--out", out]);
        std::fs::read_to_string(dir.join(out)).expect("a page")
    };
    assert_eq!(page(&copy, "copy.html"), page(store, "original.html"));

    let out = Command::new(env!("CARGO_BIN_EXE_hx"))
        .args(["store", "load", &path(&copy), &path(&dump)])
        .current_dir(dir)
        .output()
        .expect("hx runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("already holds"), "{stderr}");
}

/// Output into a pipe whose reader has gone (`hx status RUN | head`) ends the command
/// quietly, not with a panic.
#[test]
fn status_into_a_closed_pipe_ends_quietly() {
    let (Run { dir, store, .. }, _turn) = shared_run();
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_hx"))
        .args(["status", store.to_str().expect("utf-8")])
        .current_dir(dir)
        .stdout(writer)
        .output()
        .expect("hx runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
#[ignore = "needs chromium; scripts/test installs it and runs ignored tests"]
fn every_plot_of_a_real_run_is_laid_out_in_a_browser() {
    let rows = measure_in_chromium(&shared_run().0.page);
    let ids: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(ids, FIGURES, "{rows:?}");
    for (id, w, h, n) in &rows {
        assert!(*w >= 300.0 && *h >= 40.0, "{id} laid out at {w}x{h}");
        assert!(*n >= 2, "{id} draws {n} elements");
    }
}

#[test]
fn report_on_a_missing_run_names_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_hx"))
        .args(["report", "no-such-run", "--out", "r.html"])
        .current_dir(dir.path())
        .output()
        .expect("hx runs");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("runs/no-such-run"), "{err}");
}
