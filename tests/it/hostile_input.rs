//! Issue 20 points 5, 6 and 9: input another local user (or an accident) can shape: the env
//! file (never a value printed; a named pipe, a device, a huge file or an expansion bomb is a
//! clear error, never a hang or an abort), a huge typed line, `[env]` and `{port}` escapes.

use crate::harness::*;
use std::fs;

const ENV_CONFIG: &str = "env_file = \".env\"\ncommand = [\"$PYTHON\", \"normal.py\"]\n\
    port = $PORT\n[watch]\ndebounce_ms = 50\n";

fn mkfifo(path: &std::path::Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success(), "mkfifo failed");
}

/// A `.env` symlinked to a file elsewhere with an unterminated secret: exit 2 naming the
/// file, the 1-based line and the key, never the value; the same at runtime keeps the old
/// values and keeps serving.
#[test]
fn an_env_file_syntax_error_names_line_and_key_never_the_value() {
    let p = Project::testapp("normal.py").config(ENV_CONFIG);
    let target = p.tmp_dir().join("elsewhere.env");
    fs::write(
        &target,
        "APP_ENV=one\nMULTI=\"a\nb\"\n# comment\nDATABASE_URL=\"postgres://app:SECRET@db/app\n",
    )
    .unwrap();
    std::os::unix::fs::symlink(&target, p.root.join(".env")).unwrap();
    let config = "env_file = \".env\"\ncommand = [\"true\"]\nport = 1\n";
    fs::write(p.root.join("devrun.toml"), config).unwrap();
    let (code, out) = p.run_another(["--once"], WAIT);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains(".env:5: DATABASE_URL: a double quote is never closed"),
        "{out}"
    );
    assert!(!out.contains("SECRET"), "a value was printed:\n{out}");

    fs::write(&target, "APP_ENV=one\n").unwrap();
    let p = p.start();
    assert_eq!(
        p.wait_for_starts(1, WAIT)[0].app_env.as_deref(),
        Some("one")
    );
    fs::write(&target, "APP_ENV=two\nTOKEN=SECRET and more\n").unwrap();
    p.write_atomic("version.py", &version_py("v2"));
    let starts = p.wait_for_starts(2, WAIT);
    assert_eq!(starts[1].app_env.as_deref(), Some("one"), "old values kept");
    p.wait_for_version("v2", WAIT);
    assert!(
        p.stderr().contains(".env:2: TOKEN: a space inside"),
        "{}",
        p.stderr()
    );
    assert!(!p.stderr().contains("SECRET"), "{}", p.stderr());
}

/// A named pipe with no writer, `/dev/zero` and an expansion bomb at start: exit 2 at once
/// naming the file, never a hang, an unbounded read or an abort.
#[test]
fn an_env_file_that_is_a_pipe_a_device_or_a_bomb_is_refused_at_start() {
    let p = Project::testapp("normal.py").config(ENV_CONFIG);
    fs::write(p.root.join("devrun.toml"), "").unwrap();
    let env = p.root.join(".env");
    mkfifo(&env);
    let (code, out) = p.run_another(
        ["--once", "--port", "1", "--env-file", ".env", "--", "true"],
        WAIT,
    );
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("env file .env: not a regular file"), "{out}");

    fs::remove_file(&env).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &env).unwrap();
    let (code, out) = p.run_another(
        ["--once", "--port", "1", "--env-file", ".env", "--", "true"],
        WAIT,
    );
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("not a regular file"), "{out}");

    fs::remove_file(&env).unwrap();
    let bomb = format!("A=abcdefgh\n{}", "A=${A}${A}\n".repeat(31));
    fs::write(&env, bomb).unwrap();
    let (code, out) = p.run_another(
        ["--once", "--port", "1", "--env-file", ".env", "--", "true"],
        WAIT,
    );
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains(": A: `${VAR}` expansion would make the values larger than 1 MiB"),
        "{out}"
    );
}

/// `.env` replaced by a named pipe while running: the next restart says why, keeps the old
/// values, and devrun goes on; Ctrl-C still ends it cleanly.
#[test]
fn an_env_file_replaced_by_a_pipe_keeps_the_old_values_and_ctrl_c_works() {
    let p = Project::testapp("normal.py").config(ENV_CONFIG);
    fs::write(p.root.join(".env"), "APP_ENV=one\n").unwrap();
    let mut p = p.start();
    p.wait_for_version("v1", WAIT);
    fs::remove_file(p.root.join(".env")).unwrap();
    mkfifo(&p.root.join(".env"));
    p.write_atomic("version.py", &version_py("v2"));
    let served = p.wait_for_version("v2", WAIT);
    assert_eq!(served.generation, Some(2));
    assert_eq!(p.starts()[1].app_env.as_deref(), Some("one"));
    assert!(
        p.stderr().contains("env file .env: not a regular file"),
        "{}",
        p.stderr()
    );
    p.signal(libc::SIGINT);
    assert_eq!(p.wait_exit(WAIT), 0);
    assert!(!served.alive());
    p.assert_nothing_left();
}

/// A field of `/proc/PID/status` in kB (`VmRSS`, `VmHWM`).
fn status_kb(pid: i32, field: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    numbers_in(line)[0] as u64
}

/// A 20 MB line pasted into devrun's terminal while the backend does not read its stdin:
/// devrun's memory stays bounded (it reads and queues pieces, drops what waits too long, says
/// so once), and `rs` still works afterwards.
#[test]
fn a_20_mb_typed_line_is_never_held_whole() {
    let mut pty = crate::typed::Pty::open();
    pty.raw();
    let project = pty.start(Project::testapp("normal.py"));
    let first = project.wait_for_version("v1", WAIT);
    let before = status_kb(project.pid(), "VmRSS:");
    let mut line = vec![b'x'; 20 << 20];
    line.push(b'\n');
    pty.type_bytes(&line);
    project.wait_until("the note", WAIT, || {
        project
            .stderr()
            .contains("typed line dropped: the backend is not reading its stdin")
    });
    let peak = status_kb(project.pid(), "VmHWM:");
    assert!(
        peak < before + 8 * 1024,
        "devrun grew from {before} kB to a peak of {peak} kB"
    );
    assert_eq!(
        project.stderr().matches("typed line dropped").count(),
        1,
        "{}",
        project.stderr()
    );
    pty.type_bytes(b"rs\n");
    let second = project.wait_for_starts(2, WAIT)[1].clone();
    assert_eq!(second.generation, Some(2));
    assert!(!first.alive());
}

/// A NUL byte no process can be given is a configuration error with file, line and column
/// (or the env file's line and key), exit 2 before anything starts, never a failed spawn.
#[test]
fn a_nul_byte_in_a_command_or_the_env_file_is_caught_at_load() {
    let p = Project::empty();
    let cases = [
        "command = [\"true\", \"a\\u0000b\"]\nport = 1\n",
        "port = 1\ncommand = \"true a\\u0000b\"\n",
        "command = [\"true\"]\nport = 1\n[processes.w]\ncommand = [\"true\", \"\\u0000\"]\n",
    ];
    for (config, at) in cases.iter().zip([
        "devrun.toml:1:11:",
        "devrun.toml:2:11:",
        "devrun.toml:4:11:",
    ]) {
        fs::write(p.root.join("devrun.toml"), config).unwrap();
        let (code, out) = p.run_another(["--once"], WAIT);
        assert_eq!(code, 2, "{config}: {out}");
        assert!(out.contains(at), "{config}: {out}");
        assert!(out.contains("contains a NUL byte"), "{config}: {out}");
    }
    fs::write(
        p.root.join("devrun.toml"),
        "command = [\"true\"]\nport = 1\nenv_file = \".env\"\n",
    )
    .unwrap();
    fs::write(p.root.join(".env"), "A=1\nB=ok\0z\n").unwrap();
    let (code, out) = p.run_another(["--once"], WAIT);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains(".env:2: B: the value contains a NUL byte"),
        "{out}"
    );
}

/// `{{port}}` reaches the backend as the text `{port}`, beside a filled `{port}`.
#[test]
fn doubled_braces_pass_a_literal_placeholder_to_the_backend() {
    let p = Project::testapp("normal.py")
        .config("command = [\"$PYTHON\", \"normal.py\", \"{{port}}\", \"{port}\"]\nport = $PORT\n")
        .start();
    let served = p.wait_for_version("v1", WAIT);
    let cmdline = fs::read(format!("/proc/{}/cmdline", served.pid)).unwrap();
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    assert_eq!(args[2], b"{port}");
    assert_eq!(args[3], p.port.to_string().as_bytes());
}
