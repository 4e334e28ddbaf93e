//! What every OS answers the same way from its own per-process answers (`start_time`,
//! `is_zombie`, `children`): whether a pid is still the recorded process, and a process tree.

use super::{children, is_zombie, start_time};

/// One process and its parent, as a process table lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessRow {
    pub pid: u32,
    pub parent: u32,
}

/// Whether `pid` is alive (not a zombie) and is the very process that started at `start`
/// (never a reused pid).
pub fn is_same(pid: u32, start: u64) -> bool {
    start_time(pid) == Some(start) && !is_zombie(pid)
}

/// Every descendant of `pid` (children first), where the OS tells us.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut queue = vec![pid];
    while let Some(parent) = queue.pop() {
        for child in children(parent) {
            if !found.contains(&child) {
                found.push(child);
                queue.push(child);
            }
        }
    }
    found
}
