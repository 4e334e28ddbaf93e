//! The port: is it free, who holds it, is the backend ready on it.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One process with a listening socket on the port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    pub command: String,
}

/// host:port as an address (the first the resolver gives): the address to bind for the
/// free-port probe. Config checks it once, so a host that does not resolve is a config error.
pub fn resolve(host: &str, port: u16) -> io::Result<SocketAddr> {
    (host, port).to_socket_addrs()?.next().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("cannot resolve host {host:?}"),
        )
    })
}

/// The address to connect to for readiness: a wildcard host is reached on loopback.
fn connect_addr(host: &str, port: u16) -> io::Result<SocketAddr> {
    let addr = resolve(host, port)?;
    Ok(match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port),
        _ => addr,
    })
}

/// Free = a server could bind host:port now and nothing listens on the port on any address.
/// Bind probes answer in microseconds, where reading /proc/net/tcp can take milliseconds.
pub fn is_free(host: &str, port: u16) -> bool {
    let Ok(addr) = resolve(host, port) else {
        return false;
    };
    if !can_bind(addr) {
        return false;
    }
    // A wildcard bind conflicts with a listener on any address of its family (Unix semantics;
    // sockets in TIME_WAIT don't conflict under SO_REUSEADDR).
    #[cfg(unix)]
    {
        let v4 = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port);
        let v6 = SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port);
        if !can_bind(v4) || (ipv6_available() && !can_bind(v6)) {
            return false;
        }
    }
    true
}

fn can_bind(addr: SocketAddr) -> bool {
    let domain = socket2::Domain::for_address(addr);
    let Ok(socket) = socket2::Socket::new(domain, socket2::Type::STREAM, None) else {
        return false;
    };
    // On Windows SO_REUSEADDR would let us bind over a live listener: leave it off there.
    #[cfg(unix)]
    if socket.set_reuse_address(true).is_err() {
        return false;
    }
    if addr.is_ipv6() {
        let _ = socket.set_only_v6(true);
    }
    socket.bind(&addr.into()).is_ok()
}

/// Whether this machine can make IPv6 sockets at all (containers often can't). Asked once:
/// `is_free` runs in the poll loops of every restart.
#[cfg(unix)]
fn ipv6_available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None)
            .and_then(|s| s.bind(&SocketAddr::new(Ipv6Addr::LOCALHOST.into(), 0).into()))
            .is_ok()
    })
}

/// Binds host:port once for `[server] socket = "inherit"`, with uvicorn's default backlog, so
/// connections made while no backend runs wait in the queue instead of being refused.
pub fn bind_listener(host: &str, port: u16) -> io::Result<socket2::Socket> {
    let addr = resolve(host, port)?;
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(2048)?;
    Ok(socket)
}

/// Whether any process but devrun itself holds a listening socket on the port (Linux; elsewhere
/// the confirmed end of the old generation's processes has to answer for it).
pub fn held_by_others(port: u16) -> Vec<Holder> {
    let me = std::process::id();
    holders(port).into_iter().filter(|h| h.pid != me).collect()
}

/// Waits until the port is free. Ok(waited) or Err(waited) after `timeout`.
pub async fn wait_free(host: &str, port: u16, timeout: Duration) -> Result<Duration, Duration> {
    let start = Instant::now();
    loop {
        if is_free(host, port) {
            return Ok(start.elapsed());
        }
        if start.elapsed() >= timeout {
            return Err(start.elapsed());
        }
        tokio::time::sleep(crate::process::poll_interval(start.elapsed())).await;
    }
}

/// The pid a TCP table reports when it does not know the owner (Windows shows 0 for sockets of
/// some system services, Wine for every socket). Never a process devrun could signal.
pub const UNKNOWN_OWNER: u32 = 0;

/// Every process with a listening socket on `port`, any address (empty where the OS won't say).
pub fn holders(port: u16) -> Vec<Holder> {
    let mut pids = listener_pids(port);
    pids.sort_unstable();
    pids.dedup();
    pids.into_iter()
        .map(|pid| Holder {
            pid,
            command: holder_command(pid),
        })
        .collect()
}

/// The command line of a port's owner, or what is known when there is no such process.
fn holder_command(pid: u32) -> String {
    if pid == UNKNOWN_OWNER {
        return "owner unknown: the OS reports no pid".to_string();
    }
    // Only Windows keeps listing a socket under a pid that is gone (and gives parent links).
    if !cfg!(windows) || crate::procs::running(pid) {
        return crate::procs::command_line(pid);
    }
    let heirs: Vec<(u32, String)> = crate::procs::heirs(pid, &crate::procs::process_table())
        .into_iter()
        .map(|heir| (heir, crate::procs::command_line(heir)))
        .collect();
    gone_owner(&heirs)
}

/// The incident's symptom on Windows: the port is LISTENING under a pid that no longer exists,
/// because a process it started inherited the socket. Names those processes.
fn gone_owner(heirs: &[(u32, String)]) -> String {
    if heirs.is_empty() {
        return "no such process any more, and nothing it started still runs".to_string();
    }
    let named = heirs
        .iter()
        .map(|(pid, command)| format!("pid {pid} {command}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "no such process any more; processes it started still run and may have inherited the \
         socket: {named}"
    )
}

/// Why binding the port was refused, when that is not "someone holds it": Windows answers
/// WSAEACCES (10013) for a port inside a range it reserved (Hyper-V, WSL and Docker reserve
/// ranges, which can change on every boot). `listeners` is whether anyone listens on the port.
pub fn refusal_message(port: u16, os_error: Option<i32>, listeners: bool) -> Option<String> {
    const WSAEACCES: i32 = 10013;
    if os_error != Some(WSAEACCES) || listeners {
        return None;
    }
    Some(format!(
        "Windows refuses to bind port {port} (WSAEACCES 10013) and no process listens on it: the \
         port is probably inside a range Windows reserved (Hyper-V, WSL, Docker). See the ranges \
         with `netsh int ipv4 show excludedportrange protocol=tcp` and pick a port outside them \
         (--port)"
    ))
}

/// The error binding host:port gives right now, if any.
pub fn bind_error(host: &str, port: u16) -> Option<io::Error> {
    let addr = match resolve(host, port) {
        Ok(addr) => addr,
        Err(e) => return Some(e),
    };
    let socket = match socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    ) {
        Ok(socket) => socket,
        Err(e) => return Some(e),
    };
    socket.bind(&addr.into()).err()
}

#[cfg(target_os = "linux")]
fn listener_pids(port: u16) -> Vec<u32> {
    linux::listener_pids(port)
}

/// macOS: `lsof`, which every macOS has, asked for listeners on the port only.
#[cfg(target_os = "macos")]
fn listener_pids(port: u16) -> Vec<u32> {
    let output = std::process::Command::new("lsof")
        .args(["-nP", &format!("-iTCP:{port}"), "-sTCP:LISTEN", "-Fp"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output();
    let Ok(output) = output else {
        return Vec::new();
    };
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.strip_prefix('p')?.parse().ok())
        .collect()
}

#[cfg(windows)]
fn listener_pids(port: u16) -> Vec<u32> {
    windows::listener_pids(port)
}

/// Why the port cannot be bound when no process listens on it: connections the kernel is still
/// closing (FIN_WAIT2, TIME_WAIT, …) that no process owns any more, e.g. "1 closing connection
/// (FIN_WAIT2)". None when a process holds a socket on it, or where the OS won't say.
pub fn closing_only(port: u16) -> Option<String> {
    #[cfg(target_os = "linux")]
    {
        linux::closing_only(port)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = port;
        None
    }
}

/// What keeps the port busy, for status lines: its holders, or the kernel's closing connections.
pub fn describe_busy(port: u16) -> String {
    match closing_only(port) {
        Some(closing) => format!(
            "no process: only {closing} left by a stopped process, which the kernel drops within \
             about a minute (net.ipv4.tcp_fin_timeout)"
        ),
        None => describe_holders(&holders(port)),
    }
}

/// "pid 123 (python -m http.server 8001), pid 456 (…)" or a plain "another process".
pub fn describe_holders(holders: &[Holder]) -> String {
    if holders.is_empty() {
        return "another process".to_string();
    }
    holders
        .iter()
        .map(|h| match h.pid {
            UNKNOWN_OWNER => "a process the OS does not name (it reports owner pid 0)".to_string(),
            pid => format!("pid {pid} ({})", h.command),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why the backend is not ready (yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotReady {
    /// Nothing accepted a connection.
    NoListener,
    /// Nothing accepted a connection at `tried`, but something listens on the port at other
    /// addresses (a backend on `::1` where devrun checks 127.0.0.1, or the other way round).
    ListensElsewhere {
        tried: SocketAddr,
        found: Vec<SocketAddr>,
    },
    /// The ready path answered with a non-2xx status.
    Status(u16),
    /// Connected, but no valid HTTP answer.
    BadAnswer(String),
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotReady::NoListener => write!(f, "nothing accepted a connection"),
            NotReady::ListensElsewhere { tried, found } => {
                let addresses: Vec<String> = found.iter().map(ToString::to_string).collect();
                let host = found
                    .first()
                    .map(|a| a.ip().to_string())
                    .unwrap_or_default();
                write!(
                    f,
                    "nothing accepted a connection on {tried}, but the port is listened on at {}: \
                     set `host = \"{host}\"` (or --host {host}), or make the backend listen on {}",
                    addresses.join(", "),
                    tried.ip()
                )
            }
            NotReady::Status(code) => write!(f, "the health check returned HTTP {code}"),
            NotReady::BadAnswer(why) => write!(f, "no valid HTTP answer ({why})"),
        }
    }
}

/// A final "nothing accepted a connection", with where the port *is* listened on if that is
/// somewhere else than where devrun connects.
fn explain_no_listener(host: &str, port: u16) -> NotReady {
    let Ok(tried) = connect_addr(host, port) else {
        return NotReady::NoListener;
    };
    #[cfg(target_os = "linux")]
    let found: Vec<SocketAddr> = linux::listen_addresses(port)
        .into_iter()
        .filter(|addr| addr.ip() != tried.ip())
        .collect();
    #[cfg(not(target_os = "linux"))]
    let found: Vec<SocketAddr> = Vec::new();
    if found.is_empty() {
        NotReady::NoListener
    } else {
        NotReady::ListensElsewhere { tried, found }
    }
}

/// How readiness is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadyCheck<'a> {
    /// The port accepts a TCP connection.
    Connect,
    /// GET `path` answers 2xx.
    Http2xx(&'a str),
    /// GET `path` gets any HTTP answer: the app is serving. For a socket devrun holds itself,
    /// where the kernel accepts connections before any backend does.
    HttpAnswer(&'a str),
}

/// One readiness probe.
pub async fn probe(host: &str, port: u16, check: ReadyCheck<'_>) -> Result<(), NotReady> {
    let addr = connect_addr(host, port).map_err(|e| NotReady::BadAnswer(e.to_string()))?;
    let connect = tokio::net::TcpStream::connect(addr);
    let mut stream = match tokio::time::timeout(Duration::from_secs(1), connect).await {
        Ok(Ok(stream)) => stream,
        _ => return Err(NotReady::NoListener),
    };
    let (path, any_status) = match check {
        ReadyCheck::Connect => return Ok(()),
        ReadyCheck::Http2xx(path) => (path, false),
        ReadyCheck::HttpAnswer(path) => (path, true),
    };
    let status = tokio::time::timeout(
        Duration::from_secs(5),
        http_status(&mut stream, host, port, path),
    )
    .await
    .map_err(|_| NotReady::BadAnswer("timed out".into()))?
    .map_err(|e| NotReady::BadAnswer(e.to_string()))?;
    if any_status || (200..300).contains(&status) {
        Ok(())
    } else {
        Err(NotReady::Status(status))
    }
}

/// Sends a GET and reads the status code of the answer.
async fn http_status(
    stream: &mut tokio::net::TcpStream,
    host: &str,
    port: u16,
    path: &str,
) -> io::Result<u16> {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: devrun\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 4096 {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok());
    match (line.starts_with("HTTP/"), status) {
        (true, Some(status)) => Ok(status),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "not an HTTP status line: {:?}",
                line.lines().next().unwrap_or("")
            ),
        )),
    }
}

/// Probes until ready. Ok(time taken) or, after `timeout`, the last reason it was not.
pub async fn wait_ready(
    host: &str,
    port: u16,
    check: ReadyCheck<'_>,
    timeout: Duration,
) -> Result<Duration, NotReady> {
    let start = Instant::now();
    loop {
        match probe(host, port, check).await {
            Ok(()) => return Ok(start.elapsed()),
            Err(NotReady::NoListener) if start.elapsed() >= timeout => {
                return Err(explain_no_listener(host, port))
            }
            Err(reason) if start.elapsed() >= timeout => return Err(reason),
            Err(_) => {}
        }
        // Fast at first: readiness is on the restart path the user waits for.
        let pause = if start.elapsed() < Duration::from_secs(3) {
            5
        } else {
            50
        };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

#[cfg(target_os = "linux")]
mod linux {
    //! Listening sockets from /proc/net/tcp{,6}, their owners from /proc/PID/fd.

    use std::collections::{BTreeMap, HashSet};
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

    const TCP_LISTEN: &str = "0A";

    /// One socket of /proc/net/tcp{,6} whose local port is the port asked about.
    struct Row {
        local: Option<IpAddr>,
        state: String,
        /// 0 when no process owns the socket any more (the kernel is closing it).
        inode: u64,
    }

    /// Sockets with local port `port`, any address, IPv4 or IPv6.
    fn rows(port: u16) -> Vec<Row> {
        let mut rows = Vec::new();
        for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
            let Ok(text) = std::fs::read_to_string(table) else {
                continue;
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
        rows
    }

    /// The kernel's hex address: 4 or 16 bytes, each 32-bit word in host byte order.
    pub(super) fn parse_address(hex: &str) -> Option<IpAddr> {
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
    fn listen_inodes(port: u16) -> HashSet<u64> {
        rows(port)
            .into_iter()
            .filter(|r| r.state == TCP_LISTEN)
            .map(|r| r.inode)
            .collect()
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
    /// used to name holders, never on the restart path).
    pub fn listener_pids(port: u16) -> Vec<u32> {
        let inodes = listen_inodes(port);
        if inodes.is_empty() {
            return Vec::new();
        }
        let targets: HashSet<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        procs
            .flatten()
            .filter_map(|entry| {
                let pid = entry.file_name().to_str()?.parse::<u32>().ok()?;
                let fds = std::fs::read_dir(entry.path().join("fd")).ok()?;
                let holds = fds.flatten().any(|fd| {
                    std::fs::read_link(fd.path())
                        .is_ok_and(|link| targets.contains(link.to_string_lossy().as_ref()))
                });
                holds.then_some(pid)
            })
            .collect()
    }
}

#[cfg(windows)]
mod windows {
    //! The TCP tables with owning pids (GetExtendedTcpTable), IPv4 and IPv6 listeners.

    use windows_sys::Win32::NetworkManagement::IpHelper::{
        GetExtendedTcpTable, MIB_TCP6ROW_OWNER_PID, MIB_TCPROW_OWNER_PID,
        TCP_TABLE_OWNER_PID_LISTENER,
    };
    use windows_sys::Win32::Networking::WinSock::{AF_INET, AF_INET6};

    /// The raw table for one address family: a u32 count followed by rows.
    fn table(family: u32) -> Vec<u8> {
        let mut size: u32 = 0;
        // SAFETY: first call with a null buffer only asks for the size.
        unsafe {
            GetExtendedTcpTable(
                std::ptr::null_mut(),
                &mut size,
                0,
                family,
                TCP_TABLE_OWNER_PID_LISTENER,
                0,
            );
        }
        for _ in 0..3 {
            let mut buf = vec![0u8; size as usize + 4096];
            let mut len = buf.len() as u32;
            // SAFETY: the buffer and its length match.
            let rc = unsafe {
                GetExtendedTcpTable(
                    buf.as_mut_ptr().cast(),
                    &mut len,
                    0,
                    family,
                    TCP_TABLE_OWNER_PID_LISTENER,
                    0,
                )
            };
            if rc == 0 {
                return buf;
            }
            size = len;
        }
        Vec::new()
    }

    /// Rows of type `R` in a table buffer.
    fn rows<R: Copy>(buf: &[u8]) -> Vec<R> {
        if buf.len() < 4 {
            return Vec::new();
        }
        let count = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let offset = std::mem::align_of::<R>().max(4);
        (0..count)
            .filter_map(|i| {
                let start = offset + i * std::mem::size_of::<R>();
                let bytes = buf.get(start..start + std::mem::size_of::<R>())?;
                // SAFETY: `bytes` holds exactly one R; read_unaligned copes with alignment.
                Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<R>()) })
            })
            .collect()
    }

    fn local_port(raw: u32) -> u16 {
        u16::from_be((raw & 0xffff) as u16)
    }

    pub fn listener_pids(port: u16) -> Vec<u32> {
        let v4 = rows::<MIB_TCPROW_OWNER_PID>(&table(AF_INET as u32))
            .into_iter()
            .filter(|r| local_port(r.dwLocalPort) == port)
            .map(|r| r.dwOwningPid);
        let v6 = rows::<MIB_TCP6ROW_OWNER_PID>(&table(AF_INET6 as u32))
            .into_iter()
            .filter(|r| local_port(r.dwLocalPort) == port)
            .map(|r| r.dwOwningPid);
        v4.chain(v6).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_zero_is_an_unknown_owner_not_a_process() {
        let text = describe_holders(&[Holder {
            pid: UNKNOWN_OWNER,
            command: holder_command(UNKNOWN_OWNER),
        }]);
        assert!(!text.contains("pid 0 ("), "{text}");
        assert!(text.contains("does not name"), "{text}");
    }

    #[test]
    fn a_gone_owner_names_the_processes_it_started() {
        let text = gone_owner(&[(5678, "C:\\venv\\python.exe".into())]);
        assert!(text.contains("pid 5678 C:\\venv\\python.exe"), "{text}");
        assert!(gone_owner(&[]).contains("nothing it started"));
    }

    #[test]
    fn wsaeacces_without_a_listener_points_at_the_excluded_port_ranges() {
        let text = refusal_message(8001, Some(10013), false).expect("a message for 10013");
        assert!(text.contains("netsh int ipv4 show excludedportrange protocol=tcp"));
        assert!(text.contains("8001"));
        // Someone listens (exclusive bind): that is a held port, said the usual way.
        assert_eq!(refusal_message(8001, Some(10013), true), None);
        assert_eq!(refusal_message(8001, Some(10048), false), None);
        assert_eq!(refusal_message(8001, None, false), None);
    }

    #[tokio::test]
    async fn a_listener_makes_the_port_busy_and_ready() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(!is_free("127.0.0.1", port));
        assert_eq!(probe("127.0.0.1", port, ReadyCheck::Connect).await, Ok(()));
        #[cfg(target_os = "linux")]
        assert!(holders(port).iter().any(|h| h.pid == std::process::id()));
        drop(listener);
        assert!(is_free("127.0.0.1", port));
        assert_eq!(
            probe("127.0.0.1", port, ReadyCheck::Connect).await,
            Err(NotReady::NoListener)
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reads_the_kernels_addresses() {
        use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
        let v4 = linux::parse_address("0100007F");
        assert_eq!(v4, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        let v6 = linux::parse_address("00000000000000000000000001000000");
        assert_eq!(v6, Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        let mapped = linux::parse_address("0000000000000000FFFF00000100007F");
        assert_eq!(mapped, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn finds_a_listener_on_another_address() {
        let Ok(listener) = std::net::TcpListener::bind("[::1]:0") else {
            return; // no IPv6 on this machine: the integration test says so
        };
        let port = listener.local_addr().unwrap().port();
        match explain_no_listener("127.0.0.1", port) {
            NotReady::ListensElsewhere { found, .. } => {
                assert_eq!(found, vec![listener.local_addr().unwrap()])
            }
            other => panic!("{other:?}"),
        }
    }
}

/// Run under Wine by tests-wine/run (`windows_` in the name selects them there).
#[cfg(all(test, windows))]
mod windows_tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// What a loopback control channel (`devrun stop`, `devrun restart`) needs from tokio on
    /// Windows: listen, accept, and talk both ways on 127.0.0.1.
    #[tokio::test]
    async fn windows_tokio_listens_accepts_and_answers_on_loopback() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4];
            stream.read_exact(&mut buf).await.unwrap();
            stream.write_all(b"done").await.unwrap();
            buf
        });
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        client.write_all(b"stop").await.unwrap();
        let mut answer = [0u8; 4];
        client.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"done");
        assert_eq!(&server.await.unwrap(), b"stop");
    }
}
