//! Config loading: every key, flag and error location.

use super::*;

fn load(text: &str, args: &RunArgs) -> Result<Config, ConfigError> {
    let inputs = inputs(text)?;
    // Watch paths must exist: point them at this crate's folder.
    let mut args = args.clone();
    if args.watch.is_empty() {
        args.watch = vec![PathBuf::from(env!("CARGO_MANIFEST_DIR"))];
    }
    Config::derive(&inputs, &args)
}

/// `text` read as /project/devrun.toml.
fn inputs(text: &str) -> Result<Inputs, ConfigError> {
    let source = Source {
        path: PathBuf::from("/project/devrun.toml"),
        display: "devrun.toml".into(),
        text: text.into(),
    };
    let file: FileConfig = toml::from_str(text)
        .map_err(|e| source.error(e.span().map(|s| s.start), e.message().to_string()))?;
    Ok(Inputs {
        source: Some(source),
        file,
        cwd: PathBuf::from("/"),
    })
}

/// Issue 22: `socket = "inherit"` takes any command on Unix (fd 3), and on Windows only a
/// Python launch that runs uvicorn (devrun's bootstrap hands the inherited handle to uvicorn's
/// server), `[stop] fast` or not; anything else there is an error at the key saying what to do.
#[test]
fn inherit_socket_on_windows_needs_a_python_launch_running_uvicorn() {
    let root = Path::new("/");
    let read = |command: &str| {
        let words: Vec<String> = command.split_whitespace().map(str::to_string).collect();
        FastStop::detect(&words, root, false)
    };
    let uvicorn = read("python -m uvicorn app:app --fd {fd}");
    let plain = read("python -m http.server");
    let other = read("node server.js");
    assert!(uvicorn
        .as_ref()
        .is_some_and(|f| f.runs_uvicorn && !f.patches_uvicorn()));
    for launch in [&uvicorn, &plain, &other] {
        assert_eq!(
            inherit_refusal(false, launch.as_ref()),
            None,
            "Unix: {launch:?}"
        );
    }
    assert_eq!(inherit_refusal(true, uvicorn.as_ref()), None);
    let why = inherit_refusal(true, plain.as_ref()).expect("refused");
    assert!(why.contains("does not run uvicorn"), "{why}");
    assert!(
        why.contains("python -m uvicorn") && why.contains("socket = \"none\""),
        "{why}"
    );
    let why = inherit_refusal(true, other.as_ref()).expect("refused");
    assert!(why.contains("no Python launch"), "{why}");
    let text = "command = \"node server.js\"\nport = 1\n[server]\nsocket = \"inherit\"\n";
    let inputs = inputs(text).unwrap();
    let e = check_inherit_socket(&inputs, true, other.as_ref(), true).unwrap_err();
    let e = e.to_string();
    assert!(e.starts_with("devrun.toml:4:10:"), "{e}");
    assert!(check_inherit_socket(&inputs, true, uvicorn.as_ref(), true).is_ok());
    assert!(check_inherit_socket(&inputs, false, other.as_ref(), true).is_ok());
}

/// Issue 19: preload runs on every OS. The fork is Linux's; elsewhere the default is a warm
/// spare, and `preload_method = "fork"` is an error at the key that says what to use.
#[test]
fn preload_method_is_fork_on_linux_and_spare_elsewhere() {
    let server = |method: &str| {
        inputs(&format!(
            "command = \"python -m uvicorn app:app\"\n[server]\npreload = \"auto\"\n{method}"
        ))
        .unwrap()
    };
    let unset = server("");
    assert_eq!(derive_preload_method(&unset, true).unwrap(), Method::Fork);
    assert_eq!(derive_preload_method(&unset, false).unwrap(), Method::Spare);
    let spare = server("preload_method = \"spare\"");
    assert_eq!(derive_preload_method(&spare, true).unwrap(), Method::Spare);
    assert_eq!(derive_preload_method(&spare, false).unwrap(), Method::Spare);
    let fork = server("preload_method = \"fork\"");
    assert_eq!(derive_preload_method(&fork, true).unwrap(), Method::Fork);
    let e = derive_preload_method(&fork, false).unwrap_err().to_string();
    assert!(e.starts_with("devrun.toml:4:18:"), "{e}");
    assert!(
        e.contains("needs Linux") && e.contains("use \"spare\""),
        "{e}"
    );
}

#[test]
fn string_command_is_split_and_port_substituted() {
    let c = load(
        "command = \"python -m uvicorn 'app.main:app' --port {port}\"\nport = 8001\n",
        &RunArgs::default(),
    )
    .unwrap();
    assert_eq!(
        c.command,
        ["python", "-m", "uvicorn", "app.main:app", "--port", "8001"]
    );
    assert_eq!(c.watch.include, [DEFAULT_INCLUDE]);
    assert_eq!(c.stop.timeout, Duration::from_millis(5000));
}

#[test]
fn port_is_read_from_the_command() {
    let c = load(
        "command = [\"x\", \"--port\", \"9001\"]\n",
        &RunArgs::default(),
    )
    .unwrap();
    assert_eq!(c.port, 9001);
}

#[test]
fn flags_override_the_file() {
    let args = RunArgs {
        port: Some(9),
        command: vec!["y".into()],
        ext: vec!["py".into(), ".html".into()],
        ..RunArgs::default()
    };
    let c = load("command = \"x\"\nport = 8001\n", &args).unwrap();
    assert_eq!(
        (c.port, c.command.as_slice()),
        (9, ["y".to_string()].as_slice())
    );
    assert_eq!(c.watch.include, ["**/*.py", "**/*.html"]);
}

#[test]
fn unknown_key_is_located() {
    let e = load(
        "command = \"x\"\nport = 1\n[watch]\npaths = [\".\"]\nincludes = []\n",
        &RunArgs::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("devrun.toml:5:1:"), "{e}");
    assert!(e.contains("includes"), "{e}");
}

#[test]
fn bad_glob_and_signal_are_located() {
    let e = load(
        "command = \"x\"\nport = 1\n[watch]\nignore = [\"a/{b\"]\n",
        &RunArgs::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("devrun.toml:4:11:"), "{e}");
    let e = load(
        "command = \"x\"\nport = 1\n[stop]\nsignal = \"SIGNOPE\"\n",
        &RunArgs::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("devrun.toml:4:10:"), "{e}");
}

#[test]
fn pyproject_table_is_read_and_located() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(PYPROJECT_FILE);
    let args = RunArgs {
        config: Some(file.clone()),
        ..RunArgs::default()
    };
    std::fs::write(
        &file,
        "[project]\nname = \"x\"\n[tool.devrun]\ncommand = \"y\"\nport = 7\n",
    )
    .unwrap();
    let c = Config::load(&args).unwrap();
    assert_eq!((c.port, c.root.as_path()), (7, dir.path()));
    assert_eq!(c.source_name(), "pyproject.toml [tool.devrun]");
    std::fs::write(
        &file,
        "[tool.devrun]\ncommand = \"y\"\nport = 7\nbogus = 1\n",
    )
    .unwrap();
    let e = Config::load(&args).unwrap_err().to_string();
    assert!(e.contains("pyproject.toml:4:1:"), "{e}");
}

#[test]
fn durations_above_their_limit_are_located() {
    let e = load(
        "command = \"x\"\nport = 1\n[stop]\ntimeout_ms = 18446744073709552\n",
        &RunArgs::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("devrun.toml:4:14:"), "{e}");
    assert!(
        e.contains("[stop] timeout_ms") && e.contains("86400000 ms (24 h)"),
        "{e}"
    );
    let e = load(
        "command = \"x\"\nport = 1\n[watch]\ndebounce_ms = 2001\n",
        &RunArgs::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("devrun.toml:4:15:") && e.contains("2000 ms"),
        "{e}"
    );
    let c = load(
        "command = \"x\"\nport = 1\n[watch]\ndebounce_ms = 2000\n[ready]\ntimeout_ms = 86400000\n",
        &RunArgs::default(),
    )
    .unwrap();
    assert_eq!(c.watch.debounce, MAX_DEBOUNCE);
    assert_eq!(c.ready.timeout, MAX_TIMEOUT);
}

#[test]
fn bad_env_names_are_located() {
    for (key, col) in [("\"A=B\"", 1), ("\"\"", 1), ("  \"X\\u0000\"", 3)] {
        let text = format!("command = \"x\"\nport = 1\n[env]\nOK = \"1\"\n{key} = \"v\"\n");
        let e = load(&text, &RunArgs::default()).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("devrun.toml:5:{col}:")),
            "{key}: {e}"
        );
        assert!(e.contains("not a valid variable name"), "{e}");
    }
    let c = load(
        "command = \"x\"\nport = 1\n[env]\nAPP_ENV = \"a=b\"\n",
        &RunArgs::default(),
    )
    .unwrap();
    assert_eq!(c.env.get("APP_ENV").map(String::as_str), Some("a=b"));
}

#[test]
fn poll_and_env_file_are_read_and_located() {
    let c = load("command = \"x\"\nport = 1\n", &RunArgs::default()).unwrap();
    assert_eq!(
        (c.watch.poll, c.watch.poll_interval, c.env_file.as_ref()),
        (PollMode::Auto, Duration::from_millis(DEFAULT_POLL_MS), None)
    );
    let c = load(
        "command = \"x\"\nport = 1\n[watch]\npoll = true\npoll_ms = 250\n",
        &RunArgs::default(),
    )
    .unwrap();
    assert_eq!(
        (c.watch.poll, c.watch.poll_interval),
        (PollMode::Always, Duration::from_millis(250))
    );
    let e = load(
        "command = \"x\"\nport = 1\n[watch]\npoll = \"sometimes\"\n",
        &RunArgs::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("devrun.toml:4:8:"), "{e}");
    let e = load(
        "command = \"x\"\nport = 1\nenv_file = \"no-such.env\"\n",
        &RunArgs::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("devrun.toml:3:12:") && e.contains("no-such.env"),
        "{e}"
    );
}

#[test]
fn a_host_that_does_not_resolve_is_a_config_error() {
    let e = load(
        "command = \"x\"\nport = 1\nhost = \"no-such-host.invalid\"\n",
        &RunArgs::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("devrun.toml:3:8:"), "{e}");
    assert!(e.contains("no-such-host.invalid"), "{e}");
    let args = RunArgs {
        host: Some("no-such-host.invalid".into()),
        ..RunArgs::default()
    };
    let e = load("command = \"x\"\nport = 1\n", &args)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("--host: host \"no-such-host.invalid\""),
        "{e}"
    );
}

#[test]
fn the_project_layer_loads_without_a_command() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(CONFIG_FILE);
    let args = ProjectArgs {
        config: Some(file.clone()),
        ..ProjectArgs::default()
    };
    std::fs::write(&file, "port = 7\n[stop]\ntimeout_ms = 100\n").unwrap();
    let p = ProjectConfig::load(&args).unwrap().expect("a config file");
    assert_eq!((p.port, p.root.as_path()), (7, dir.path()));
    assert_eq!(p.stop.timeout, Duration::from_millis(100));
    assert_eq!(
        p.devrun_exit_timeout(),
        Duration::from_millis(100) + p.stop.port_timeout + DEVRUN_EXIT_MARGIN
    );
    // The port said only in the file's command counts; a command that does not parse is
    // the run's error, not the project's.
    std::fs::write(&file, "command = \"x --port 9002\"\n").unwrap();
    assert_eq!(
        ProjectConfig::load(&args).unwrap().map(|p| p.port),
        Some(9002)
    );
    std::fs::write(&file, "command = 5\nport = 8\n").unwrap();
    assert_eq!(ProjectConfig::load(&args).unwrap().map(|p| p.port), Some(8));
    std::fs::write(&file, "command = \"x\"\n").unwrap();
    assert!(ProjectConfig::load(&args).is_err());
    // The same places as a run: `[tool.devrun]` of a pyproject.toml too.
    let pyproject = dir.path().join(PYPROJECT_FILE);
    std::fs::write(&pyproject, "[tool.devrun]\nport = 9\n").unwrap();
    let args = ProjectArgs {
        config: Some(pyproject),
        ..ProjectArgs::default()
    };
    let p = ProjectConfig::load(&args).unwrap().expect("a config file");
    assert_eq!(
        (p.port, p.source_name().as_str()),
        (9, "pyproject.toml [tool.devrun]")
    );
}

#[test]
fn run_options_come_from_the_flags_and_the_project_from_the_run() {
    let args = RunArgs {
        once: true,
        kill_port_holder: true,
        stop_timeout: Some(Duration::from_millis(10)),
        ..RunArgs::default()
    };
    let c = load("command = \"x\"\nport = 8001\n", &args).unwrap();
    assert_eq!(
        c.options,
        RunOptions {
            once: true,
            replace: false,
            kill_port_holder: true,
        }
    );
    assert_eq!(c.project.stop.timeout, Duration::from_millis(10));
    assert_eq!((c.port, c.host.as_str()), (8001, DEFAULT_HOST));
}

/// Issue 12: `[server] preload` takes false, "auto" or a list; `--preload` is "auto"; the
/// command must be one preload can fork (Linux only).
#[cfg(target_os = "linux")]
#[test]
fn preload_values_and_the_commands_it_can_run() {
    let python = "command = \"python -m uvicorn app:app\"\nport = 1\n";
    let with = |server: &str| {
        load(
            &format!("{python}[server]\n{server}\n"),
            &RunArgs::default(),
        )
    };
    let imports = |c: Config| c.preload.map(|settings| settings.imports);
    assert_eq!(with("preload = false").unwrap().preload, None);
    assert_eq!(
        imports(with("preload = \"auto\"").unwrap()),
        Some(Preload::Auto)
    );
    assert_eq!(
        imports(with("preload = [\"fastapi\"]").unwrap()),
        Some(Preload::Modules(vec!["fastapi".into()]))
    );
    let bad = with("preload = 3").unwrap_err().to_string();
    assert!(bad.contains("[server] preload must be"), "{bad}");
    // Issue 19: fork by default on Linux; "spare" on request; anything else named.
    let method = |c: Config| c.preload.map(|settings| settings.method);
    let auto = "preload = \"auto\"";
    assert_eq!(method(with(auto).unwrap()), Some(Method::Fork));
    let spare = with(&format!("{auto}\npreload_method = \"spare\"")).unwrap();
    assert_eq!(method(spare), Some(Method::Spare));
    let bad = with(&format!("{auto}\npreload_method = \"exec\""));
    let bad = bad.unwrap_err().to_string();
    assert!(
        bad.contains("[server] preload_method must be \"fork\" or \"spare\", not \"exec\""),
        "{bad}"
    );
    // Issue 12: the held socket is handed to each forked generation (was refused).
    let both = with("preload = \"auto\"\nsocket = \"inherit\"").unwrap();
    assert!(both.inherit_socket && both.preload.is_some_and(|s| s.inherit_socket));
    let flag = RunArgs {
        preload: true,
        ..RunArgs::default()
    };
    // The launch is read once, here: what the preloader and each fork run.
    let settings = load(python, &flag).unwrap().preload.unwrap();
    assert_eq!(settings.imports, Preload::Auto);
    assert_eq!(settings.launch.interpreter, ["python"]);
    assert_eq!(settings.launch.module.as_deref(), Some("uvicorn"));
    assert_eq!(settings.launch.args, ["app:app"]);
    assert_eq!(settings.title, "python -m uvicorn app:app");
    assert_eq!(
        settings.start_timeout,
        Duration::from_millis(DEFAULT_READY_TIMEOUT_MS)
    );
    let node = load("command = \"node server.js\"\nport = 1\n", &flag).unwrap_err();
    assert!(
        node.to_string().contains("preload needs a Python command"),
        "{node}"
    );
}

#[test]
fn missing_command_or_port_is_an_error() {
    assert!(load("port = 1\n", &RunArgs::default()).is_err());
    assert!(load("command = \"x\"\n", &RunArgs::default()).is_err());
    assert!(load("command = 5\nport = 1\n", &RunArgs::default()).is_err());
}
