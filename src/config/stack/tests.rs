//! The stack's config: placeholders, ports, names, references, order, `--only`.

use super::super::{Config, PYPROJECT_FILE};
use super::*;
use crate::config::DEFAULT_READY_TIMEOUT_MS;
use std::path::PathBuf;
use std::time::Duration;

const BACKEND_TOML: &str = "command = \"python -m uvicorn app:app --port {port}\"\nport = 8001\n";

/// A project folder with `web/vite.config.ts`, `config` written to `file` in it.
struct Loaded {
    dir: tempfile::TempDir,
    result: Result<Config, String>,
}

impl Loaded {
    fn ok(&self) -> &Config {
        match &self.result {
            Ok(config) => config,
            Err(e) => panic!("config refused: {e}"),
        }
    }

    fn err(&self) -> &str {
        match &self.result {
            Ok(config) => panic!("config accepted: {:?}", config.processes),
            Err(e) => e,
        }
    }

    fn process(&self, name: &str) -> &MemberConfig {
        let config = self.ok();
        config
            .processes
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no {name} in {:?}", config.processes))
    }

    fn root(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

fn load_file(file: &str, text: &str, only: &[&str]) -> Loaded {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("web")).unwrap();
    std::fs::write(dir.path().join("web/vite.config.ts"), "").unwrap();
    let path = dir.path().join(file);
    std::fs::write(&path, text).unwrap();
    let args = RunArgs {
        config: Some(path),
        only: only.iter().map(|s| s.to_string()).collect(),
        ..RunArgs::default()
    };
    let result = Config::load(&args).map_err(|e| e.to_string());
    Loaded { dir, result }
}

/// `BACKEND_TOML` + `stack` as devrun.toml.
fn load(stack: &str, only: &[&str]) -> Loaded {
    load_file("devrun.toml", &format!("{BACKEND_TOML}{stack}"), only)
}

fn assert_at(error: &str, position: &str, words: &[&str]) {
    assert!(
        error.contains(&format!("devrun.toml:{position}: ")),
        "not at {position}: {error}"
    );
    for word in words {
        assert!(error.contains(word), "no {word:?} in: {error}");
    }
}

#[test]
fn placeholders_are_filled_in_every_command_and_env() {
    let l = load(
        "[env]\nWEB = \"http://{host}:{ports.web}\"\n\
         [processes.web]\ncommand = \"npm run dev -- --port {port} --host {host}\"\n\
         port = 5173\nenv = { VITE_API_URL = \"http://127.0.0.1:{ports.backend}\", P = \"{port}\" }\n",
        &[],
    );
    let config = l.ok();
    assert_eq!(
        config.env.get("WEB").map(String::as_str),
        Some("http://127.0.0.1:5173")
    );
    let web = l.process("web");
    assert_eq!(
        web.command,
        [
            "npm",
            "run",
            "dev",
            "--",
            "--port",
            "5173",
            "--host",
            "127.0.0.1"
        ]
    );
    assert_eq!(
        web.env.get("VITE_API_URL").map(String::as_str),
        Some("http://127.0.0.1:8001")
    );
    assert_eq!(web.env.get("P").map(String::as_str), Some("5173"));
    // The backend's command sees the members' ports too; other braces are left alone.
    let l = load_file(
        "devrun.toml",
        "command = [\"x\", \"{port}\", \"{ports.web}\", \"{}\", \"{fd\"]\nport = 8001\n\
         [processes.web]\ncommand = \"w\"\nport = 5173\n",
        &[],
    );
    assert_eq!(l.ok().command, ["x", "8001", "5173", "{}", "{fd"]);
}

/// `{{` and `}}` are a literal `{` and `}`: `{{port}}` is the text `{port}`, in the
/// backend's command (`{{fd}}` too), a member's and an env value.
#[test]
fn doubled_braces_are_literal_braces() {
    let l = load_file(
        "devrun.toml",
        "command = [\"x\", \"{{port}}={port}\", \"{{fd}} {fd}\", \"{{}}\", \"{a}\"]\nport = 8001\n\
         [env]\nT = \"{{host}}\"\n[processes.web]\ncommand = \"w {{port}}\"\n",
        &[],
    );
    assert_eq!(l.ok().command, ["x", "{port}=8001", "{fd} 3", "{}", "{a}"]);
    assert_eq!(l.ok().env.get("T").map(String::as_str), Some("{host}"));
    assert_eq!(l.process("web").command, ["w", "{port}"]);
}

#[test]
fn placeholders_that_cannot_be_filled_are_located() {
    let l = load(
        "[processes.web]\ncommand = \"w\"\nport = 1\n\
         env = { API = \"http://x:{ports.api}\" }\n",
        &[],
    );
    assert_at(
        l.err(),
        "6:25",
        &["{ports.api}", "no process named \"api\"", "backend, web"],
    );
    let l = load(
        "[processes.worker]\ncommand = \"w\"\n[processes.web]\ncommand = [\"w\", \"{ports.worker}\"]\n",
        &[],
    );
    assert_at(l.err(), "6:18", &["{ports.worker}", "worker has no port"]);
    let l = load("[processes.worker]\ncommand = \"w --port {port}\"\n", &[]);
    assert_at(l.err(), "4:21", &["{port}", "worker has no port"]);
    let l = load_file(
        "devrun.toml",
        "command = \"x {ports.nope}\"\nport = 8001\n",
        &[],
    );
    assert_at(l.err(), "1:14", &["`command`", "{ports.nope}"]);
}

#[test]
fn auto_ports_are_free_distinct_and_templated() {
    let l = load(
        "[processes.web]\ncommand = \"w {port}\"\nport = \"auto\"\n\
         [processes.api]\ncommand = \"a\"\nport = \"auto\"\nenv = { WEB = \"{ports.web}\" }\n",
        &[],
    );
    let web = l.process("web").port.expect("web has a port");
    let api = l.process("api").port.expect("api has a port");
    assert!(web != api && web != 8001 && api != 8001, "{web} {api}");
    assert_eq!(l.process("web").command, ["w", &web.to_string()]);
    assert_eq!(
        l.process("api").env.get("WEB").map(String::as_str),
        Some(web.to_string().as_str())
    );
    let l = load(
        "[processes.web]\ncommand = \"w\"\nport = \"sometimes\"\n",
        &[],
    );
    assert_at(l.err(), "5:8", &["[processes.web] port", "\"auto\""]);
    let l = load("[processes.web]\ncommand = \"w\"\nport = 70000\n", &[]);
    assert_at(l.err(), "5:8", &["1-65535"]);
}

#[test]
fn duplicate_ports_are_refused() {
    let l = load("[processes.web]\ncommand = \"w\"\nport = 8001\n", &[]);
    assert_at(l.err(), "5:8", &["port 8001 is also backend's port"]);
    let l = load(
        "[processes.web]\ncommand = \"w\"\nport = 5173\n\
         [processes.docs]\ncommand = \"d\"\nport = 5173\n",
        &[],
    );
    assert_at(
        l.err(),
        "8:8",
        &["[processes.docs] port", "also web's port"],
    );
}

#[test]
fn a_cycle_in_after_is_spelled_and_located() {
    let l = load(
        "[processes.web]\ncommand = \"w\"\nafter = [\"backend\", \"api\"]\n\
         [processes.api]\ncommand = \"a\"\nafter = [\"web\"]\n",
        &[],
    );
    assert_at(l.err(), "8:10", &["cycle: web → api → web"]);
    let l = load("[processes.web]\ncommand = \"w\"\nafter = [\"web\"]\n", &[]);
    assert_at(l.err(), "5:10", &["cycle: web → web"]);
    let l = load(
        "[processes.a]\ncommand = \"a\"\nafter = [\"b\"]\n\
         [processes.b]\ncommand = \"b\"\nafter = [\"c\"]\n\
         [processes.c]\ncommand = \"c\"\nafter = [\"b\"]\n",
        &[],
    );
    assert_at(l.err(), "11:10", &["cycle: b → c → b"]);
}

#[test]
fn unknown_names_in_after_and_restart_with_are_located() {
    let l = load(
        "[processes.web]\ncommand = \"w\"\nafter = [\"backend\", \"api\"]\n",
        &[],
    );
    assert_at(
        l.err(),
        "5:21",
        &[
            "[processes.web] after",
            "no process named \"api\" (known: backend, web)",
        ],
    );
    let l = load(
        "[processes.web]\ncommand = \"w\"\nrestart_with = [\"bakend\"]\n",
        &[],
    );
    assert_at(l.err(), "5:17", &["restart_with", "\"bakend\""]);
    let l = load(
        "[processes.web]\ncommand = \"w\"\nrestart_with = [\"web\"]\n",
        &[],
    );
    assert_at(l.err(), "5:17", &["cannot name itself"]);
}

#[test]
fn members_start_after_those_they_name_else_in_file_order() {
    let l = load(
        "[processes.e2e]\ncommand = \"e\"\nafter = [\"web\"]\n\
         [processes.worker]\ncommand = \"k\"\n\
         [processes.web]\ncommand = \"w\"\nafter = [\"backend\"]\n",
        &[],
    );
    let order: Vec<&str> = l.ok().processes.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(order, ["worker", "web", "e2e"]);
    assert!(l.ok().run_backend);
    assert_eq!(l.process("e2e").after, ["web"]);
}

#[test]
fn only_keeps_the_named_members_and_drops_references_to_the_rest() {
    let stack = "[processes.web]\ncommand = \"w\"\nafter = [\"backend\", \"api\"]\n\
                 restart_with = [\"api\"]\nenv = { API = \"{ports.backend}\" }\n\
                 [processes.api]\ncommand = \"a\"\n";
    let l = load(stack, &["web"]);
    let names: Vec<&str> = l.ok().processes.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["web"]);
    assert!(!l.ok().run_backend);
    let web = l.process("web");
    assert!(
        web.after.is_empty() && web.restart_with.is_empty(),
        "{web:?}"
    );
    // The backend's port is still what {ports.backend} means, run or not.
    assert_eq!(web.env.get("API").map(String::as_str), Some("8001"));

    let l = load(stack, &["backend", "web"]);
    assert!(l.ok().run_backend);
    assert_eq!(l.process("web").after, ["backend"]);
    let l = load(stack, &["backend"]);
    assert!(l.ok().run_backend && l.ok().processes.is_empty());

    let l = load(stack, &["wbe"]);
    let e = l.err();
    assert!(
        e.starts_with("--only wbe: no process named \"wbe\" (known: backend, web, api)"),
        "{e}"
    );
    let l = load("", &["web"]);
    assert!(l.err().contains("(known: backend)"), "{}", l.err());
    // A member left out is checked all the same.
    let l = load(
        &format!("{stack}[processes.docs]\ncommand = \"d\"\ncwd = \"nope\"\n"),
        &["web"],
    );
    assert!(l.err().contains("[processes.docs] cwd"), "{}", l.err());
}

#[test]
fn defaults_for_cwd_ready_restart_and_watch() {
    let l = load(
        "[processes.worker]\ncommand = [\"python\", \"-m\", \"app.worker\"]\n",
        &[],
    );
    let worker = l.process("worker");
    assert_eq!(worker.cwd, l.root());
    assert_eq!(worker.port, None);
    assert_eq!(worker.ready.http, None);
    assert_eq!(
        worker.ready.timeout,
        Duration::from_millis(DEFAULT_READY_TIMEOUT_MS)
    );
    assert_eq!(worker.restart, RestartPolicy::Never);
    assert_eq!(worker.watch, ProcessWatch::None);
    assert!(worker.after.is_empty() && worker.restart_with.is_empty());

    let l = load(
        "[processes.web]\ncommand = \"w\"\ncwd = \"web\"\nport = 5173\n\
         ready = { http = \"/\", timeout_ms = 60000 }\nrestart = \"on-failure\"\n",
        &[],
    );
    let web = l.process("web");
    assert_eq!(web.cwd, l.root().join("web"));
    assert_eq!(web.ready.http.as_deref(), Some("/"));
    assert_eq!(web.ready.timeout, Duration::from_secs(60));
    assert_eq!(web.restart, RestartPolicy::OnFailure);
}

#[test]
fn bad_member_keys_are_located() {
    let cases = [
        ("cwd = \"nope\"\n", "5:7", "nope is not a folder"),
        (
            "restart = \"always\"\n",
            "5:11",
            "\"never\" or \"on-failure\"",
        ),
        ("ready = { http = \"/\" }\n", "5:18", "needs a port"),
        ("port = 1\nready = { http = \"x\" }\n", "6:18", "ready.http"),
        ("colour = \"red\"\n", "5:1", "unknown field `colour`"),
    ];
    for (key, position, words) in cases {
        let l = load(&format!("[processes.web]\ncommand = \"w\"\n{key}"), &[]);
        assert_at(l.err(), position, &[words]);
    }
    let l = load("[processes.web]\ncwd = \"web\"\n", &[]);
    assert_at(l.err(), "3:12", &["[processes.web] has no `command`"]);
    let l = load("[processes.backend]\ncommand = \"w\"\n", &[]);
    assert_at(l.err(), "3:12", &["top-level command"]);
    let l = load("[processes.Web]\ncommand = \"w\"\n", &[]);
    assert_at(l.err(), "3:12", &["lowercase"]);
    let l = load(
        "[processes.web]\ncommand = \"w\"\nenv = { \"A=B\" = \"1\" }\n",
        &[],
    );
    assert_at(l.err(), "5:9", &["[processes.web] env \"A=B\""]);
}

#[test]
fn watch_is_backend_or_paths_that_exist() {
    let l = load(
        "[processes.worker]\ncommand = \"k\"\nwatch = \"backend\"\n",
        &[],
    );
    assert_eq!(l.process("worker").watch, ProcessWatch::Backend);
    let l = load(
        "[processes.web]\ncommand = \"w\"\nwatch = [\"web/vite.config.ts\", \"web\"]\n",
        &[],
    );
    assert_eq!(
        l.process("web").watch,
        ProcessWatch::Paths(vec![
            l.root().join("web/vite.config.ts"),
            l.root().join("web")
        ])
    );
    let l = load(
        "[processes.web]\ncommand = \"w\"\nwatch = [\"web\", \"web/vite.config.js\"]\n",
        &[],
    );
    assert_at(l.err(), "5:17", &["vite.config.js does not exist"]);
    let l = load("[processes.web]\ncommand = \"w\"\nwatch = \"web\"\n", &[]);
    assert_at(l.err(), "5:9", &["\"backend\" or a list"]);
}

#[test]
fn pyproject_members_are_read() {
    let l = load_file(
        PYPROJECT_FILE,
        &format!(
            "[project]\nname = \"x\"\n[tool.devrun]\n{BACKEND_TOML}\
             [tool.devrun.processes.web]\ncommand = \"w {{ports.backend}}\"\nport = 5173\n"
        ),
        &[],
    );
    assert_eq!(l.process("web").command, ["w", "8001"]);
    assert_eq!(l.process("web").port, Some(5173));
}
