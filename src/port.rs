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

/// The address to bind for the free-port probe.
fn bind_addr(host: &str, port: u16) -> io::Result<SocketAddr> {
    (host, port).to_socket_addrs()?.next().ok_or_else(|| {
        io::Error::new(io::ErrorKind::NotFound, format!("cannot resolve host {host:?}"))
    })
}

/// The address to connect to for readiness: a wildcard host is reached on loopback.
fn connect_addr(host: &str, port: u16) -> io::Result<SocketAddr> {
    let addr = bind_addr(host, port)?;
    Ok(match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port),
        _ => addr,
    })
}

/// Free = a server could bind host:port now and nothing listens on the port on any address.
/// Bind probes answer in microseconds, where reading /proc/net/tcp can take milliseconds.
pub fn is_free(host: &str, port: u16) -> bool {
    let Ok(addr) = bind_addr(host, port) else {
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

/// Whether this machine can make IPv6 sockets at all (containers often can't).
#[cfg(unix)]
fn ipv6_available() -> bool {
    socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None)
        .and_then(|s| s.bind(&SocketAddr::new(Ipv6Addr::LOCALHOST.into(), 0).into()))
        .is_ok()
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

/// Every process with a listening socket on `port` (empty where the OS doesn't tell us).
pub fn holders(port: u16) -> Vec<Holder> {
    #[cfg(target_os = "linux")]
    {
        linux::holders(port)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = port;
        Vec::new()
    }
}

/// "pid 123 (python -m http.server 8001), pid 456 (…)" or a plain "another process".
pub fn describe_holders(holders: &[Holder]) -> String {
    if holders.is_empty() {
        return "another process".to_string();
    }
    holders
        .iter()
        .map(|h| format!("pid {} ({})", h.pid, h.command))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why the backend is not ready (yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotReady {
    /// Nothing accepted a connection.
    NoListener,
    /// The ready path answered with a non-2xx status.
    Status(u16),
    /// Connected, but no valid HTTP answer.
    BadAnswer(String),
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotReady::NoListener => write!(f, "nothing accepted a connection"),
            NotReady::Status(code) => write!(f, "the health check returned HTTP {code}"),
            NotReady::BadAnswer(why) => write!(f, "no valid HTTP answer ({why})"),
        }
    }
}

/// One readiness probe: a TCP connect, or GET `http_path` → 2xx.
pub async fn probe(host: &str, port: u16, http_path: Option<&str>) -> Result<(), NotReady> {
    let addr = connect_addr(host, port).map_err(|e| NotReady::BadAnswer(e.to_string()))?;
    let connect = tokio::net::TcpStream::connect(addr);
    let mut stream = match tokio::time::timeout(Duration::from_secs(1), connect).await {
        Ok(Ok(stream)) => stream,
        _ => return Err(NotReady::NoListener),
    };
    let Some(path) = http_path else {
        return Ok(());
    };
    let status = tokio::time::timeout(Duration::from_secs(5), http_status(&mut stream, host, port, path))
        .await
        .map_err(|_| NotReady::BadAnswer("timed out".into()))?
        .map_err(|e| NotReady::BadAnswer(e.to_string()))?;
    if (200..300).contains(&status) {
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
    let status = line.split_whitespace().nth(1).and_then(|code| code.parse::<u16>().ok());
    match (line.starts_with("HTTP/"), status) {
        (true, Some(status)) => Ok(status),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not an HTTP status line: {:?}", line.lines().next().unwrap_or("")),
        )),
    }
}

/// Probes until ready. Ok(time taken) or, after `timeout`, the last reason it was not.
pub async fn wait_ready(
    host: &str,
    port: u16,
    http_path: Option<&str>,
    timeout: Duration,
) -> Result<Duration, NotReady> {
    let start = Instant::now();
    loop {
        match probe(host, port, http_path).await {
            Ok(()) => return Ok(start.elapsed()),
            Err(reason) if start.elapsed() >= timeout => return Err(reason),
            Err(_) => {}
        }
        // Fast at first: readiness is on the restart path the user waits for.
        let pause = if start.elapsed() < Duration::from_secs(3) { 5 } else { 50 };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

#[cfg(target_os = "linux")]
mod linux {
    //! Listening sockets from /proc/net/tcp{,6}, their owners from /proc/PID/fd.

    use super::Holder;
    use std::collections::HashSet;

    const TCP_LISTEN: &str = "0A";

    /// Socket inodes in LISTEN state on `port`, any address, IPv4 or IPv6.
    fn listen_inodes(port: u16) -> HashSet<u64> {
        let mut inodes = HashSet::new();
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
                let local_port = local
                    .rsplit(':')
                    .next()
                    .and_then(|hex| u16::from_str_radix(hex, 16).ok());
                if *state == TCP_LISTEN && local_port == Some(port) {
                    if let Ok(inode) = inode.parse() {
                        inodes.insert(inode);
                    }
                }
            }
        }
        inodes
    }

    pub fn holders(port: u16) -> Vec<Holder> {
        let inodes = listen_inodes(port);
        if inodes.is_empty() {
            return Vec::new();
        }
        let targets: HashSet<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
        let mut holders = Vec::new();
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return holders;
        };
        for entry in procs.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
                continue;
            };
            let holds = fds.flatten().any(|fd| {
                std::fs::read_link(fd.path())
                    .map(|link| targets.contains(link.to_string_lossy().as_ref()))
                    .unwrap_or(false)
            });
            if holds {
                holders.push(Holder {
                    pid,
                    command: command_line(pid),
                });
            }
        }
        holders
    }

    pub fn command_line(pid: u32) -> String {
        match std::fs::read(format!("/proc/{pid}/cmdline")) {
            Ok(raw) if !raw.is_empty() => raw
                .split(|b| *b == 0)
                .filter(|part| !part.is_empty())
                .map(|part| String::from_utf8_lossy(part).into_owned())
                .collect::<Vec<_>>()
                .join(" "),
            _ => std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|comm| format!("[{}]", comm.trim()))
                .unwrap_or_else(|_| "?".to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_listener_makes_the_port_busy_and_ready() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(!is_free("127.0.0.1", port));
        assert_eq!(probe("127.0.0.1", port, None).await, Ok(()));
        #[cfg(target_os = "linux")]
        assert!(holders(port).iter().any(|h| h.pid == std::process::id()));
        drop(listener);
        assert!(is_free("127.0.0.1", port));
        assert_eq!(probe("127.0.0.1", port, None).await, Err(NotReady::NoListener));
    }
}
