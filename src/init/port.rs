//! The port written into the config, and where it came from.

use super::detect::Detected;
use super::scan::read_source;
use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;

/// Where a free port is looked for when none is evident.
const PORT_RANGE: std::ops::RangeInclusive<u16> = 8000..=8099;

/// The port to write and a comment saying where it came from.
pub(super) fn choose_port(dir: &Path, app: &Detected, env_file: Option<&str>) -> (u16, String) {
    if let Some(file) = app.app_file() {
        if let Some(port) = read_source(file).as_deref().and_then(port_keyword) {
            let shown = file.strip_prefix(dir).unwrap_or(file).display().to_string();
            return (port, format!("port={port} in {shown}"));
        }
    }
    let env_file = env_file.unwrap_or(".env");
    if let Some(port) = read_source(&dir.join(env_file))
        .as_deref()
        .and_then(dotenv_port)
    {
        return (port, format!("PORT={port} in {env_file}"));
    }
    match free_port() {
        Some(port) => (
            port,
            "a port that was free when devrun init ran".to_string(),
        ),
        None => (
            *PORT_RANGE.start(),
            "no port of 8000-8099 was free when devrun init ran; change it if needed".to_string(),
        ),
    }
}

/// The first `port=NNNN` / `port = NNNN` keyword or assignment in `source` (not `import`,
/// not `db_port`, not `port == 1`), outside comment lines.
fn port_keyword(source: &str) -> Option<u16> {
    for line in source.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let mut from = 0;
        while let Some(at) = line[from..].find("port") {
            let start = from + at;
            let end = start + "port".len();
            from = end;
            let preceded = line[..start]
                .chars()
                .next_back()
                .is_some_and(|c| c == '_' || c == '.' || c.is_alphanumeric());
            if preceded {
                continue;
            }
            let rest = line[end..].trim_start();
            let Some(rest) = rest.strip_prefix('=') else {
                continue;
            };
            if rest.starts_with('=') {
                continue;
            }
            if let Some(port) = leading_port(rest.trim_start()) {
                return Some(port);
            }
        }
    }
    None
}

/// `PORT=8001` (also `export PORT=8001`, `PORT = "8001"`) in a `.env` file.
fn dotenv_port(source: &str) -> Option<u16> {
    source.lines().find_map(|line| {
        let line = line.trim();
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let (key, value) = line.split_once('=')?;
        if key.trim() != "PORT" {
            return None;
        }
        let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
        leading_port(value)
    })
}

/// A port number at the start of `text`, ended by a non-identifier character.
fn leading_port(text: &str) -> Option<u16> {
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let after = text[digits_end..].chars().next();
    if digits_end == 0 || after.is_some_and(|c| c == '_' || c == '.' || c.is_alphanumeric()) {
        return None;
    }
    text[..digits_end].parse::<u16>().ok().filter(|&p| p > 0)
}

/// The first port of [`PORT_RANGE`] that can be bound on 127.0.0.1 right now.
fn free_port() -> Option<u16> {
    PORT_RANGE
        .into_iter()
        .find(|&port| TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        assert_eq!(
            port_keyword("uvicorn.run(app, host='0.0.0.0', port=8001)"),
            Some(8001)
        );
        assert_eq!(
            port_keyword("    app.run(debug=True, port = 5001)"),
            Some(5001)
        );
        assert_eq!(port_keyword("from x import port\nDB_port = 5432\n"), None);
        assert_eq!(port_keyword("if port == 80: pass"), None);
        assert_eq!(port_keyword("# run(port=9000)"), None);
        assert_eq!(port_keyword("run(port=int(os.environ['PORT']))"), None);
        assert_eq!(port_keyword("run(port=80000)"), None);
        assert_eq!(dotenv_port("DEBUG=1\nPORT=8002\n"), Some(8002));
        assert_eq!(dotenv_port("export PORT = \"8003\"\n"), Some(8003));
        assert_eq!(dotenv_port("DB_PORT=5432\n"), None);
    }
}
