//! `{port}`, `{host}`, `{ports.NAME}`, `{url}` and `{url.NAME}`: what they stand for in one
//! member's command and env values, and errors that point at the placeholder in the file.

use super::unknown_name;
use crate::config::Inputs;
use crate::error::ConfigError;
use std::collections::BTreeMap;
use toml::Spanned;

/// What `{port}`, `{host}` and `{ports.NAME}` stand for in one member's strings (its command
/// and env values). Other braces are left alone (`{fd}` is the backend's, `{}` someone else's).
pub(in crate::config) struct Placeholders<'a> {
    pub(super) whose: String,
    pub(super) host: &'a str,
    pub(super) own: Option<u16>,
    pub(super) ports: &'a BTreeMap<String, Option<u16>>,
    pub(super) known: &'a [String],
    /// `{fd}`: only in the backend's command (the inherited socket's descriptor).
    pub(super) fd: Option<i32>,
}

/// A placeholder that cannot be filled, and why.
#[derive(Debug)]
pub(in crate::config) struct Unfilled {
    placeholder: String,
    why: String,
}

impl std::fmt::Display for Unfilled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.placeholder, self.why)
    }
}

impl Unfilled {
    /// The error pointing at the placeholder inside the text at `span`.
    pub(in crate::config) fn located(
        &self,
        inputs: &Inputs,
        what: &str,
        span: std::ops::Range<usize>,
    ) -> ConfigError {
        let at = inputs.find_in(span, &self.placeholder);
        inputs.err(Some(at), format!("{what}: {self}"))
    }
}

impl Placeholders<'_> {
    /// `text` with our placeholders filled; `{{` and `}}` stand for a literal `{` and `}`
    /// (as in Python's `str.format`), so `{{port}}` is the text `{port}`.
    pub fn fill(&self, text: &str) -> Result<String, Unfilled> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(brace) = rest.find(['{', '}']) {
            out.push_str(&rest[..brace]);
            let tail = &rest[brace..];
            if tail.starts_with("{{") || tail.starts_with("}}") {
                out.push_str(&tail[..1]);
                rest = &tail[2..];
                continue;
            }
            if let Some(after) = tail.strip_prefix('}') {
                out.push('}');
                rest = after;
                continue;
            }
            let Some(close) = tail.find('}') else {
                out.push_str(tail);
                return Ok(out);
            };
            match self.value(&tail[1..close]) {
                Some(Ok(value)) => {
                    out.push_str(&value);
                    rest = &tail[close + 1..];
                }
                Some(Err(why)) => {
                    return Err(Unfilled {
                        placeholder: tail[..=close].to_string(),
                        why,
                    })
                }
                None => {
                    out.push('{');
                    rest = &tail[1..];
                }
            }
        }
        out.push_str(rest);
        Ok(out)
    }

    /// A string value filled, an error pointing at the placeholder in the file.
    pub fn fill_spanned(
        &self,
        inputs: &Inputs,
        what: &str,
        value: &Spanned<String>,
    ) -> Result<String, ConfigError> {
        self.fill(value.get_ref())
            .map_err(|unfilled| unfilled.located(inputs, what, value.span()))
    }

    fn url(&self, port: &str) -> String {
        let port = port.parse().unwrap_or_default();
        crate::port::browser_url(self.host, port)
    }

    /// The value of `{inner}`: None when it is not one of ours.
    fn value(&self, inner: &str) -> Option<Result<String, String>> {
        match inner {
            "host" => Some(Ok(self.host.to_string())),
            "fd" => self.fd.map(|fd| Ok(fd.to_string())),
            "port" => Some(self.own.map(|p| p.to_string()).ok_or_else(|| {
                format!(
                    "{} has no port (give it `port = N` or `port = \"auto\"`)",
                    self.whose
                )
            })),
            // The address a browser uses (`http://localhost:PORT` on loopback): the one a
            // frontend must be told for CORS to accept it (see `port::browser_url`).
            "url" => Some(self.value("port")?.map(|p| self.url(&p))),
            _ => {
                let (name, url) = match inner.strip_prefix("url.") {
                    Some(name) => (name, true),
                    None => (inner.strip_prefix("ports.")?, false),
                };
                Some(match self.ports.get(name) {
                    Some(Some(port)) if url => Ok(self.url(&port.to_string())),
                    Some(Some(port)) => Ok(port.to_string()),
                    Some(None) => Err(format!(
                        "{name} has no port (give it `port = N` or `port = \"auto\"`)"
                    )),
                    None => Err(unknown_name(name, self.known)),
                })
            }
        }
    }
}
