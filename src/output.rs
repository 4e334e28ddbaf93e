//! What the supervised processes write, on its way to devrun's stdout and stderr.
//!
//! The backend alone keeps its output as it is (stdout untouched; stderr copied byte for byte).
//! In a stack (`[processes.NAME]`) every member's lines are prefixed with its name, padded to
//! the longest name and in a colour of its own, so interleaved output still says who wrote it.

use std::io::{PipeReader, Read, Write};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Colours the members' names cycle through (the status lines' own colours left out).
const COLOURS: [console::Color; 5] = [
    console::Color::Cyan,
    console::Color::Magenta,
    console::Color::Blue,
    console::Color::Yellow,
    console::Color::Green,
];

/// The prefix of one member's lines: `name   | `.
#[derive(Debug, Clone)]
pub struct Label(Arc<[u8]>);

impl Label {
    /// The `index`-th member's prefix, its name padded to `width`.
    pub fn new(name: &str, width: usize, index: usize, colour: bool) -> Label {
        let style = console::Style::new()
            .fg(COLOURS[index % COLOURS.len()])
            .force_styling(colour);
        let text = format!("{} | ", style.apply_to(format!("{name:<width$}")));
        Label(text.into_bytes().into())
    }
}

/// Where copied output goes.
#[derive(Debug, Clone, Copy)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Copies `pipe` to devrun's `stream` on a thread of its own (an output nobody reads blocks the
/// process as it did when it wrote there itself, never devrun): unchanged without a label,
/// else line by line with the label in front. `tail` gets the raw bytes (crash summaries).
/// The receiver turns true at the pipe's end.
pub fn copy(
    mut pipe: PipeReader,
    stream: Stream,
    label: Option<Label>,
    tail: Option<Arc<Mutex<Vec<u8>>>>,
) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    let _ = std::thread::Builder::new()
        .name("devrun-output".into())
        .spawn(move || {
            let mut buffer = [0u8; 8192];
            let mut lines = Lines::default();
            loop {
                let n = match pipe.read(&mut buffer) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                };
                match &label {
                    None => write(stream, &buffer[..n]),
                    Some(label) => write(stream, &lines.prefixed(&buffer[..n], label)),
                }
                if let Some(tail) = &tail {
                    if let Ok(mut tail) = tail.lock() {
                        crate::summary::keep_tail(&mut tail, &buffer[..n]);
                    }
                }
            }
            if let Some(label) = &label {
                write(stream, &lines.rest(label));
            }
            let _ = tx.send(true);
        });
    rx
}

fn write(stream: Stream, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    // One write per chunk of whole lines, so they do not interleave with others mid-line.
    let _ = match stream {
        Stream::Stdout => std::io::stdout().lock().write_all(bytes),
        Stream::Stderr => std::io::stderr().lock().write_all(bytes),
    };
}

/// Splits copied bytes into lines, holding a partial last line until its end comes.
#[derive(Default)]
struct Lines {
    partial: Vec<u8>,
}

/// A line longer than this is written in pieces (each prefixed) rather than held.
const LONGEST_HELD: usize = 64 * 1024;

impl Lines {
    fn prefixed(&mut self, more: &[u8], label: &Label) -> Vec<u8> {
        self.partial.extend_from_slice(more);
        let mut out = Vec::new();
        let whole = match self.partial.iter().rposition(|b| *b == b'\n') {
            Some(end) => end + 1,
            None if self.partial.len() > LONGEST_HELD => self.partial.len(),
            None => return out,
        };
        for line in self.partial[..whole].split_inclusive(|b| *b == b'\n') {
            out.extend_from_slice(&label.0);
            out.extend_from_slice(line);
        }
        if !out.ends_with(b"\n") {
            out.push(b'\n');
        }
        self.partial.drain(..whole);
        out
    }

    /// A last line without its newline, at the pipe's end.
    fn rest(&mut self, label: &Label) -> Vec<u8> {
        if self.partial.is_empty() {
            return Vec::new();
        }
        let mut out = label.0.to_vec();
        out.append(&mut self.partial);
        out.push(b'\n');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_get_the_label_once_each_even_when_split_across_reads() {
        let label = Label::new("web", 7, 0, false);
        let mut lines = Lines::default();
        let mut out = lines.prefixed(b"one\ntw", &label);
        out.extend(lines.prefixed(b"o\nthree", &label));
        out.extend(lines.rest(&label));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "web     | one\nweb     | two\nweb     | three\n"
        );
    }
}
