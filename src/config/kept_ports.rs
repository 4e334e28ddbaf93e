//! `port = "auto"`, for the backend and any member: a free port picked once per checkout and
//! kept in `.devrun/ports.json`, so tomorrow's run (and a frontend's URL) gets the same one.
//! Two worktrees of one repository have two `.devrun/` folders, so two sets of ports. A kept
//! port that something else took meanwhile is replaced, and that is said.

use crate::state::{StateDir, BACKEND};
use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};

/// The file in `.devrun/`: `{"backend": 41234, "web": 41235}`.
const KEPT_PORTS: &str = "ports.json";
/// How many ports the OS may offer that another member already names.
const TRIES: usize = 20;

/// A member's auto port, and what to say about it (a new pick), if anything.
pub(super) struct Picked {
    pub port: u16,
    pub note: Option<String>,
    /// Held until every auto port of the config is picked, so no two are the same.
    pub _held: Option<TcpListener>,
}

fn path(root: &Path) -> PathBuf {
    StateDir::new(root).path().join(KEPT_PORTS)
}

fn read(root: &Path) -> BTreeMap<String, u16> {
    std::fs::read_to_string(path(root))
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default()
}

fn write(root: &Path, kept: &BTreeMap<String, u16>) -> std::io::Result<()> {
    StateDir::new(root).ensure()?;
    let text = serde_json::to_string_pretty(kept).map_err(std::io::Error::other)?;
    std::fs::write(path(root), text + "\n")
}

/// `name`'s auto port on `host`: the kept one while it is free (or held by this project's own
/// devrun or what a dead one left, which the run ends first), else a new free one that none of
/// `taken` names, kept from now on.
pub(super) fn pick(root: &Path, name: &str, host: &str, taken: &[u16]) -> Result<Picked, String> {
    let mut kept = read(root);
    let previous = kept.get(name).copied();
    if let Some(port) = previous.filter(|p| !taken.contains(p)) {
        if crate::port::is_free(host, port) || ours(root, port) {
            return Ok(Picked {
                port,
                note: None,
                _held: None,
            });
        }
    }
    let (port, held) = free_port(host, taken)?;
    kept.insert(name.to_string(), port);
    let shown = path(root);
    write(root, &kept).map_err(|e| format!("cannot write {}: {e}", shown.display()))?;
    let whose = match name {
        BACKEND => "the backend".to_string(),
        name => name.to_string(),
    };
    let note = match previous {
        Some(old) => format!(
            "port {old}, kept for {whose} (port = \"auto\"), is taken now: picked {port} \
             (kept in {})",
            shown.display()
        ),
        None => format!(
            "picked port {port} for {whose} (port = \"auto\"); kept for this checkout in {}",
            shown.display()
        ),
    };
    Ok(Picked {
        port,
        note: Some(note),
        _held: Some(held),
    })
}

/// Whether this project's records name `port`: its running devrun's, or a dead one's (whose
/// leftovers the run ends before it starts anything).
fn ours(root: &Path, port: u16) -> bool {
    StateDir::new(root)
        .read()
        .is_some_and(|state| state.ports().iter().any(|(_, p)| *p == port))
}

/// A port the OS says is free on `host` now and that `taken` does not name.
fn free_port(host: &str, taken: &[u16]) -> Result<(u16, TcpListener), String> {
    let addr = crate::port::resolve(host, 0).map_err(|e| format!("cannot resolve {host}: {e}"))?;
    // Refused offers stay bound meanwhile, so they are not offered again.
    let mut refused = Vec::new();
    for _ in 0..TRIES {
        let listener = TcpListener::bind(addr)
            .map_err(|e| format!("cannot bind a free port on {host}: {e}"))?;
        let port = listener
            .local_addr()
            .map_err(|e| format!("cannot read the port the OS picked on {host}: {e}"))?
            .port();
        if !taken.contains(&port) {
            return Ok((port, listener));
        }
        refused.push(listener);
    }
    Err(format!(
        "the OS offered only ports other processes of the config name ({TRIES} tries)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_auto_port_is_kept_per_checkout_and_replaced_when_taken() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let first = pick(a.path(), BACKEND, "127.0.0.1", &[]).unwrap();
        assert!(first.note.is_some(), "a first pick is said");
        drop(first._held);
        let again = pick(a.path(), BACKEND, "127.0.0.1", &[]).unwrap();
        assert_eq!(again.port, first.port, "not kept across runs");
        assert!(again.note.is_none());
        // Another checkout has its own.
        let other = pick(b.path(), BACKEND, "127.0.0.1", &[first.port]).unwrap();
        assert_ne!(other.port, first.port);
        // Taken by something else: a new one, said.
        let squatter = TcpListener::bind(("127.0.0.1", first.port)).unwrap();
        let moved = pick(a.path(), BACKEND, "127.0.0.1", &[]).unwrap();
        assert_ne!(moved.port, first.port);
        assert!(moved.note.unwrap().contains("is taken now"));
        drop(squatter);
        // A port another member names is never given.
        let web = pick(a.path(), "web", "127.0.0.1", &[moved.port]).unwrap();
        assert_ne!(web.port, moved.port);
    }
}
