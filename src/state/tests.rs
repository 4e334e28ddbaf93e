//! The lock, the state file and its records.

use super::*;

#[test]
fn lock_is_exclusive_and_state_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = StateDir::new(dir.path());
    let lock = state_dir.try_lock().unwrap().expect("first lock");
    assert!(state_dir.try_lock().unwrap().is_none());
    assert_eq!(
        std::fs::read_to_string(dir.path().join(".devrun/.gitignore")).unwrap(),
        "*\n"
    );
    let state = recorded(&state_dir);
    state_dir.write(&state).unwrap();
    assert_eq!(state_dir.read(), Some(state.clone()));
    // The same file copied into another project (cp -r, a backup) is no evidence there.
    let copy = tempfile::tempdir().unwrap();
    let copied = StateDir::new(copy.path());
    copied.write(&state).unwrap();
    assert_eq!(copied.read(), None);
    drop(lock);
    assert!(state_dir.try_lock().unwrap().is_some());
}

/// A state file with every field set, for `state_dir`'s project.
fn recorded(state_dir: &StateDir) -> State {
    State {
        devrun_pid: 1,
        devrun_start: 2,
        port: 8001,
        host: "127.0.0.1".into(),
        started_at: 3,
        run: random_id().unwrap(),
        control: Some(ControlRecord {
            port: Some(9),
            socket: None,
            pipe: Some(r"\\.\pipe\devrun-0123".into()),
            token: random_id().unwrap(),
        }),
        project: Some(state_dir.project()),
        backend: Some(BackendRecord {
            pid: 4,
            pgid: 4,
            start: 5,
            generation: 6,
            command: vec!["python".into()],
            started_at: 7,
            ready: false,
        }),
        backend_run: true,
        processes: Vec::new(),
        exited: BTreeMap::new(),
        log: None,
    }
}

/// Issue 20.3: `.devrun/` is the owner's alone and its lock 0600, whatever modes they had
/// (a umask of 000 makes 0777 and 0666), and another user's state file is no evidence.
#[cfg(unix)]
#[test]
fn the_state_folder_and_lock_are_owner_only_and_anothers_state_is_not_read() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = tempfile::tempdir().unwrap();
    let state_dir = StateDir::new(dir.path());
    std::fs::create_dir(state_dir.path()).unwrap();
    let wide = std::fs::Permissions::from_mode(0o777);
    std::fs::set_permissions(state_dir.path(), wide.clone()).unwrap();
    std::fs::write(state_dir.path().join("lock"), "").unwrap();
    std::fs::set_permissions(state_dir.path().join("lock"), wide).unwrap();
    let _lock = state_dir.try_lock().unwrap().expect("lock");
    assert_eq!(mode(state_dir.path()), 0o700);
    assert_eq!(mode(&state_dir.path().join("lock")), 0o600);
    let state = State {
        control: None,
        backend: None,
        ..recorded(&state_dir)
    };
    state_dir.write(&state).unwrap();
    assert_eq!(mode(&state_dir.state_path()), 0o600);
    assert!(state_dir.read().is_some());
    // Root can hand the file to another user: then it is not read.
    if unsafe { libc::geteuid() } == 0 {
        let path = std::ffi::CString::new(state_dir.state_path().to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::chown(path.as_ptr(), 65534, 65534) }, 0);
        assert_eq!(state_dir.read(), None);
    }
}

#[test]
fn the_lock_outlives_a_deleted_state_folder() {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = StateDir::new(dir.path());
    let _lock = state_dir.try_lock().unwrap().expect("first lock");
    std::fs::remove_dir_all(state_dir.path()).unwrap();
    assert!(state_dir.try_lock().unwrap().is_none());
}

#[test]
fn random_ids_differ_and_the_lock_name_is_stable() {
    assert_ne!(random_id().unwrap(), random_id().unwrap());
    assert_eq!(random_id().unwrap().len(), 32);
    assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
}

fn generation(pid: u32) -> BackendRecord {
    BackendRecord {
        pid,
        pgid: pid,
        start: 5,
        generation: 1,
        command: vec!["python".into()],
        started_at: 7,
        ready: false,
    }
}

#[test]
fn members_are_recorded_by_name_and_listed_with_the_backend() {
    // A state file from before stacks: no members, and the backend runs.
    let old = r#"{"devrun_pid": 1, "devrun_start": 2, "port": 8001, "host": "127.0.0.1",
        "started_at": 3, "backend": null}"#;
    let mut state: State = serde_json::from_str(old).unwrap();
    assert!(state.backend_run);
    assert!(state.processes.is_empty());
    assert!(!serde_json::to_string(&state).unwrap().contains("processes"));
    assert_eq!(state.ports(), [(BACKEND, 8001)]);
    assert_eq!(state.describe_ports(), "port 8001");

    state.backend = Some(generation(10));
    state.set_process("web", Some(5173), Some(generation(20)));
    state.set_process("worker", None, Some(generation(30)));
    state.set_process("web", Some(5173), None);
    state.set_process("web", Some(5174), Some(generation(21)));
    let names: Vec<(&str, u32)> = state
        .generations()
        .into_iter()
        .map(|(name, g)| (name, g.pid))
        .collect();
    assert_eq!(names, [(BACKEND, 10), ("web", 21), ("worker", 30)]);
    assert_eq!(state.ports(), [(BACKEND, 8001), ("web", 5174)]);

    state.backend_run = false;
    state.backend = None;
    state.set_process("worker", None, None);
    assert_eq!(state.generations().len(), 1);
    assert_eq!(state.ports(), [("web", 5174)]);
    assert_eq!(state.describe_ports(), "port 5174 (web)");
    state.backend_run = true;
    assert_eq!(state.describe_ports(), "ports 8001 (backend), 5174 (web)");
    state.backend_run = false;
    let text = serde_json::to_string(&state).unwrap();
    assert_eq!(serde_json::from_str::<State>(&text).unwrap(), state);
}
