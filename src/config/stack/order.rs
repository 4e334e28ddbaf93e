//! The members' names, the references in `after` and `restart_with`, cycles in `after`
//! (spelled out), and the start order.

use super::{known_names, unknown_name, Member, BACKEND};
use crate::config::Inputs;
use crate::error::ConfigError;

/// The `[processes.NAME]` tables in the order the file has them, their names checked.
pub(super) fn members_in_file_order(inputs: &Inputs) -> Result<Vec<Member<'_>>, ConfigError> {
    let mut members: Vec<Member> = inputs
        .file
        .processes
        .iter()
        .map(|(name, file)| Member { name, file })
        .collect();
    members.sort_by_key(|m| m.name.span().start);
    for member in &members {
        let at = Some(member.name.span().start);
        let name = member.name();
        if name == BACKEND {
            return Err(inputs.err(
                at,
                "[processes.backend]: `backend` is the name of the top-level command; give this \
                 process another name",
            ));
        }
        if !valid_name(name) {
            return Err(inputs.err(
                at,
                format!(
                    "[processes.{name}]: a process name is lowercase letters, digits, `-` and \
                     `_`, starting with a letter or a digit"
                ),
            ));
        }
    }
    Ok(members)
}

/// `[a-z0-9][a-z0-9_-]*`: safe in a status line, a placeholder and a TOML bare key.
pub(super) fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// Every name in `after` and `restart_with` is `backend` or a member; `restart_with` does not
/// name its own member (a self-reference in `after` is reported as a cycle).
pub(super) fn check_references(inputs: &Inputs, members: &[Member]) -> Result<(), ConfigError> {
    let known = known_names(members);
    for member in members {
        let lists = [
            ("after", &member.file.after),
            ("restart_with", &member.file.restart_with),
        ];
        for (key, list) in lists {
            for name in list {
                let at = Some(name.span().start);
                if !known.contains(name.get_ref()) {
                    let why = unknown_name(name.get_ref(), &known);
                    return Err(inputs.err(at, format!("{}: {why}", member.key(key))));
                }
                if key == "restart_with" && name.get_ref() == member.name() {
                    return Err(inputs.err(
                        at,
                        format!("{}: a process cannot name itself", member.key(key)),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The members each one starts after (indexes; `backend` is not a member).
pub(super) fn dependencies(members: &[Member]) -> Vec<Vec<(usize, usize)>> {
    members
        .iter()
        .map(|member| {
            member
                .file
                .after
                .iter()
                .filter_map(|name| {
                    let index = members.iter().position(|m| m.name() == name.get_ref())?;
                    Some((index, name.span().start))
                })
                .collect()
        })
        .collect()
}

/// A cycle in `after`, spelled in the order the members wait for each other
/// (`web → api → web`), and the offset of the `after` entry that closes it.
pub(super) fn find_cycle(members: &[Member]) -> Option<(String, usize)> {
    let mut search = CycleSearch {
        deps: dependencies(members),
        visited: vec![false; members.len()],
        path: Vec::new(),
    };
    let (cycle, at) = (0..members.len()).find_map(|start| search.visit(start))?;
    let spelled: Vec<&str> = cycle.iter().map(|&i| members[i].name()).collect();
    Some((spelled.join(" → "), at))
}

/// A depth-first walk over `after`: a member met again while it is still on the path closes a
/// cycle.
struct CycleSearch {
    deps: Vec<Vec<(usize, usize)>>,
    visited: Vec<bool>,
    path: Vec<usize>,
}

impl CycleSearch {
    fn visit(&mut self, member: usize) -> Option<(Vec<usize>, usize)> {
        if self.visited[member] {
            return None;
        }
        self.visited[member] = true;
        self.path.push(member);
        for (dep, at) in self.deps[member].clone() {
            if let Some(from) = self.path.iter().position(|&m| m == dep) {
                let mut cycle = self.path[from..].to_vec();
                cycle.push(dep);
                return Some((cycle, at));
            }
            if let Some(found) = self.visit(dep) {
                return Some(found);
            }
        }
        self.path.pop();
        None
    }
}

/// Indexes in a valid start order (each member after those it names in `after`), otherwise
/// in file order. `after` has no cycle (checked before).
pub(super) fn start_order(members: &[Member]) -> Vec<usize> {
    let deps = dependencies(members);
    let mut placed = vec![false; members.len()];
    let mut order = Vec::with_capacity(members.len());
    while let Some(next) =
        (0..members.len()).find(|&i| !placed[i] && deps[i].iter().all(|&(d, _)| placed[d]))
    {
        placed[next] = true;
        order.push(next);
    }
    order
}
