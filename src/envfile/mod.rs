//! `env_file` / `--env-file`: a dotenv file's variables for the backend, read with the
//! maintained `dotenvy` parser. Precedence (README): devrun's own environment < env file <
//! `[env]`. The file is read again before every generation, so an edit (which the watch turns
//! into a restart) takes effect, and the status line names the keys that changed, never values.
//!
//! The file may hold secrets and may be anything by the time it is read (a named pipe with no
//! writer, `/dev/zero`, a symlink to a file of another user): no message ever quotes a value
//! (only file, line, key and what is wrong), only a regular file is read, at most
//! [`MAX_BYTES`] of it and of its `${VAR}`-expanded values, in a thread, with a deadline.

mod syntax;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub type Vars = BTreeMap<String, String>;

/// The most devrun reads of an env file, and the most its values may hold after expansion.
pub const MAX_BYTES: usize = 1 << 20;

/// How long a read may take before devrun gives up on it (a file on a hung network mount, or
/// one swapped for a named pipe between the check and the open).
pub const DEADLINE: Duration = Duration::from_secs(5);

/// The file's variables, read in a thread and waited for at most [`DEADLINE`] (for config
/// load, before the supervisor runs).
pub fn read(path: &Path, shown: &str) -> Result<Vars, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    in_thread(path, shown, move |result| drop(tx.send(result)))?;
    rx.recv_timeout(DEADLINE)
        .unwrap_or_else(|_| Err(too_slow(shown)))
}

/// [`read`] for the supervisor's loop: the read never blocks it, so a request (Ctrl-C) can
/// end the wait.
pub async fn read_async(path: &Path, shown: &str) -> Result<Vars, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    in_thread(path, shown, move |result| drop(tx.send(result)))?;
    match tokio::time::timeout(DEADLINE, rx).await {
        Ok(Ok(result)) => result,
        _ => Err(too_slow(shown)),
    }
}

fn too_slow(shown: &str) -> String {
    format!(
        "env file {shown}: not read within {} s (a named pipe, or a hung mount?)",
        DEADLINE.as_secs()
    )
}

/// Reads in a thread of its own, never joined: one stuck in `open` (a named pipe swapped in
/// after the check) must not keep devrun from exiting.
fn in_thread(
    path: &Path,
    shown: &str,
    send: impl FnOnce(Result<Vars, String>) + Send + 'static,
) -> Result<(), String> {
    let (path, shown_owned): (PathBuf, String) = (path.to_path_buf(), shown.to_string());
    std::thread::Builder::new()
        .name("env-file".into())
        .spawn(move || send(load(&path, &shown_owned)))
        .map(drop)
        .map_err(|e| format!("env file {shown}: cannot start a thread to read it: {e}"))
}

/// Only a regular file (a symlink to one is fine), at most [`MAX_BYTES`].
fn load(path: &Path, shown: &str) -> Result<Vars, String> {
    let fail = |e: std::io::Error| format!("env file {shown}: {e}");
    let regular = |meta: &std::fs::Metadata| {
        if meta.is_file() {
            Ok(())
        } else if meta.is_dir() {
            Err(format!("env file {shown}: is a folder, not a file"))
        } else {
            Err(format!(
                "env file {shown}: not a regular file (a named pipe, a device or a socket); \
                 devrun reads only a regular file"
            ))
        }
    };
    let too_large = || format!("env file {shown}: larger than {} MiB", MAX_BYTES >> 20);
    let meta = std::fs::metadata(path).map_err(fail)?;
    regular(&meta)?;
    if meta.len() > MAX_BYTES as u64 {
        return Err(too_large());
    }
    let file = std::fs::File::open(path).map_err(fail)?;
    // It may have been swapped since the check: what was opened is what counts.
    regular(&file.metadata().map_err(fail)?)?;
    let mut bytes = Vec::new();
    file.take(MAX_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(fail)?;
    if bytes.len() > MAX_BYTES {
        return Err(too_large());
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        format!(
            "env file {shown}: not UTF-8 text (at byte {})",
            e.utf8_error().valid_up_to()
        )
    })?;
    parse(text.strip_prefix('\u{feff}').unwrap_or(&text), shown)
}

/// `dotenvy`'s reading of `text`, one entry at a time: before each, its expanded size is
/// bounded (so doubling lines cannot exhaust memory), and an error names the entry's line and
/// key, never its text.
fn parse(text: &str, shown: &str) -> Result<Vars, String> {
    let mut parsed = dotenvy::from_read_iter(text.as_bytes());
    let mut vars = Vars::new();
    let mut total = 0;
    for entry in syntax::entries(text).iter().filter(|e| !e.is_blank()) {
        let key = syntax::key(entry.text).unwrap_or("(no name)");
        let at = |what: &str| format!("{shown}:{}: {key}: {what} (value not shown)", entry.line);
        let expanded: usize = syntax::references(entry.text)
            .iter()
            .map(|name| match std::env::var(name) {
                Ok(value) => value.len(),
                Err(_) => vars.get(*name).map_or(0, String::len),
            })
            .sum();
        let replaced = vars.get(key).map_or(0, String::len);
        if total - replaced + entry.text.len() + expanded > MAX_BYTES {
            return Err(at(&format!(
                "`${{VAR}}` expansion would make the values larger than {} MiB",
                MAX_BYTES >> 20
            )));
        }
        match parsed.next() {
            Some(Ok((_, value))) if value.contains('\0') => {
                return Err(at(
                    "the value contains a NUL byte, which no process can be given",
                ))
            }
            Some(Ok((key, value))) => {
                total += value.len();
                if let Some(old) = vars.insert(key, value) {
                    total -= old.len();
                }
            }
            Some(Err(dotenvy::Error::LineParse(..))) => {
                return Err(at(syntax::what_is_wrong(entry.text)))
            }
            // Not a syntax error (this error's text never quotes the file).
            Some(Err(e)) => return Err(format!("env file {shown}: {e}")),
            None => break,
        }
    }
    Ok(vars)
}

/// Keys added, removed or given another value, sorted.
pub fn changed_keys(old: &Vars, new: &Vars) -> Vec<String> {
    let mut keys: Vec<String> = old
        .keys()
        .chain(new.keys())
        .filter(|k| old.get(*k) != new.get(*k))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_values_and_locates_syntax_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(".env");
        std::fs::write(&file, "# c\nA=1\nexport B=\"two words\"\n").unwrap();
        let vars = read(&file, ".env").unwrap();
        assert_eq!(vars.get("B").map(String::as_str), Some("two words"));
        std::fs::write(&file, "A=1\n\nB C=2\n").unwrap();
        let e = read(&file, ".env").unwrap_err();
        assert!(e.starts_with(".env:3: B: expected `=`"), "{e}");
        let e = read(&dir.path().join("nope"), "nope").unwrap_err();
        assert!(e.starts_with("env file nope:"), "{e}");
    }

    #[test]
    fn a_syntax_error_names_line_and_key_never_the_value() {
        let text =
            "A=1\nB=\"multi\nline\"\n# c\n\nDATABASE_URL=\"postgres://app:SECRET@db/app\nC=2\n";
        let e = parse(text, ".env").unwrap_err();
        assert_eq!(
            e,
            ".env:6: DATABASE_URL: a double quote is never closed (value not shown)"
        );
        let e = parse("A=1\nTOKEN=SE\0CRET\n", ".env").unwrap_err();
        assert_eq!(e, ".env:2: TOKEN: the value contains a NUL byte, which no process can be given (value not shown)");
        let e = parse("A=1\nTOKEN=SECRET more\n", ".env").unwrap_err();
        assert!(e.starts_with(".env:2: TOKEN: a space inside"), "{e}");
        assert!(!e.contains("SECRET"), "{e}");
    }

    #[test]
    fn doubling_expansion_is_an_error_not_an_abort() {
        let mut text = String::from("A=xxxxxxxx\n");
        for _ in 0..31 {
            text.push_str("A=${A}${A}\n");
        }
        let e = parse(&text, ".env").unwrap_err();
        assert!(e.contains(": A: `${VAR}` expansion would make"), "{e}");
        let vars = parse("A=ab\nB=${A}${A}\n", ".env").unwrap();
        assert_eq!(vars.get("B").map(String::as_str), Some("abab"));
    }

    #[test]
    fn only_a_bounded_regular_file_is_read() {
        let e = read(Path::new("/dev/zero"), "/dev/zero").unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let e = read(dir.path(), "dir").unwrap_err();
        assert!(e.contains("is a folder"), "{e}");
        let big = dir.path().join("big.env");
        std::fs::write(&big, "A=1\n".repeat(MAX_BYTES / 4 + 1)).unwrap();
        let e = read(&big, "big.env").unwrap_err();
        assert!(e.contains("larger than 1 MiB"), "{e}");
    }

    #[test]
    fn changed_keys_names_added_removed_and_changed() {
        let old: Vars = [("A", "1"), ("B", "2"), ("C", "3")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into();
        let new: Vars = [("A", "1"), ("B", "9"), ("D", "4")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into();
        assert_eq!(changed_keys(&old, &new), ["B", "C", "D"]);
    }
}
