//! The dotenv syntax around `dotenvy`'s parser, for what it does not tell: where each entry
//! starts (its 1-based line), its key, what is wrong with a line it refused, and how large
//! `${VAR}` expansion would make a value. Nothing here ever returns a value's text.

/// One entry as `dotenvy` reads it: a line, or several when a quoted value spans lines.
pub(super) struct Entry<'a> {
    /// 1-based line where the entry starts.
    pub line: usize,
    pub text: &'a str,
}

impl Entry<'_> {
    /// Empty lines and comments: `dotenvy` yields nothing for them.
    pub fn is_blank(&self) -> bool {
        let t = self.text.trim_start();
        t.is_empty() || t.starts_with('#')
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Quote {
    Complete,
    Escape,
    Strong,
    StrongEscape,
    Weak,
    WeakEscape,
    Space,
}

/// Splits `text` into entries exactly where `dotenvy` does (its `QuotedLines`): a line ends an
/// entry unless a quote is still open; a `#` after whitespace ends it too.
pub(super) fn entries(text: &str) -> Vec<Entry<'_>> {
    let mut out = Vec::new();
    let (mut start, mut line, mut state) = (0, 1, Quote::Complete);
    let mut at = 0;
    while at < text.len() {
        let end = text[at..].find('\n').map_or(text.len(), |i| at + i + 1);
        let physical = &text[at..end];
        let comment = text[start..end].trim_start().starts_with('#');
        let (cut, next) = if comment {
            (None, Quote::Complete)
        } else {
            scan(state, physical)
        };
        state = next;
        if comment || cut.is_some() || state == Quote::Complete || end == text.len() {
            let stop = cut.map_or(end, |c| at + c);
            out.push(Entry {
                line,
                text: text[start..stop].trim_end_matches(['\n', '\r']),
            });
            line += text[start..end].matches('\n').count();
            start = end;
            state = Quote::Complete;
        }
        at = end;
    }
    out
}

/// `dotenvy`'s `eval_end_state`: the quote state after `piece`, and where a comment cuts it.
fn scan(mut state: Quote, piece: &str) -> (Option<usize>, Quote) {
    for (pos, c) in piece.char_indices() {
        state = match state {
            Quote::Space if c == '#' => return (Some(pos), Quote::Complete),
            Quote::Space | Quote::Complete => match c {
                '\\' => Quote::Escape,
                '"' => Quote::Weak,
                '\'' => Quote::Strong,
                c if state == Quote::Complete && c.is_whitespace() && c != '\n' && c != '\r' => {
                    Quote::Space
                }
                _ => Quote::Complete,
            },
            Quote::Escape => Quote::Complete,
            Quote::Weak => match c {
                '\\' => Quote::WeakEscape,
                '"' => Quote::Complete,
                _ => Quote::Weak,
            },
            Quote::WeakEscape => Quote::Weak,
            Quote::Strong => match c {
                '\\' => Quote::StrongEscape,
                '\'' => Quote::Complete,
                _ => Quote::Strong,
            },
            Quote::StrongEscape => Quote::Strong,
        };
    }
    (None, state)
}

/// The entry's key (after an optional `export`), if it starts with one.
pub(super) fn key(entry: &str) -> Option<&str> {
    let t = entry.trim_start();
    let t = match t.strip_prefix("export") {
        Some(rest) if rest.starts_with([' ', '\t']) => rest.trim_start(),
        _ => t,
    };
    if !t.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        return None;
    }
    let end = t
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .unwrap_or(t.len());
    Some(&t[..end])
}

/// What is wrong with an entry `dotenvy` refused, in words that quote none of its value.
pub(super) fn what_is_wrong(entry: &str) -> &'static str {
    let Some(key) = key(entry) else {
        return "expected a variable name (letters, digits, `_`, `.`) at the start of the line";
    };
    let after = &entry[entry.find(key).map_or(0, |i| i + key.len())..];
    let Some(value) = after.trim_start().strip_prefix('=') else {
        return "expected `=` after the name";
    };
    value_problem(value.trim())
}

/// `dotenvy`'s `parse_value`, reduced to finding what makes a value unparsable.
fn value_problem(value: &str) -> &'static str {
    let (mut strong, mut weak, mut escaped, mut ended, mut block) =
        (false, false, false, false, false);
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        if ended {
            match c {
                ' ' | '\t' => continue,
                '#' => break,
                _ => return "a space inside an unquoted value (put the value in quotes)",
            }
        } else if escaped {
            if !matches!(c, '\\' | '\'' | '"' | '$' | ' ' | 'n') {
                return "an unsupported backslash escape (only \\\\ \\' \\\" \\$ \\n and \\ + space)";
            }
            escaped = false;
        } else if strong {
            strong = c != '\'';
        } else if block {
            block = c != '}';
        } else if c == '$' && chars.peek() == Some(&'{') {
            chars.next();
            block = true;
        } else if weak {
            match c {
                '"' => weak = false,
                '\\' => escaped = true,
                _ => {}
            }
        } else {
            match c {
                '\'' => strong = true,
                '"' => weak = true,
                '\\' => escaped = true,
                ' ' | '\t' => ended = true,
                _ => {}
            }
        }
    }
    if strong {
        "a single quote is never closed"
    } else if weak {
        "a double quote is never closed"
    } else if block {
        "a `${` is never closed with `}`"
    } else {
        "the value cannot be parsed"
    }
}

/// The names `dotenvy` would substitute in `entry` (`$NAME`, `${NAME}`), quotes aside: an
/// upper bound, for bounding the expanded size before `dotenvy` builds it.
pub(super) fn references(entry: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = entry;
    while let Some(i) = rest.find('$') {
        rest = &rest[i + 1..];
        let name = match rest.strip_prefix('{') {
            Some(inner) => &inner[..inner.find('}').unwrap_or(inner.len())],
            None => {
                &rest[..rest
                    .find(|c: char| !c.is_alphanumeric())
                    .unwrap_or(rest.len())]
            }
        };
        if !name.is_empty() {
            names.push(name);
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_start_on_their_own_line_even_after_a_multiline_value() {
        let text = "# c\nA=1\n\nB=\"two\nlines\"\nC=3 # note\n  \nD='x\n";
        let got: Vec<(usize, &str)> = entries(text).iter().map(|e| (e.line, e.text)).collect();
        assert_eq!(
            got,
            [
                (1, "# c"),
                (2, "A=1"),
                (3, ""),
                (4, "B=\"two\nlines\""),
                (6, "C=3 "),
                (7, "  "),
                (8, "D='x"),
            ]
        );
    }

    #[test]
    fn what_is_wrong_never_quotes_the_value() {
        let cases = [
            (
                "URL=\"postgres://app:SECRET@db",
                "double quote is never closed",
            ),
            ("export URL='SECRET", "single quote is never closed"),
            ("URL=a${SECRET", "`${` is never closed"),
            ("URL=SECRET word", "space inside an unquoted value"),
            ("URL=\"SE\\qCRET\"", "backslash escape"),
            ("9URL=SECRET", "expected a variable name"),
            ("URL SECRET", "expected `=`"),
        ];
        for (line, wanted) in cases {
            let said = what_is_wrong(line);
            assert!(said.contains(wanted), "{line}: {said}");
            assert!(!said.contains("SECRET"), "{said}");
        }
        assert_eq!(key("export URL='x"), Some("URL"));
        assert_eq!(references("A=$B${C}x '$D_E'"), ["B", "C", "D"]);
    }
}
