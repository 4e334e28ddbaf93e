//! A frontend's dev server beside the backend: found by its `package.json` (in the folder, a
//! subfolder, or a sibling folder of a repo), run with the package manager its lock file
//! names, written as a `[processes.web]` block: live when that manager is on PATH and the
//! packages are installed, else commented out with the reason.

use super::render::toml_string;
use super::scan::{read_source, skip_dir};
use std::fs;
use std::path::{Path, PathBuf};

/// The frontend dev server's port when the backend does not already use it (Vite's default).
const FRONTEND_PORT: u16 = 5173;

/// The package managers a frontend is run with, told apart by their lock files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Manager {
    Npm,
    Pnpm,
    Yarn,
    Bun,
}

impl Manager {
    pub(super) fn program(self) -> &'static str {
        match self {
            Manager::Npm => "npm",
            Manager::Pnpm => "pnpm",
            Manager::Yarn => "yarn",
            Manager::Bun => "bun",
        }
    }

    /// `run dev` with arguments for the script: npm needs `--` before them, the others pass
    /// them on as they are.
    fn run_dev(self, args: &str) -> String {
        match self {
            Manager::Npm => format!("npm run dev -- {args}"),
            other => format!("{} run dev {args}", other.program()),
        }
    }

    /// The manager a lock file in `folder` names, or its `packageManager` field.
    fn in_folder(folder: &Path) -> Option<Manager> {
        let locks = [
            ("bun.lockb", Manager::Bun),
            ("bun.lock", Manager::Bun),
            ("pnpm-lock.yaml", Manager::Pnpm),
            ("yarn.lock", Manager::Yarn),
            ("package-lock.json", Manager::Npm),
        ];
        if let Some((_, manager)) = locks.iter().find(|(lock, _)| folder.join(lock).is_file()) {
            return Some(*manager);
        }
        let json = package_json(&folder.join("package.json"))?;
        let declared = json.get("packageManager")?.as_str()?;
        let name = declared.split('@').next()?;
        [Manager::Npm, Manager::Pnpm, Manager::Yarn, Manager::Bun]
            .into_iter()
            .find(|m| m.program() == name)
    }
}

/// A `package.json` with a `dev` script: the project's frontend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Frontend {
    /// Its folder relative to the config file's folder (`web`, `../frontend`), empty when it is
    /// that folder itself.
    pub(super) folder: String,
    /// The `dev` script says `next` (Next.js has no `--strictPort`; it fails on a busy port).
    pub(super) next: bool,
    pub(super) manager: Manager,
    /// Why it cannot run as found (the block is then commented out): the manager is not on
    /// PATH, or the packages are not installed.
    pub(super) missing: Option<String>,
}

impl Frontend {
    pub(super) fn package_json(&self) -> String {
        if self.folder.is_empty() {
            "package.json".to_string()
        } else {
            format!("{}/package.json", self.folder)
        }
    }
}

fn package_json(path: &Path) -> Option<serde_json::Value> {
    serde_json::from_str(&read_source(path)?).ok()
}

/// Whether `package.json` has a `scripts.dev` string: Some(it runs `next`), else None.
fn dev_script(package_json_path: &Path) -> Option<bool> {
    let json = package_json(package_json_path)?;
    let dev = json.get("scripts")?.get("dev")?.as_str()?;
    Some(dev.split_whitespace().any(|word| word == "next"))
}

/// The folders of `dir` that may hold a frontend, in name order: (name, path).
fn subfolders(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut folders: Vec<(String, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| Some((e.file_name().to_str()?.to_string(), e.path())))
        .filter(|(name, _)| !skip_dir(name))
        .collect();
    folders.sort();
    folders
}

/// A folder that holds a whole repo (a backend folder's parent worth looking beside): it
/// has `.git`, a `package.json`, a compose file or a `.env`.
fn is_repo_root(dir: &Path) -> bool {
    [
        ".git",
        "package.json",
        "docker-compose.yml",
        "compose.yaml",
        ".env",
    ]
    .iter()
    .any(|marker| dir.join(marker).exists())
}

/// The frontend of the project in `dir`: its `package.json` with a `dev` script (unless it
/// declares `workspaces`: then a workspace folder's comes first, the root's script being a
/// wrapper), else the first direct subfolder's (in name order), else, when `dir` is a
/// backend folder inside a repo, the first sibling folder's (`../frontend`).
pub(super) fn find_frontend(dir: &Path) -> Option<Frontend> {
    let root_json = dir.join("package.json");
    let workspaces = package_json(&root_json).is_some_and(|j| j.get("workspaces").is_some());
    let root = dev_script(&root_json).map(|next| (String::new(), dir.to_path_buf(), next));
    let in_subfolder = || {
        subfolders(dir).into_iter().find_map(|(name, path)| {
            let next = dev_script(&path.join("package.json"))?;
            Some((name, path, next))
        })
    };
    let beside = || {
        let parent = dir.parent().filter(|p| is_repo_root(p))?;
        let own = dir.file_name()?;
        subfolders(parent)
            .into_iter()
            .filter(|(name, _)| own != name.as_str())
            .find_map(|(name, path)| {
                let next = dev_script(&path.join("package.json"))?;
                Some((format!("../{name}"), path, next))
            })
    };
    let (folder, path, next) = match workspaces {
        true => in_subfolder().or(root),
        false => root.or_else(in_subfolder),
    }
    .or_else(beside)?;
    // Lock files and node_modules may sit in the folder or above it, up to the repo's root.
    let top = if folder.starts_with("..") {
        dir.parent().unwrap_or(dir)
    } else {
        dir
    };
    let up_to_top: Vec<&Path> = path
        .ancestors()
        .take_while(|p| p.starts_with(top))
        .collect();
    let manager = up_to_top
        .iter()
        .find_map(|p| Manager::in_folder(p))
        .unwrap_or(Manager::Npm);
    let missing = if !on_path(manager.program()) {
        Some(format!("{} is not on PATH", manager.program()))
    } else if !up_to_top.iter().any(|p| p.join("node_modules").is_dir()) {
        let shown = if folder.is_empty() { "." } else { &folder };
        Some(format!(
            "its packages are not installed: run `{} install` in {shown}",
            manager.program()
        ))
    } else {
        None
    };
    Some(Frontend {
        folder,
        next,
        manager,
        missing,
    })
}

/// Whether `program` is an executable file in a folder of PATH.
fn on_path(program: &str) -> bool {
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    let names: Vec<String> = if cfg!(windows) {
        vec![format!("{program}.cmd"), format!("{program}.exe")]
    } else {
        vec![program.to_string()]
    };
    std::env::split_paths(&path).any(|folder| names.iter().any(|n| folder.join(n).is_file()))
}

/// The `[processes.web]` block: the frontend's dev server on a port devrun owns, started once
/// the backend is ready, told the backend's address; commented out, with why, when it cannot
/// run as found.
pub(super) fn render_frontend(frontend: &Frontend, backend_port: u16) -> String {
    let port = if backend_port == FRONTEND_PORT {
        FRONTEND_PORT + 1
    } else {
        FRONTEND_PORT
    };
    // Vite moves to the next free port when its own is busy unless told not to; Next.js has
    // no such flag (it fails on a busy port) and its public variables are NEXT_PUBLIC_*.
    let (args, busy, api_var) = if frontend.next {
        (
            "--port {port}",
            "Next.js fails on a busy port",
            "NEXT_PUBLIC_API_URL",
        )
    } else {
        (
            "--port {port} --strictPort",
            "--strictPort: Vite fails rather than move",
            "VITE_API_URL",
        )
    };
    let command = frontend.manager.run_dev(args);
    let (prefix, state) = match &frontend.missing {
        Some(why) => (
            "# ",
            format!("# Commented out: {why}; then uncomment it.\n"),
        ),
        None => ("", String::new()),
    };
    let mut block = format!("[processes.web]\ncommand = {}\n", toml_string(&command));
    if !frontend.folder.is_empty() {
        block.push_str(&format!("cwd = {}\n", toml_string(&frontend.folder)));
    }
    // {url.backend}: http://localhost:PORT, not 127.0.0.1, as browsers and CORS defaults
    // (http://localhost:5173 in FastAPI's, Django's and Vite's docs) expect.
    block.push_str(&format!(
        "port = {port}\n\
         after = [\"backend\"]\n\
         env = {{ {api_var} = \"{{url.backend}}\" }}\n\
         ready = {{ http = \"/\" }}\n"
    ));
    let block: String = block.lines().map(|l| format!("{prefix}{l}\n")).collect();
    format!(
        "\n# The frontend: a `dev` script in {}, run with {} (its lock file), beside the\n\
         # backend: started once the backend is ready, on a port devrun owns, told the backend's\n\
         # address ({busy}; `port = \"auto\"` picks a free port per run).\n\
         # `devrun --only web` (or `--only backend`) runs one of them alone.\n\
         {state}{block}",
        frontend.package_json(),
        frontend.manager.program(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The block as a user uncomments it: from `# [processes.web]` on, without the `# `.
    fn uncommented(block: &str) -> String {
        block
            .lines()
            .skip_while(|line| !line.starts_with("# [processes."))
            .map(|line| format!("{}\n", line.strip_prefix("# ").unwrap_or(line)))
            .collect()
    }

    fn write(dir: &Path, rel: &str, text: &str) {
        let path = dir.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    /// (folder, next, manager) of what was found.
    fn found(dir: &Path) -> Option<(String, bool, Manager)> {
        find_frontend(dir).map(|f| (f.folder, f.next, f.manager))
    }

    #[test]
    fn a_dev_script_beside_or_under_the_project_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        assert_eq!(found(dir), None);
        write(
            dir,
            "node_modules/package.json",
            r#"{"scripts": {"dev": "vite"}}"#,
        );
        write(dir, "a/b/package.json", r#"{"scripts": {"dev": "vite"}}"#);
        write(dir, "api/package.json", r#"{"scripts": {"build": "tsc"}}"#);
        write(dir, "broken/package.json", "{ not json");
        assert_eq!(found(dir), None);
        write(
            dir,
            "web/package.json",
            r#"{"scripts": {"dev": "vite --open"}}"#,
        );
        write(
            dir,
            "www/package.json",
            r#"{"scripts": {"dev": "next dev"}}"#,
        );
        assert_eq!(found(dir), Some(("web".into(), false, Manager::Npm)));
        write(dir, "package.json", r#"{"scripts": {"dev": "next dev"}}"#);
        assert_eq!(found(dir), Some((String::new(), true, Manager::Npm)));
    }

    /// The full-stack template: a root package.json with workspaces (its dev script a
    /// wrapper) and bun.lock at the root; frontend/ holds the Vite app. From backend/, the
    /// frontend is the sibling folder.
    #[test]
    fn a_workspace_frontend_with_its_lock_at_the_root_from_the_root_or_beside() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        write(
            dir,
            "package.json",
            r#"{"workspaces": ["frontend"], "scripts": {"dev": "bun run --filter frontend dev"}}"#,
        );
        write(dir, "bun.lock", "{}");
        write(
            dir,
            "frontend/package.json",
            r#"{"scripts": {"dev": "vite"}}"#,
        );
        write(dir, "backend/pyproject.toml", "");
        assert_eq!(found(dir), Some(("frontend".into(), false, Manager::Bun)));
        assert_eq!(
            found(&dir.join("backend")),
            Some(("../frontend".into(), false, Manager::Bun))
        );
        for (lock, manager) in [
            ("pnpm-lock.yaml", Manager::Pnpm),
            ("yarn.lock", Manager::Yarn),
            ("bun.lockb", Manager::Bun),
        ] {
            write(dir, &format!("frontend/{lock}"), "");
            assert_eq!(found(dir).map(|f| f.2), Some(manager), "{lock}");
            fs::remove_file(dir.join("frontend").join(lock)).unwrap();
        }
        // A folder that is not in a repo does not look beside itself.
        let lone = tempfile::tempdir().unwrap();
        write(lone.path(), "api/main.py", "");
        write(
            lone.path(),
            "web/package.json",
            r#"{"scripts": {"dev": "vite"}}"#,
        );
        assert_eq!(found(&lone.path().join("api")), None);
    }

    #[test]
    fn the_frontend_block_is_live_when_it_can_run_and_commented_with_why_when_not() {
        let web = Frontend {
            folder: "web".into(),
            next: false,
            manager: Manager::Npm,
            missing: Some("npm is not on PATH".into()),
        };
        let block = render_frontend(&web, 8001);
        assert!(
            block.lines().all(|l| l.is_empty() || l.starts_with('#')),
            "{block}"
        );
        assert!(
            block.contains("# Commented out: npm is not on PATH"),
            "{block}"
        );
        let table: toml::Table = toml::from_str(&uncommented(&block)).unwrap();
        let member = &table["processes"]["web"];
        assert_eq!(
            member["command"].as_str(),
            Some("npm run dev -- --port {port} --strictPort")
        );
        assert_eq!(member["cwd"].as_str(), Some("web"));
        assert_eq!(member["port"].as_integer(), Some(5173));
        assert_eq!(member["after"][0].as_str(), Some("backend"));
        assert_eq!(
            member["env"]["VITE_API_URL"].as_str(),
            Some("{url.backend}")
        );
        // Runnable: live. Beside the project: no cwd; never the backend's port; Next.js's own
        // names; bun takes the script's arguments without `--`.
        let root = Frontend {
            folder: String::new(),
            next: true,
            manager: Manager::Bun,
            missing: None,
        };
        let table: toml::Table = toml::from_str(&render_frontend(&root, 5173)).unwrap();
        let member = &table["processes"]["web"];
        assert!(member.get("cwd").is_none(), "{member}");
        assert_eq!(member["port"].as_integer(), Some(5174));
        assert_eq!(
            member["command"].as_str(),
            Some("bun run dev --port {port}")
        );
        assert!(
            member["env"].get("NEXT_PUBLIC_API_URL").is_some(),
            "{member}"
        );
    }
}
