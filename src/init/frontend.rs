//! A frontend's dev server beside the backend: found by its `package.json`, written as a
//! commented `[processes.web]` block.

use super::render::toml_string;
use super::scan::{read_source, skip_dir};
use std::fs;
use std::path::{Path, PathBuf};

/// The frontend dev server's port when the backend does not already use it (Vite's default).
const FRONTEND_PORT: u16 = 5173;

/// A `package.json` with a `dev` script: the project's frontend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Frontend {
    /// Its folder relative to the project (`web`), empty when it is the project folder itself.
    folder: String,
    /// The `dev` script says `next` (Next.js has no `--strictPort`; it fails on a busy port).
    next: bool,
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

/// The project folder's `package.json`, else the first direct subfolder's (in name order),
/// that has a `scripts.dev`.
pub(super) fn find_frontend(dir: &Path) -> Option<Frontend> {
    if let Some(next) = dev_script(&dir.join("package.json")) {
        return Some(Frontend {
            folder: String::new(),
            next,
        });
    }
    let mut folders: Vec<(String, PathBuf)> = fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| Some((e.file_name().to_str()?.to_string(), e.path())))
        .filter(|(name, _)| !skip_dir(name))
        .collect();
    folders.sort();
    folders.into_iter().find_map(|(name, path)| {
        let next = dev_script(&path.join("package.json"))?;
        Some(Frontend { folder: name, next })
    })
}

/// Whether `package.json` has a `scripts.dev` string: Some(it runs `next`), else None.
fn dev_script(package_json: &Path) -> Option<bool> {
    let text = read_source(package_json)?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    let dev = json.get("scripts")?.get("dev")?.as_str()?;
    Some(dev.split_whitespace().any(|word| word == "next"))
}

/// The commented `[processes.web]` block: the frontend's dev server on a port devrun owns,
/// started once the backend is ready, told the backend's address.
pub(super) fn render_frontend(frontend: &Frontend, backend_port: u16) -> String {
    let port = if backend_port == FRONTEND_PORT {
        FRONTEND_PORT + 1
    } else {
        FRONTEND_PORT
    };
    // Vite moves to the next free port when its own is busy unless told not to; Next.js has
    // no such flag (it fails on a busy port) and its public variables are NEXT_PUBLIC_*.
    let (command, busy, api_var) = if frontend.next {
        (
            "npm run dev -- --port {port}",
            "Next.js fails on a busy port",
            "NEXT_PUBLIC_API_URL",
        )
    } else {
        (
            "npm run dev -- --port {port} --strictPort",
            "--strictPort: Vite fails rather than move",
            "VITE_API_URL",
        )
    };
    let mut out = format!(
        "\n# The frontend: a `dev` script in {}. Uncomment to run its dev server beside\n\
         # the backend: started once the backend is ready, on a port devrun owns, told the\n\
         # backend's address ({busy}; `port = \"auto\"` picks a free\n\
         # port per run). `devrun --only web` (or `--only backend`) runs one of them alone.\n\
         # [processes.web]\n\
         # command = {}\n",
        frontend.package_json(),
        toml_string(command)
    );
    if !frontend.folder.is_empty() {
        out.push_str(&format!("# cwd = {}\n", toml_string(&frontend.folder)));
    }
    out.push_str(&format!(
        "# port = {port}\n\
         # after = [\"backend\"]\n\
         # env = {{ {api_var} = \"http://127.0.0.1:{{ports.backend}}\" }}\n\
         # ready = {{ http = \"/\" }}\n"
    ));
    out
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

    #[test]
    fn a_dev_script_beside_or_under_the_project_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let write = |rel: &str, text: &str| {
            let path = dir.path().join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        };
        assert_eq!(find_frontend(dir.path()), None);
        write(
            "node_modules/package.json",
            r#"{"scripts": {"dev": "vite"}}"#,
        );
        write("a/b/package.json", r#"{"scripts": {"dev": "vite"}}"#);
        write("api/package.json", r#"{"scripts": {"build": "tsc"}}"#);
        write("broken/package.json", "{ not json");
        assert_eq!(find_frontend(dir.path()), None);
        write("web/package.json", r#"{"scripts": {"dev": "vite --open"}}"#);
        write("www/package.json", r#"{"scripts": {"dev": "next dev"}}"#);
        let web = Frontend {
            folder: "web".into(),
            next: false,
        };
        assert_eq!(find_frontend(dir.path()), Some(web));
        write("package.json", r#"{"scripts": {"dev": "next dev"}}"#);
        let root = Frontend {
            folder: String::new(),
            next: true,
        };
        assert_eq!(find_frontend(dir.path()), Some(root));
    }

    #[test]
    fn the_frontend_block_is_commented_and_uncomments_to_a_member() {
        let web = Frontend {
            folder: "web".into(),
            next: false,
        };
        let block = render_frontend(&web, 8001);
        assert!(
            block.lines().all(|l| l.is_empty() || l.starts_with('#')),
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
            Some("http://127.0.0.1:{ports.backend}")
        );
        // Beside the project: no cwd; never the backend's port; Next.js's own names.
        let root = Frontend {
            folder: String::new(),
            next: true,
        };
        let table: toml::Table =
            toml::from_str(&uncommented(&render_frontend(&root, 5173))).unwrap();
        let member = &table["processes"]["web"];
        assert!(member.get("cwd").is_none(), "{member}");
        assert_eq!(member["port"].as_integer(), Some(5174));
        assert_eq!(
            member["command"].as_str(),
            Some("npm run dev -- --port {port}")
        );
        assert!(
            member["env"].get("NEXT_PUBLIC_API_URL").is_some(),
            "{member}"
        );
    }
}
