//! Questions about other processes: is pid P still the process devrun recorded (same start
//! time), what is its command line, what are its children. Used to find orphans, escaped
//! descendants and the holders of a port, never to kill on a bare pid. The OS answers come from
//! `sys`; what is decided from them without the OS (heirs, devrun's own ancestry) is here.

#[cfg(target_os = "linux")]
pub use crate::sys::process_group;
pub use crate::sys::{
    command_line, descendants, group_members, is_same, is_zombie, process_table, start_time,
    ProcessRow,
};

/// The processes still running that `dead` started, and theirs: on Windows a socket stays
/// LISTENING under the pid of a process that is gone when a child inherited its handle, and
/// these are the candidates that hold it. Empty if `dead` is in the table (it is not dead).
pub fn heirs(dead: u32, table: &[ProcessRow]) -> Vec<u32> {
    if table.iter().any(|row| row.pid == dead) {
        return Vec::new();
    }
    let mut found: Vec<u32> = Vec::new();
    let mut queue = vec![dead];
    while let Some(parent) = queue.pop() {
        for row in table
            .iter()
            .filter(|r| r.parent == parent && r.pid != parent)
        {
            if row.pid != dead && !found.contains(&row.pid) {
                found.push(row.pid);
                queue.push(row.pid);
            }
        }
    }
    found
}

/// Processes marked with `var=value` in their environment (see `state::RUN_MARKER`), of this
/// user, started at or after `since`: (pid, start time). Linux only: elsewhere another process's
/// environment is not read (macOS answers for the process group, Windows for the job object).
pub use crate::sys::marked;

/// The value of `var` in the environment `pid` started with: None when it has none or it
/// cannot be read (gone, another user's; always on macOS and Windows).
pub use crate::sys::environment_value;

/// Whether `pid` runs a devrun program (its executable's name starts with "devrun"): a state
/// file naming some other live process as its devrun is not believed.
pub fn is_devrun(pid: u32) -> bool {
    std::path::Path::new(&crate::sys::program_path(pid))
        .file_name()
        .is_some_and(|name| {
            name.to_string_lossy()
                .to_ascii_lowercase()
                .starts_with("devrun")
        })
}

/// devrun itself and every process above it: never signalled, whatever a record says.
pub fn self_and_ancestors() -> Vec<u32> {
    let mut chain = vec![std::process::id()];
    while let Some(parent) = chain.last().and_then(|p| crate::sys::parent(*p)) {
        if parent == 0 || chain.contains(&parent) {
            break;
        }
        chain.push(parent);
    }
    chain
}

/// Alive and not a zombie.
pub fn running(pid: u32) -> bool {
    start_time(pid).is_some() && !is_zombie(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pid: u32, parent: u32) -> ProcessRow {
        ProcessRow { pid, parent }
    }

    #[test]
    fn heirs_are_the_live_descendants_of_a_dead_pid() {
        // 10 is gone; 11 and 12 were its children, 13 a grandchild; 20 is unrelated.
        let table = [row(4, 0), row(11, 10), row(12, 10), row(13, 11), row(20, 4)];
        let mut found = heirs(10, &table);
        found.sort_unstable();
        assert_eq!(found, vec![11, 12, 13]);
        assert!(heirs(30, &table).is_empty(), "nothing was started by 30");
    }

    #[test]
    fn a_live_pid_has_no_heirs() {
        let table = [row(10, 4), row(11, 10)];
        assert!(heirs(10, &table).is_empty());
    }
}

/// Run under Wine by tests-wine/run (`windows_` in the name selects them there).
#[cfg(all(test, windows))]
mod windows_tests {
    use super::*;

    #[test]
    fn windows_an_exited_process_with_an_open_handle_is_not_the_same_process() {
        let exe = std::env::current_exe().unwrap();
        // The test binary itself, asked to list nothing: it exits at once.
        let mut child = std::process::Command::new(exe)
            .args(["--list", "--exact", "no-such-test"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        let start = start_time(pid).expect("a start time while it runs or just after");
        child.wait().unwrap();
        // `child` still holds its process handle: the process can be opened and timed...
        assert_eq!(
            start_time(pid),
            Some(start),
            "the handle keeps the process object"
        );
        // ...but it has exited, so it is not the process devrun recorded any more.
        assert!(is_zombie(pid));
        assert!(!is_same(pid, start));
        assert!(!running(pid));
        drop(child);
    }

    #[test]
    fn windows_children_and_heirs_come_from_the_process_table() {
        let exe = std::env::current_exe().unwrap();
        let me = std::process::id();
        let table = process_table();
        assert!(
            table.iter().any(|row| row.pid == me),
            "the table lists this process"
        );
        let mut child = std::process::Command::new(exe)
            .args(["--list", "--exact", "no-such-test"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let listed = crate::sys::children(me).contains(&child.id());
        child.wait().unwrap();
        assert!(listed, "a running child is among children(me)");
        assert!(
            heirs(me, &process_table()).is_empty(),
            "a live pid has no heirs"
        );
    }
}
