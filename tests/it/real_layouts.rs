//! `devrun init` on projects shaped like real ones (issue 21): the Flask tutorial's app factory
//! with Jinja templates, a full-stack layout (`backend/` + `frontend/`, the venv at the root).
//! Each test runs init as a new user would, then runs what it wrote against the real framework.

use crate::harness::*;
use crate::init::{env_port, init_detects, link_test_venv};

#[test]
fn flask_factory_app_runs_and_a_template_edit_is_served_fresh() {
    let p = Project::new("flaskr");
    link_test_venv(&p);
    env_port(&p);

    let config = init_detects(&p, "Flask app factory create_app() in flaskr");
    assert!(
        config.contains("\"flask\", \"--app\", \"flaskr\", \"run\"")
            && config.contains("\"--debug\", \"--no-reload\"")
            && config.contains("\"**/*.html\""),
        "{config}"
    );

    let mut p = p.args(["--color", "never"]).start();
    let first = wait_for_body(&p, "/", "template v1");
    assert!(first.contains("The first post."), "{first}");
    assert!(wait_for_body(&p, "/hello", "Hello, World!").contains("pid="));

    // A Jinja template edit: the next answer renders the new template, never the cached one.
    let template = "flaskr/templates/blog/index.html";
    let text = std::fs::read_to_string(p.root.join(template)).unwrap();
    p.write_atomic(template, &text.replace("template v1", "template v2"));
    // The edit is watched ([watch] includes **/*.html) and, under the default `reload_only`
    // (templates/), served by the running generation once it dropped Jinja's cache.
    let second = wait_for_body(&p, "/", "template v2");
    assert!(!second.contains("template v1"), "{second}");
    p.wait_until("the template reload said", WAIT, || {
        p.stderr().contains("templates reloaded, no restart")
    });
    assert_eq!(pid_in(&second), pid_in(&first), "{}", p.stderr());

    // The ready line gives the address a browser (and CORS) uses.
    assert!(
        p.stderr()
            .contains(&format!(" ms on http://localhost:{}\n", p.port)),
        "{}",
        p.stderr()
    );
    // No warning about Flask's own reloader: init's command has none.
    assert!(!p.stderr().contains("reloader"), "{}", p.stderr());
    p.signal(SIGINT);
    assert_eq!(p.wait_exit(WAIT), 0, "{}", p.stderr());
    p.assert_nothing_left();
}

/// PATH with the fixture's stand-in `bun` first (or only an empty folder: no bun anywhere).
fn path_with_bun(p: &Project, bun: bool) -> String {
    let empty = p.tmp_dir().join("empty-bin");
    std::fs::create_dir_all(&empty).unwrap();
    match bun {
        true => format!(
            "{}:{}",
            p.root.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        ),
        false => empty.display().to_string(),
    }
}

/// `devrun init` in `folder` of the project with `PATH`: the config it wrote.
fn init_in(p: &Project, folder: &str, path: &str) -> String {
    let dir = p.root.join(folder);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_devrun"))
        .args(["init", "--force"])
        .env("NO_COLOR", "1")
        .current_dir(&dir)
        .env("PATH", path)
        .env("DEVRUN_TEST_TAG", "init-no-processes")
        .output()
        .expect("devrun init");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let config = std::fs::read_to_string(dir.join("devrun.toml")).expect("devrun.toml");
    format!("{stderr}\n{config}")
}

/// The full-stack fixture with the test venv at the root and `PORT` (a free port) in `.env`.
fn fullstack() -> Project {
    let p = Project::new("fullstack");
    link_test_venv(&p);
    let env = std::fs::read_to_string(p.root.join(".env")).unwrap();
    p.write_inplace(".env", &format!("{env}PORT={}\n", p.port));
    p
}

/// Run in parallel with other stacks: the frontend's fixed 5173 becomes a free port per run.
fn auto_frontend_port(config_path: &std::path::Path) {
    let config = std::fs::read_to_string(config_path).unwrap();
    assert!(config.contains("\nport = 5173\n"), "{config}");
    std::fs::write(
        config_path,
        config.replace("\nport = 5173\n", "\nport = \"auto\"\n"),
    )
    .unwrap();
}

fn assert_has(config: &str, lines: &[&str]) {
    for line in lines {
        assert!(
            config.lines().any(|l| l == *line),
            "no line {line:?} in:\n{config}"
        );
    }
}

#[test]
fn fullstack_init_at_the_root_runs_the_backend_in_its_folder_and_the_bun_frontend() {
    let p = fullstack();
    std::fs::create_dir_all(p.root.join("frontend/node_modules")).unwrap();
    let path = path_with_bun(&p, true);
    let written = init_in(&p, "", &path);
    assert!(
        written.contains("FastAPI app app.main:app in backend, env_file .env; a dev script in frontend/package.json run with bun ([processes.web])"),
        "{written}"
    );
    assert_has(
        &written,
        &[
            "command = [\"../.venv/bin/python\", \"-m\", \"uvicorn\", \"app.main:app\", \"--host\", \"127.0.0.1\", \"--port\", \"{port}\"]",
            "cwd = \"backend\"",
            "env_file = \".env\"",
            &format!("port = {}", p.port),
            "paths = [\"backend\"]",
            "[processes.web]",
            "command = \"bun run dev --port {port} --strictPort\"",
            "cwd = \"frontend\"",
            "env = { VITE_API_URL = \"{url.backend}\" }",
        ],
    );
    auto_frontend_port(&p.root.join("devrun.toml"));

    let mut p = p.env("PATH", &path).args(["--color", "never"]).start();
    // The backend runs from backend/ (it read ../.env itself) with the env file's variables.
    let body = wait_for_body(&p, "/", "Full Stack FastAPI Project");
    let backend: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        backend["cwd"].as_str().unwrap().ends_with("/backend"),
        "{backend}"
    );
    assert_eq!(backend["env_project"], "Full Stack FastAPI Project");
    // The stand-in bun's dev server, in frontend/, told the backend's address.
    let (_, report) = status_report(&p);
    let web_port = status_member(&report, "web")["port"].as_u64().unwrap() as u16;
    let body = poll(WAIT, || http_get(web_port, "/").map(|(_, body)| body))
        .unwrap_or_else(|| panic!("the frontend does not answer:\n{}", p.stderr()));
    let web: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(web["cwd"].as_str().unwrap().ends_with("/frontend"), "{web}");
    assert_eq!(web["api_url"], format!("http://localhost:{}", p.port));

    p.signal(SIGINT);
    assert_eq!(p.wait_exit(WAIT), 0, "{}", p.stderr());
    p.assert_nothing_left();
}

#[test]
fn fullstack_init_in_backend_finds_the_venv_env_and_frontend_above_and_beside() {
    let p = fullstack();
    // No bun anywhere: the frontend block is written commented out, saying so.
    let written = init_in(&p, "backend", &path_with_bun(&p, false));
    assert!(
        written.contains("([processes.web] commented out: bun is not on PATH)")
            && written.contains("# Commented out: bun is not on PATH; then uncomment it.")
            && written.contains("# [processes.web]"),
        "{written}"
    );
    // bun, but no node_modules: still commented out, with the command that installs them.
    let path = path_with_bun(&p, true);
    let written = init_in(&p, "backend", &path);
    assert!(
        written.contains("its packages are not installed: run `bun install` in ../frontend"),
        "{written}"
    );
    std::fs::create_dir_all(p.root.join("frontend/node_modules")).unwrap();
    let written = init_in(&p, "backend", &path);
    assert_has(
        &written,
        &[
            "command = [\"../.venv/bin/python\", \"-m\", \"uvicorn\", \"app.main:app\", \"--host\", \"127.0.0.1\", \"--port\", \"{port}\"]",
            "env_file = \"../.env\"",
            "paths = [\".\"]",
            "[processes.web]",
            "cwd = \"../frontend\"",
        ],
    );
    assert!(!written.contains("\ncwd = \"backend\""), "{written}");
    auto_frontend_port(&p.root.join("backend/devrun.toml"));

    let mut p = p
        .env("PATH", &path)
        .args([
            "--config",
            "backend/devrun.toml",
            "--once",
            "--color",
            "never",
        ])
        .start();
    assert_eq!(p.wait_exit(WAIT), 0, "{}", p.stderr());
    assert!(
        p.stderr()
            .contains("--once passed: backend, web got ready, stopped, ports released"),
        "{}",
        p.stderr()
    );
    p.assert_nothing_left();
}
