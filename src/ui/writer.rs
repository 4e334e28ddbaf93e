//! One thread writes stderr; everyone else queues lines without ever blocking.

use super::{unix_millis, Event, Warn};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Lines waiting for stderr before new ones are dropped.
const QUEUE_LINES: usize = 128;

struct Writer {
    queue: SyncSender<Vec<u8>>,
}

static QUEUED: AtomicU64 = AtomicU64::new(0);
static WRITTEN: AtomicU64 = AtomicU64::new(0);
static DROPPED: AtomicU64 = AtomicU64::new(0);
static WRITER: OnceLock<Option<Writer>> = OnceLock::new();

fn writer() -> Option<&'static Writer> {
    WRITER
        .get_or_init(|| {
            let (queue, lines) = mpsc::sync_channel::<Vec<u8>>(QUEUE_LINES);
            std::thread::Builder::new()
                .name("devrun-stderr".into())
                .spawn(move || {
                    for line in lines {
                        let mut stderr = std::io::stderr().lock();
                        let dropped = DROPPED.swap(0, Ordering::Relaxed);
                        if dropped > 0 {
                            let _ = stderr.write_all(&dropped_notice(dropped));
                        }
                        let _ = stderr.write_all(&line);
                        WRITTEN.fetch_add(1, Ordering::Release);
                    }
                })
                .ok()
                .map(|_| Writer { queue })
        })
        .as_ref()
}

/// Queues one whole line; drops it (counted, reported later) when the queue is full.
pub fn write(line: Vec<u8>) {
    let Some(writer) = writer() else {
        // No thread could be started: write in place, as before.
        let _ = std::io::stderr().lock().write_all(&line);
        return;
    };
    QUEUED.fetch_add(1, Ordering::AcqRel);
    match writer.queue.try_send(line) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => {
            QUEUED.fetch_sub(1, Ordering::AcqRel);
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
        Err(TrySendError::Disconnected(line)) => {
            QUEUED.fetch_sub(1, Ordering::AcqRel);
            let _ = std::io::stderr().lock().write_all(&line);
        }
    }
}

/// Whether lines are JSON objects, so the dropped-lines notice is one too.
static JSON: AtomicBool = AtomicBool::new(false);

pub fn set_json(json: bool) {
    JSON.store(json, Ordering::Relaxed);
}

fn dropped_notice(dropped: u64) -> Vec<u8> {
    let event = Event::Warn(Warn::LinesDropped { dropped });
    if JSON.load(Ordering::Relaxed) {
        let mut value = event.to_json();
        value["ts_ms"] = serde_json::json!(unix_millis());
        format!("{value}\n").into_bytes()
    } else {
        format!("devrun: {}\n", event.text()).into_bytes()
    }
}

pub fn flush(timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while WRITTEN.load(Ordering::Acquire) < QUEUED.load(Ordering::Acquire)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(2));
    }
}
