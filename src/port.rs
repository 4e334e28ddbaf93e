//! The port: is it free, who holds it, is the backend ready on it.

use crate::sys;
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
    if sys::WILDCARD_BIND_CONFLICTS {
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
    if sys::REUSE_ADDRESS && socket.set_reuse_address(true).is_err() {
        return false;
    }
    if addr.is_ipv6() {
        let _ = socket.set_only_v6(true);
    }
    socket.bind(&addr.into()).is_ok()
}

/// Whether this machine can make IPv6 sockets at all (containers often can't). Asked once:
/// `is_free` runs in the poll loops of every restart.
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
    if sys::REUSE_ADDRESS {
        socket.set_reuse_address(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(2048)?;
    Ok(socket)
}

/// The processes but devrun itself that hold a listening socket on the port (empty where the
/// OS won't say: then the confirmed end of the old generation's processes has to answer).
/// Err when the system could not be read: then nobody is known *not* to hold it.
pub fn held_by_others(port: u16) -> std::io::Result<Vec<Holder>> {
    let me = std::process::id();
    let mut pids = sys::listener_pids_checked(port)?;
    pids.retain(|pid| *pid != me);
    Ok(named(pids))
}

/// The one poll-until-deadline loop (a port free, a backend ready, a state file written): asks
/// `done()` until it says yes, sleeping `interval(elapsed)` between asks. Ok(time taken), or
/// Err(time taken) once `done()` still said no after `timeout`.
pub async fn wait_until(
    mut done: impl AsyncFnMut() -> bool,
    timeout: Duration,
    interval: impl Fn(Duration) -> Duration,
) -> Result<Duration, Duration> {
    let start = Instant::now();
    loop {
        if done().await {
            return Ok(start.elapsed());
        }
        if start.elapsed() >= timeout {
            return Err(start.elapsed());
        }
        tokio::time::sleep(interval(start.elapsed())).await;
    }
}

/// The pace of the waits that follow a stop (the escalation's, the port's release): fast while
/// it is likely to finish soon, slower when the backend takes its time.
pub fn poll_interval(elapsed: Duration) -> Duration {
    match elapsed.as_millis() {
        0..=100 => Duration::from_millis(1),
        101..=1000 => Duration::from_millis(5),
        _ => Duration::from_millis(20),
    }
}

/// Waits until the port is free. Ok(waited) or Err(waited) after `timeout`.
pub async fn wait_free(host: &str, port: u16, timeout: Duration) -> Result<Duration, Duration> {
    wait_until(async || is_free(host, port), timeout, poll_interval).await
}

/// The pid a TCP table reports when it does not know the owner (Windows shows 0 for sockets of
/// some system services, Wine for every socket). Never a process devrun could signal.
pub const UNKNOWN_OWNER: u32 = 0;

/// Every process with a listening socket on `port`, any address (empty where the OS won't say).
pub fn holders(port: u16) -> Vec<Holder> {
    named(sys::listener_pids(port))
}

/// Each owner once, with its command line.
fn named(mut pids: Vec<u32>) -> Vec<Holder> {
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
    // Only where a socket is listed under a pid that is gone is there an heir to look for.
    if !sys::SOCKETS_OUTLIVE_OWNER || crate::procs::running(pid) {
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

/// Why the port cannot be bound when no process listens on it: connections the kernel is still
/// closing (FIN_WAIT2, TIME_WAIT, …) that no process owns any more, e.g. "1 closing connection
/// (FIN_WAIT2)". None when a process holds a socket on it, or where the OS won't say.
pub fn closing_only(port: u16) -> Option<String> {
    sys::closing_only(port)
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

/// The address a browser uses for a server on `host`:`port` (and so the origin CORS checks):
/// `http://localhost:PORT` when the server listens on loopback (127.0.0.1, ::1, `localhost`)
/// or on every address (0.0.0.0, ::), since frameworks' CORS defaults and docs name
/// `http://localhost:5173`; else the host itself (an IPv6 address in brackets).
pub fn browser_url(host: &str, port: u16) -> String {
    let loopback = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback() || ip.is_unspecified(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    };
    match (loopback, host.contains(':')) {
        (true, _) => format!("http://localhost:{port}"),
        (false, true) => format!("http://[{host}]:{port}"),
        (false, false) => format!("http://{host}:{port}"),
    }
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
    let found: Vec<SocketAddr> = sys::listen_addresses(port)
        .into_iter()
        .filter(|addr| addr.ip() != tried.ip())
        .collect();
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
    let mut last = NotReady::NoListener;
    // A 4xx is the app's answer (no such route, not allowed): waiting cannot change it, so
    // it ends the wait at once. A 5xx may be an app still starting (503): waited out.
    let mut answered = false;
    let probed = async || match probe(host, port, check).await {
        Ok(()) => true,
        Err(reason) => {
            answered = matches!(reason, NotReady::Status(code) if (400..500).contains(&code));
            last = reason;
            answered
        }
    };
    match wait_until(probed, timeout, ready_interval).await {
        Ok(_) if answered => Err(last),
        Ok(taken) => Ok(taken),
        Err(_) if last == NotReady::NoListener => Err(explain_no_listener(host, port)),
        Err(_) => Err(last),
    }
}

/// Fast at first: readiness is on the restart path the user waits for.
fn ready_interval(elapsed: Duration) -> Duration {
    match elapsed < Duration::from_secs(3) {
        true => Duration::from_millis(5),
        false => Duration::from_millis(50),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browser_urls_name_localhost_for_loopback_and_wildcard_hosts() {
        assert_eq!(browser_url("127.0.0.1", 8001), "http://localhost:8001");
        assert_eq!(browser_url("::1", 8001), "http://localhost:8001");
        assert_eq!(browser_url("0.0.0.0", 8001), "http://localhost:8001");
        assert_eq!(browser_url("localhost", 8001), "http://localhost:8001");
        assert_eq!(browser_url("192.0.2.7", 80), "http://192.0.2.7:80");
        assert_eq!(browser_url("fe80::1", 80), "http://[fe80::1]:80");
        assert_eq!(browser_url("devbox.lan", 80), "http://devbox.lan:80");
    }

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
    async fn waits_until_the_predicate_holds_or_the_time_is_up() {
        let mut asked = 0;
        let third = async || {
            asked += 1;
            asked == 3
        };
        let fast = |_| Duration::from_millis(1);
        assert!(wait_until(third, Duration::from_secs(5), fast)
            .await
            .is_ok());
        assert_eq!(asked, 3, "asked until it said yes, not after");
        let limit = Duration::from_millis(20);
        let waited = wait_until(async || false, limit, fast).await;
        assert!(waited.is_err_and(|waited| waited >= limit));
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
