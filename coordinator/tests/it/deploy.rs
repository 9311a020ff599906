//! The deploy kit (`deploy/`) checked with the tools that exist for it: `nats-server -t` for the
//! NATS config; hx's own command-line parser for every `hx`/`hx-worker` command line in the
//! systemd units, the compose file and the Kubernetes manifests; and hx's own config loader,
//! with the environment each of those sets, for the configs they name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Parser as _;
use hx_common::config::{Experiment, NatsAuth, Override, TransportOptions, WorkerOptions};
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// One way the kit starts an hx binary: its command line and the environment it gets.
#[derive(Debug)]
struct Launch {
    origin: String,
    argv: Vec<String>,
    env: BTreeMap<String, String>,
}

fn yaml_documents(path: &Path) -> Vec<Value> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
        ])
        .arg(path)
        .output()
        .expect("python3 runs (scripts/test installs it)");
    assert!(
        out.status.success(),
        "{} does not parse as YAML (or PyYAML is missing: pip install pyyaml): {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("python printed JSON")
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn env_file(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && l.contains('='))
        .map(|l| {
            let (k, v) = l.split_once('=').expect("has =");
            (k.trim().to_owned(), v.trim().to_owned())
        })
        .collect()
}

fn systemd_launches() -> Vec<Launch> {
    let dir = root().join("deploy/systemd");
    let mut out = Vec::new();
    for unit in ["hx-coordinator.service", "hx-worker.service"] {
        let path = dir.join(unit);
        let text = std::fs::read_to_string(&path).unwrap();
        let mut env = BTreeMap::new();
        let mut argv = Vec::new();
        for line in text.lines() {
            if let Some(file) = line.strip_prefix("EnvironmentFile=/etc/hx/") {
                env.extend(env_file(&dir.join(file)));
            } else if let Some(kv) = line.strip_prefix("Environment=") {
                let (k, v) = kv.split_once('=').expect("Environment=K=V");
                env.insert(k.to_owned(), v.to_owned());
            } else if let Some(cmd) = line.strip_prefix("ExecStart=") {
                argv = cmd.split_whitespace().map(str::to_owned).collect();
            }
        }
        assert!(!argv.is_empty(), "{unit} has no ExecStart");
        argv[0] = Path::new(&argv[0])
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        out.push(Launch {
            origin: format!("deploy/systemd/{unit}"),
            argv,
            env,
        });
    }
    out
}

fn compose_launches() -> Vec<Launch> {
    let path = root().join("deploy/compose/compose.yaml");
    let doc = yaml_documents(&path).remove(0);
    let mut out = Vec::new();
    for (name, svc) in doc["services"].as_object().expect("services") {
        if svc["image"] != "hx:latest" {
            continue;
        }
        let mut argv = match svc.get("entrypoint") {
            Some(e) => strings(e),
            None => vec!["hx".to_owned()],
        };
        argv.extend(strings(&svc["command"]));
        let env = svc["environment"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        out.push(Launch {
            origin: format!("deploy/compose/compose.yaml service {name}"),
            argv,
            env,
        });
    }
    out
}

fn k8s_launches() -> Vec<Launch> {
    let mut out = Vec::new();
    for file in ["coordinator.yaml", "worker.yaml"] {
        for doc in yaml_documents(&root().join("deploy/k8s").join(file)) {
            let Some(containers) = doc
                .pointer("/spec/template/spec/containers")
                .and_then(Value::as_array)
            else {
                continue;
            };
            for c in containers.iter().filter(|c| c["image"] == "hx:latest") {
                let mut argv = match c.get("command") {
                    Some(e) => strings(e),
                    None => vec!["hx".to_owned()],
                };
                argv.extend(strings(&c["args"]));
                let env = c["env"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|e| {
                        let value = e["value"].as_str().unwrap_or("from-a-secret");
                        (e["name"].as_str().unwrap().to_owned(), value.to_owned())
                    })
                    .collect();
                out.push(Launch {
                    origin: format!("deploy/k8s/{file} container {}", c["name"]),
                    argv,
                    env,
                });
            }
        }
    }
    out
}

/// The shipped config a kit command line names as /etc/hx/NAME (the image and the units
/// install configs/ there).
fn config_of(l: &Launch) -> PathBuf {
    let at = l
        .argv
        .iter()
        .position(|a| a == "--config")
        .unwrap_or_else(|| panic!("{}: no --config in {:?}", l.origin, l.argv));
    let named = &l.argv[at + 1];
    let rel = named
        .strip_prefix("/etc/hx/")
        .unwrap_or_else(|| panic!("{}: config {named} is not under /etc/hx", l.origin));
    root().join("configs").join(rel)
}

fn check_launch(l: &Launch) {
    let overrides = Override::from_env(l.env.clone());
    let config = config_of(l);
    let token_env = match l.argv[0].as_str() {
        "hx" => {
            hx_coordinator::cli::Cli::try_parse_from(&l.argv)
                .unwrap_or_else(|e| panic!("{}: {:?}: {e}", l.origin, l.argv));
            let exp = Experiment::load(&config, &overrides).unwrap_or_else(|e| {
                panic!("{} with the env of {}: {e}", config.display(), l.origin)
            });
            for seed in exp.seed_paths(&config) {
                assert!(
                    seed.is_file(),
                    "{}: seed {} missing",
                    l.origin,
                    seed.display()
                );
            }
            let TransportOptions::Nats { auth, .. } = exp.transport else {
                panic!("{}: the coordinator's config is not distributed", l.origin)
            };
            auth
        }
        "hx-worker" => {
            hx_worker::cli::Cli::try_parse_from(&l.argv)
                .unwrap_or_else(|e| panic!("{}: {:?}: {e}", l.origin, l.argv));
            WorkerOptions::load(&config, &overrides)
                .unwrap_or_else(|e| {
                    panic!("{} with the env of {}: {e}", config.display(), l.origin)
                })
                .auth
        }
        other => panic!("{}: starts {other}, not hx or hx-worker", l.origin),
    };
    if let NatsAuth::Token { token_env } = token_env {
        assert!(
            l.env.contains_key(&token_env),
            "{}: the config reads the NATS token from ${token_env}, which it does not set",
            l.origin
        );
    }
}

#[test]
fn every_hx_command_line_of_the_kit_parses_and_its_config_loads_with_its_environment() {
    let all: Vec<Launch> = [systemd_launches(), compose_launches(), k8s_launches()]
        .into_iter()
        .flatten()
        .collect();
    // Coordinator and worker, in each of the three forms.
    assert_eq!(all.len(), 6, "{all:#?}");
    for l in &all {
        check_launch(l);
    }
}

#[test]
fn a_launch_with_a_misspelt_key_in_its_environment_is_refused() {
    // The check above would catch a kit that sets a key hx does not know.
    let mut l = systemd_launches().remove(0);
    l.env
        .insert("HX__TRANSPORT__URI".into(), "nats://x:4222".into());
    let err = Experiment::load(&config_of(&l), &Override::from_env(l.env.clone())).unwrap_err();
    assert!(err.to_string().contains("uri"), "{err}");
}

#[test]
fn the_nats_config_is_valid_and_needs_the_token() {
    let conf = root().join("deploy/nats/nats-server.conf");
    let check = |token: Option<&str>| {
        let mut cmd = Command::new("nats-server");
        cmd.arg("-t")
            .arg("-c")
            .arg(&conf)
            .env_remove("HX_NATS_TOKEN");
        if let Some(t) = token {
            cmd.env("HX_NATS_TOKEN", t);
        }
        cmd.output()
            .expect("nats-server is installed (scripts/test installs it)")
    };
    let ok = check(Some("s3cret"));
    assert!(
        ok.status.success(),
        "nats-server -t: {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let without = check(None);
    assert!(!without.status.success());
    assert!(String::from_utf8_lossy(&without.stderr).contains("HX_NATS_TOKEN"));
}

#[test]
fn files_the_kit_mounts_or_copies_exist() {
    let compose = yaml_documents(&root().join("deploy/compose/compose.yaml")).remove(0);
    for svc in compose["services"].as_object().unwrap().values() {
        for v in strings(&svc["volumes"]) {
            let src = v.split(':').next().unwrap();
            if src.starts_with('.') {
                let p = root().join("deploy/compose").join(src);
                assert!(p.exists(), "compose mounts {src}, which is missing");
            }
        }
    }
    let docker = std::fs::read_to_string(root().join("deploy/Dockerfile")).unwrap();
    for line in docker
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let src = line.split_whitespace().nth(1).unwrap();
        if src != "." {
            assert!(
                root().join(src).exists(),
                "Dockerfile copies {src}, which is missing"
            );
        }
    }
}
