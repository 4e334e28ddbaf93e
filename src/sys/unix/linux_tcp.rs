//! Listening sockets from /proc/net/tcp{,6}, their owners from /proc/PID/fd.
//!
//! Read here rather than through the `listeners` crate (used on macOS): that crate drops the
//! sockets no process owns any more (inode 0), which `closing_only` reports, and resolves the
//! owners of every socket on the machine, where this reads /proc/PID/fd only when the port has
//! a listener.

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

const TCP_LISTEN: &str = "0A";

/// One socket of /proc/net/tcp{,6} whose local port is the port asked about.
struct Row {
    local: Option<IpAddr>,
    state: String,
    /// 0 when no process owns the socket any more (the kernel is closing it).
    inode: u64,
}

/// Sockets with local port `port`, any address, IPv4 or IPv6 (what could be read).
fn rows(port: u16) -> Vec<Row> {
    rows_checked(port).unwrap_or_default()
}

/// Sockets with local port `port`; Err when a table exists but cannot be read (a descriptor
/// limit), never an empty answer for an unseen one. (No tcp6 table: IPv6 is off.)
fn rows_checked(port: u16) -> io::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = match std::fs::read_to_string(table) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            let Some((address, hex_port)) = local.rsplit_once(':') else {
                continue;
            };
            if u16::from_str_radix(hex_port, 16).ok() != Some(port) {
                continue;
            }
            rows.push(Row {
                local: parse_address(address),
                state: state.to_string(),
                inode: inode.parse().unwrap_or(0),
            });
        }
    }
    Ok(rows)
}

/// The kernel's hex address: 4 or 16 bytes, each 32-bit word in host byte order.
fn parse_address(hex: &str) -> Option<IpAddr> {
    let words: Vec<u32> = (0..hex.len() / 8)
        .map(|i| u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok())
        .collect::<Option<_>>()?;
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    match bytes.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::new(
            bytes[0], bytes[1], bytes[2], bytes[3],
        ))),
        16 => {
            let octets: [u8; 16] = bytes.try_into().ok()?;
            let v6 = Ipv6Addr::from(octets);
            Some(v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4))
        }
        _ => None,
    }
}

/// Socket inodes in LISTEN state on `port`, any address, IPv4 or IPv6.
fn listen_inodes(port: u16) -> io::Result<HashSet<u64>> {
    Ok(rows_checked(port)?
        .into_iter()
        .filter(|r| r.state == TCP_LISTEN)
        .map(|r| r.inode)
        .collect())
}

/// The addresses something listens on at `port`.
pub fn listen_addresses(port: u16) -> Vec<SocketAddr> {
    let mut found: Vec<SocketAddr> = rows(port)
        .into_iter()
        .filter(|r| r.state == TCP_LISTEN)
        .filter_map(|r| Some(SocketAddr::new(r.local?, port)))
        .collect();
    found.sort();
    found.dedup();
    found
}

fn state_name(state: &str) -> &'static str {
    match state {
        "01" => "ESTABLISHED",
        "04" => "FIN_WAIT1",
        "05" => "FIN_WAIT2",
        "06" => "TIME_WAIT",
        "08" => "CLOSE_WAIT",
        "09" => "LAST_ACK",
        "0B" => "CLOSING",
        _ => "closing",
    }
}

/// "2 closing connections (FIN_WAIT2 ×1, TIME_WAIT ×1)" when every socket on the port is
/// one no process owns; None if any is a listener or owned by a process.
pub fn closing_only(port: u16) -> Option<String> {
    let rows = rows(port);
    if rows.is_empty() || rows.iter().any(|r| r.inode != 0 || r.state == TCP_LISTEN) {
        return None;
    }
    let mut states: BTreeMap<&str, usize> = BTreeMap::new();
    for row in &rows {
        *states.entry(state_name(&row.state)).or_default() += 1;
    }
    let states: Vec<String> = states.iter().map(|(s, n)| format!("{s} ×{n}")).collect();
    Some(format!(
        "{} closing connection{} ({})",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" },
        states.join(", ")
    ))
}

/// Owners of those sockets, from the /proc/PID/fd links (a scan of /proc: slow, so only
/// used to name holders and, with a held socket, to confirm nobody else holds it).
pub fn listener_pids(port: u16) -> Vec<u32> {
    listener_pids_checked(port).unwrap_or_default()
}

/// The owners, or Err when what must be read cannot be (a descriptor limit): "nobody" is then
/// unknown, never assumed. Processes that are gone, or another user's (whose descriptors are
/// not ours to read, and who cannot hold devrun's socket), are skipped.
pub fn listener_pids_checked(port: u16) -> io::Result<Vec<u32>> {
    let inodes = listen_inodes(port)?;
    if inodes.is_empty() {
        return Ok(Vec::new());
    }
    let targets: HashSet<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    let skipped = |e: &io::Error| {
        matches!(
            e.kind(),
            io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied
        )
    };
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let entry = entry?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let fds = match std::fs::read_dir(entry.path().join("fd")) {
            Ok(fds) => fds,
            Err(e) if skipped(&e) => continue,
            Err(e) => return Err(e),
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|link| targets.contains(link.to_string_lossy().as_ref()))
        });
        if holds {
            pids.push(pid);
        }
    }
    Ok(pids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_kernels_addresses() {
        let v4 = parse_address("0100007F");
        assert_eq!(v4, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        let v6 = parse_address("00000000000000000000000001000000");
        assert_eq!(v6, Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        let mapped = parse_address("0000000000000000FFFF00000100007F");
        assert_eq!(mapped, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    }
}
