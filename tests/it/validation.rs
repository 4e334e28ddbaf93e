//! Small reliability findings, each a clear error instead of a silent surprise: durations that
//! overflowed, an unresolvable host taken for a held port, closing connections taken for a
//! holder, a backend listening on the other loopback, a 3 MB command echoed back, bad `[env]`
//! names.

use crate::harness::*;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};

/// Runs devrun to completion in a fresh testapp project: (exit code, stderr, project).
fn run<const N: usize>(config: &str, args: [&str; N]) -> (i32, String, Project) {
    let mut project = Project::testapp("normal.py")
        .config(config)
        .args(["--once"])
        .args(args)
        .start();
    let code = project.wait_exit(WAIT);
    (code, project.stderr(), project)
}

const CONFIG: &str = r#"
command = ["$PYTHON", "normal.py"]
port = $PORT
"#;

#[test]
fn a_duration_flag_that_would_overflow_is_a_usage_error() {
    // 18446744073709552 s in ms wraps around u64 to 384 ms.
    let (code, stderr, project) = run(CONFIG, ["--stop-timeout", "18446744073709552s"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--stop-timeout"), "{stderr}");
    assert!(stderr.contains("86400000 ms (24 h)"), "{stderr}");
    assert!(project.starts().is_empty());
}

#[test]
fn a_duration_key_above_its_limit_is_located() {
    let config = format!("{CONFIG}[ready]\ntimeout_ms = 18446744073709552\n");
    let (code, stderr, project) = run(&config, []);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("devrun.toml:4:14: [ready] timeout_ms = 18446744073709552 is above the limit of 86400000 ms (24 h)"),
        "{stderr}"
    );
    assert!(project.starts().is_empty());
}

#[test]
fn a_debounce_above_the_settle_ceiling_is_refused() {
    let config = format!("{CONFIG}[watch]\ndebounce_ms = 5000\n");
    let (code, stderr, _) = run(&config, []);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("devrun.toml:4:15:"), "{stderr}");
    assert!(stderr.contains("2000 ms"), "{stderr}");
    let (code, stderr, _) = run(CONFIG, ["--debounce", "3s"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--debounce"), "{stderr}");
}

#[test]
fn a_host_that_does_not_resolve_is_a_config_error_not_a_held_port() {
    let config = format!("{CONFIG}host = \"no-such-host.invalid\"\n");
    let (code, stderr, project) = run(&config, []);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("devrun.toml:3:8: `host`: host \"no-such-host.invalid\" does not resolve"),
        "{stderr}"
    );
    assert!(project.starts().is_empty());
    let (code, stderr, _) = run(CONFIG, ["--host", "no-such-host.invalid"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--host: host \"no-such-host.invalid\""),
        "{stderr}"
    );
}

#[test]
fn env_names_with_equals_or_empty_are_located() {
    for (line, col) in [("\"A=B\" = \"1\"", 1), ("\"\" = \"1\"", 1)] {
        let config = format!("{CONFIG}[env]\nGOOD = \"x=y\"\n{line}\n");
        let (code, stderr, project) = run(&config, []);
        assert_eq!(code, 2, "{line}: {stderr}");
        assert!(
            stderr.contains(&format!("devrun.toml:5:{col}: [env]")),
            "{line}: {stderr}"
        );
        assert!(stderr.contains("not a valid variable name"), "{stderr}");
        assert!(project.starts().is_empty());
    }
}

#[test]
fn an_argument_list_too_long_is_reported_short() {
    // One 3 MB argument: more than the OS takes (E2BIG).
    let long = "x".repeat(3 << 20);
    let config = format!("command = [\"$PYTHON\", \"-c\", \"{long}\"]\nport = $PORT\n");
    let (code, stderr, project) = run(&config, []);
    assert_eq!(code, 2, "{}", &stderr[..stderr.len().min(2000)]);
    assert!(stderr.len() < 2048, "stderr is {} bytes", stderr.len());
    assert!(stderr.contains("longer than the OS allows"), "{stderr}");
    assert!(stderr.contains("bytes in all"), "{stderr}");
    assert!(project.starts().is_empty());
}

#[test]
fn closing_connections_are_not_a_process_holding_the_port() {
    let project = Project::testapp("normal.py");
    let port = project.port;
    // A listener without SO_REUSEADDR (std sets it, so socket2): once it closes its side of an
    // accepted connection and goes away, the kernel keeps that connection in FIN_WAIT2, owned
    // by no process, and it blocks binding the port.
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let listener =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    listener.bind(&addr.into()).unwrap();
    listener.listen(8).unwrap();
    let client = TcpStream::connect(addr).unwrap();
    let (accepted, _) = listener.accept().unwrap();
    drop(accepted);
    drop(listener);
    assert!(listeners(port).is_empty());

    let mut project = project
        .config(CONFIG)
        .args(["--once", "--port-timeout", "1000"])
        .start();
    let code = project.wait_exit(WAIT);
    let stderr = project.stderr();
    drop(client);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("no process holds it"), "{stderr}");
    assert!(stderr.contains("FIN_WAIT2"), "{stderr}");
    assert!(!stderr.contains("held by another process"), "{stderr}");
    assert!(project.starts().is_empty());
}

#[test]
fn a_backend_listening_on_the_other_loopback_gets_a_hint() {
    assert!(
        std::net::TcpListener::bind("[::1]:0").is_ok(),
        "this test needs IPv6 on loopback"
    );
    let project = Project::testapp("normal.py");
    fs::write(
        project.root.join("v6only.py"),
        "import os, socket\n\
         s = socket.socket(socket.AF_INET6)\n\
         s.bind(('::1', int(os.environ['PORT'])))\n\
         s.listen()\n\
         while True:\n    s.accept()[0].close()\n",
    )
    .unwrap();
    let port = project.port;
    let mut project = project
        .config("command = [\"$PYTHON\", \"v6only.py\"]\nport = $PORT\n")
        .args(["--once", "--ready-timeout", "2000"])
        .start();
    let code = project.wait_exit(WAIT);
    let stderr = project.stderr();
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "nothing accepted a connection on 127.0.0.1:{port}, but the port is listened on at [::1]:{port}"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("host = \"::1\""), "{stderr}");
    project.wait_until("the backend to be gone", WAIT, || {
        listeners(port).is_empty()
    });
}
