//! `env_file` / `--env-file`: a dotenv file's variables for the backend, read with the
//! maintained `dotenvy` parser. Precedence (README): devrun's own environment < env file <
//! `[env]`. The file is read again before every generation, so an edit (which the watch turns
//! into a restart) takes effect, and the status line names the keys that changed, never values.

use std::collections::BTreeMap;
use std::path::Path;

pub type Vars = BTreeMap<String, String>;

/// The file's variables, or an error naming the file (and the line, for a syntax error).
pub fn read(path: &Path, shown: &str) -> Result<Vars, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("env file {shown}: {e}"))?;
    let mut vars = Vars::new();
    for item in dotenvy::from_read_iter(text.as_bytes()) {
        match item {
            Ok((key, value)) => {
                vars.insert(key, value);
            }
            Err(dotenvy::Error::LineParse(line, index)) => {
                return Err(format!(
                    "{shown}:{}: cannot parse {:?} (at character {})",
                    line_number(&text, &line),
                    crate::ui::shorten(line.lines().next().unwrap_or("")),
                    index + 1
                ));
            }
            Err(e) => return Err(format!("env file {shown}: {e}")),
        }
    }
    Ok(vars)
}

/// Where `line` (the parser's text of the bad entry) starts in `text`, 1-based.
fn line_number(text: &str, line: &str) -> usize {
    let first = line.lines().next().unwrap_or("").trim();
    text.lines()
        .position(|l| !first.is_empty() && l.trim() == first)
        .map_or(1, |i| i + 1)
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
        assert!(e.starts_with(".env:3:"), "{e}");
        let e = read(&dir.path().join("nope"), "nope").unwrap_err();
        assert!(e.starts_with("env file nope:"), "{e}");
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
