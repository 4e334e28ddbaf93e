//! `[stop] fast`: real uvicorn (fixtures/fastapi_app's `app.lifespan:app`) stopped through
//! devrun's bootstrap.
//! Its lifespan shutdown writes a marker into a folder outside the watched tree, and each
//! generation says whether its predecessor's marker was there when it was imported.
//!
//! What tells the fast stop from uvicorn's own: with a request in flight that outlives the stop
//! timeout, the fast stop cancels it at 80 % of the timeout and still runs the lifespan
//! shutdown; stock uvicorn waits for it until devrun kills the group (no shutdown marker).

use crate::harness::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;

/// The fixture under `python -m uvicorn`, with `also` after the config and `--events json`.
fn lifespan_app(also: &str) -> Project {
    let p = Project::new("fastapi_app")
        .python(&fastapi_python())
        .config(&UVICORN_CONFIG.replace("app.main:app", "app.lifespan:app"))
        .config_also(also)
        .args(["--events", "json"]);
    let markers = p.tmp_dir().join("markers");
    std::fs::create_dir_all(&markers).unwrap();
    let markers = markers.display().to_string();
    p.env("FIXTURE_MARKERS", &markers)
}

fn marker(p: &Project, name: &str) -> PathBuf {
    p.tmp_dir().join("markers").join(name)
}

/// GET / as JSON (status 200), once it answers `version` and devrun saw it ready (a save
/// before that would count as the backend's own write: the reload-loop guard).
fn wait_for_body(p: &Project, version: &str) -> Value {
    let served = p.wait_for_version(version, WAIT);
    wait_ready(p, served.generation.unwrap_or(0));
    let (status, body) = p.get("/").expect("GET / did not answer");
    assert_eq!(status, 200);
    serde_json::from_str(&body).unwrap()
}

/// Waits for devrun's `ready` event of `generation`.
fn wait_ready(p: &Project, generation: u64) {
    let ready = || {
        p.events()
            .iter()
            .any(|e| e["event"] == "ready" && e["generation"] == generation)
    };
    p.wait_until("devrun saw the generation ready", WAIT, ready);
}

/// The `stopped` event of `generation`, once devrun said it.
fn stopped(p: &Project, generation: u64) -> Value {
    let found = poll(WAIT, || {
        p.events()
            .into_iter()
            .find(|e| e["event"] == "stopped" && e["generation"] == generation)
    });
    found.unwrap_or_else(|| panic!("no stopped event for generation {generation}"))
}

/// Sends `GET path` (HTTP/1.1, keep-alive) and returns the open connection.
fn send_get(p: &Project, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", p.port)).unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    stream
}

/// Reads one response (headers and a Content-Length body) off a keep-alive connection.
fn read_response(stream: &mut TcpStream) -> (u16, String) {
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "the connection closed before a whole response");
        data.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&data).to_string();
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        let length: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(str::to_string)
            })
            .and_then(|v| v.trim().parse().ok())
            .expect("no content-length");
        if body.len() >= length {
            let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
            return (status, body[..length].to_string());
        }
    }
}

/// The markers the lifespan shutdown wrote, and each next generation saw its predecessor's.
fn lifespan_shutdown_runs_on_every_restart(p: Project) {
    let p = p.start();
    let first = wait_for_body(&p, "v1");
    assert_eq!(first["generation"], 1);
    for (n, version) in ["v2", "v3", "v4"].iter().enumerate() {
        p.write_atomic("app/version.py", &version_py(version));
        let body = wait_for_body(&p, version);
        let previous = n + 1;
        assert_eq!(
            body["previous_shutdown"],
            true,
            "generation {} started before generation {previous}'s lifespan shutdown ran",
            previous + 1
        );
        let written = std::fs::read_to_string(marker(&p, &format!("shutdown-{previous}")));
        assert!(
            written.is_ok(),
            "no shutdown marker of generation {previous}"
        );
        assert_eq!(stopped(&p, previous as u64)["killed"], false);
    }
    p.assert_every_start_was_alone();
}

#[test]
fn the_lifespan_shutdown_runs_before_each_next_generation_cold() {
    lifespan_shutdown_runs_on_every_restart(lifespan_app(""));
}

#[test]
fn the_lifespan_shutdown_runs_before_each_next_generation_preloaded() {
    lifespan_shutdown_runs_on_every_restart(lifespan_app("").args(["--preload"]));
}

#[test]
fn a_request_in_flight_completes_and_the_next_request_gets_the_new_code() {
    let p = lifespan_app("").start();
    let v1 = p.wait_for_version("v1", WAIT);
    wait_ready(&p, 1);
    let port = p.port;
    let request = std::thread::spawn(move || http_get(port, "/slow?seconds=1.5"));
    p.wait_until("the slow request began", WAIT, || {
        marker(&p, "slow-1").exists()
    });
    p.write_atomic("app/version.py", &version_py("v2"));
    let (status, body) = request
        .join()
        .unwrap()
        .expect("the request in flight got no answer");
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        body["version"], "v1",
        "the request in flight is the old code's"
    );
    let v2 = p.wait_for_version("v2", WAIT);
    assert!(!v1.alive());
    assert_eq!(v2.generation, Some(2));
    assert_eq!(stopped(&p, 1)["killed"], false);
    assert!(marker(&p, "shutdown-1").exists());
    p.assert_every_start_was_alone();
}

#[test]
fn an_idle_keep_alive_connection_is_closed_by_the_server_at_the_stop() {
    let p = lifespan_app("").start();
    let v1 = p.wait_for_version("v1", WAIT);
    wait_ready(&p, 1);
    let mut browser = send_get(&p, "/");
    let (status, _) = read_response(&mut browser);
    assert_eq!(status, 200);
    // The connection stays open, idle, as a browser's does.
    p.write_atomic("app/version.py", &version_py("v2"));
    let v2 = p.wait_for_version("v2", WAIT);
    let mut rest = [0u8; 64];
    let closed = match browser.read(&mut rest) {
        Ok(n) => n == 0,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    };
    assert!(closed, "the idle keep-alive connection is still open");
    assert!(!v1.alive());
    assert_eq!(v2.generation, Some(2));
    assert_eq!(stopped(&p, 1)["killed"], false);
    assert!(marker(&p, "shutdown-1").exists());
}

/// Starts `p` with a stop timeout of 4 s, puts a request that outlives it in flight, saves, and
/// returns (whether generation 1's lifespan shutdown ran, whether it was killed).
fn stop_with_a_request_outliving_the_timeout(p: Project) -> (Project, bool, bool) {
    let p = p.start();
    p.wait_for_version("v1", WAIT);
    wait_ready(&p, 1);
    let _request = send_get(&p, "/slow?seconds=60");
    p.wait_until("the slow request began", WAIT, || {
        marker(&p, "slow-1").exists()
    });
    p.write_atomic("app/version.py", &version_py("v2"));
    p.wait_for_version("v2", WAIT);
    let killed = stopped(&p, 1)["killed"] == true;
    let shutdown = marker(&p, "shutdown-1").exists();
    (p, shutdown, killed)
}

#[test]
fn the_fast_stop_bounds_a_request_in_flight_and_still_runs_the_lifespan_shutdown() {
    let (_p, shutdown, killed) =
        stop_with_a_request_outliving_the_timeout(lifespan_app("[stop]\ntimeout_ms = 4000\n"));
    assert!(shutdown, "the lifespan shutdown did not run");
    assert!(!killed, "the generation was killed");
}

#[test]
fn fast_false_keeps_uvicorns_own_stop() {
    let (p, shutdown, killed) = stop_with_a_request_outliving_the_timeout(lifespan_app(
        "[stop]\ntimeout_ms = 4000\nfast = false\n",
    ));
    assert!(
        killed,
        "stock uvicorn waits for the request: devrun kills it"
    );
    assert!(
        !shutdown,
        "stock uvicorn never got to its lifespan shutdown"
    );
    assert!(!p.stderr().contains("fast stop off"), "{}", p.stderr());
}

#[test]
fn an_unknown_uvicorn_version_falls_back_to_uvicorns_own_stop_said_once() {
    // A uvicorn that calls itself 0.1.0: sitecustomize, outside the project, rewrites it.
    let p = lifespan_app("[stop]\ntimeout_ms = 4000\n");
    let shim = p.tmp_dir().join("shim");
    std::fs::create_dir_all(&shim).unwrap();
    std::fs::write(
        shim.join("sitecustomize.py"),
        "import uvicorn\nuvicorn.__version__ = '0.1.0'\n",
    )
    .unwrap();
    let p = p.env("PYTHONPATH", &shim.display().to_string());
    let (p, shutdown, killed) = stop_with_a_request_outliving_the_timeout(p);
    assert!(
        killed,
        "the stock stop waits for the request: devrun kills it"
    );
    assert!(
        !shutdown,
        "the stock stop never got to its lifespan shutdown"
    );
    p.write_atomic("app/version.py", &version_py("v3"));
    p.wait_for_version("v3", WAIT);
    let said: Vec<Value> = p
        .events()
        .into_iter()
        .filter(|e| e["kind"] == "fast_stop_off")
        .collect();
    assert_eq!(said.len(), 1, "{said:?}");
    let message = said[0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("uvicorn 0.1.0"), "{message}");
}

#[test]
fn a_storm_of_200_files_under_the_fast_stop_is_one_restart() {
    let p = lifespan_app("").start();
    p.wait_for_version("v1", WAIT);
    wait_ready(&p, 1);
    for folder in 0..10 {
        let dir = p.root.join(format!("app/storm{folder}"));
        std::fs::create_dir_all(&dir).unwrap();
        for file in 0..20 {
            std::fs::write(dir.join(format!("m{file}.py")), format!("N = {file}\n")).unwrap();
        }
    }
    p.wait_for_starts(2, WAIT);
    std::thread::sleep(QUIET);
    let starts = p.starts();
    assert_eq!(
        starts.len(),
        2,
        "one storm, more than one restart: {starts:#?}"
    );
    let served = poll(WAIT, || p.served().filter(|s| s.pid == starts[1].pid));
    assert!(served.is_some(), "generation 2 never served");
    p.assert_every_start_was_alone();
}
