//! What the supervised processes write, on its way to devrun's stdout and stderr.
//!
//! The backend alone keeps its output as it is (stdout untouched; stderr copied byte for byte).
//! In a stack (`[processes.NAME]`) every member's lines are prefixed with its name, padded to
//! the longest name and in a colour of its own, so interleaved output still says who wrote it.
//!
//! A generation's [`Streams`] copy its pipes and keep the last bytes of its stderr ([`Tail`]);
//! what reads that tail (the crash summary) is not this module's business.

use std::io::{PipeReader, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// How much of a generation's stderr is kept: a deep traceback fits many times over.
const TAIL_BYTES: usize = 64 * 1024;
/// How long a generation's end waits for the rest of its output (a survivor may hold the pipe).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

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

/// The last bytes a copied stream carried (between [`TAIL_BYTES`] and twice that once it is
/// long), shared with whoever reads them after the generation ended.
#[derive(Debug, Clone, Default)]
pub struct Tail(Arc<Mutex<Vec<u8>>>);

impl Tail {
    fn keep(&self, more: &[u8]) {
        if let Ok(mut tail) = self.0.lock() {
            keep_tail(&mut tail, more);
        }
    }

    /// What is kept, as text (bytes that are not UTF-8 replaced).
    pub fn text(&self) -> String {
        self.0
            .lock()
            .map(|tail| String::from_utf8_lossy(&tail).into_owned())
            .unwrap_or_default()
    }
}

fn keep_tail(tail: &mut Vec<u8>, more: &[u8]) {
    tail.extend_from_slice(more);
    if tail.len() > 2 * TAIL_BYTES {
        tail.drain(..tail.len() - TAIL_BYTES);
    }
}

/// One generation's output on its way to devrun's: its stderr (keeping a [`Tail`]) and, for a
/// stack member, its stdout, each copied by a thread of its own.
pub struct Streams {
    stderr_tail: Tail,
    /// One per copied pipe: true once it reached its end.
    drained: Vec<watch::Receiver<bool>>,
}

impl Streams {
    /// Starts copying `stderr` (the read end of the backend's stderr pipe) to devrun's. With a
    /// `label` (a stack member) its lines are prefixed, and so are those of `stdout` (without
    /// one the backend writes to devrun's stdout itself, untouched).
    pub fn start(
        stderr: Option<PipeReader>,
        stdout: Option<PipeReader>,
        label: Option<Label>,
    ) -> Streams {
        let stderr_tail = Tail::default();
        let tail = Some(stderr_tail.clone());
        let mut drained: Vec<_> = stderr
            .map(|pipe| copy(pipe, Stream::Stderr, label.clone(), tail))
            .into_iter()
            .collect();
        drained.extend(stdout.map(|pipe| copy(pipe, Stream::Stdout, label, None)));
        Streams {
            stderr_tail,
            drained,
        }
    }

    /// The last bytes of stderr copied so far.
    pub fn stderr_tail(&self) -> &Tail {
        &self.stderr_tail
    }

    /// Waits (briefly: a survivor may hold the pipe) until the generation's output has all been
    /// copied, so its last lines come before devrun's next status line, and before devrun exits.
    pub async fn drained(&mut self) {
        let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
        for drained in &mut self.drained {
            let _ = tokio::time::timeout_at(deadline, drained.wait_for(|done| *done)).await;
        }
    }
}

/// Copies `pipe` to devrun's `stream` on a thread of its own (an output nobody reads blocks the
/// process as it did when it wrote there itself, never devrun): unchanged without a label,
/// else line by line with the label in front. `tail` keeps the raw bytes.
/// The receiver turns true at the pipe's end.
pub fn copy(
    mut pipe: PipeReader,
    stream: Stream,
    label: Option<Label>,
    tail: Option<Tail>,
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
                    tail.keep(&buffer[..n]);
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

    #[test]
    fn the_tail_stays_bounded_and_keeps_the_end() {
        let mut tail = Vec::new();
        for _ in 0..100 {
            keep_tail(&mut tail, &[b'x'; 4096]);
        }
        keep_tail(&mut tail, b"the end");
        assert!(tail.len() <= 2 * TAIL_BYTES);
        assert!(tail.ends_with(b"the end"));
    }
}
