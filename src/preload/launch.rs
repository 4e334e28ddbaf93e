//! How a command runs Python, read once at config load: preload can run only what it can
//! reproduce in a fork (`runpy`), so anything else is a configuration error.

use std::path::Path;

/// How the command runs Python: the interpreter (with its own options), then a module
/// (`-m uvicorn`) or a script (`app.py`, or a console script such as `uvicorn`), then args.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// The interpreter and its options (`-X dev`): they apply to the preloader.
    pub interpreter: Vec<String>,
    pub module: Option<String>,
    pub script: Option<String>,
    pub args: Vec<String>,
}

impl Launch {
    /// Reads `command` as `python [options] -m MODULE args`, `python [options] SCRIPT args`,
    /// or a console script (found on PATH, or relative to `cwd`) whose first line is a Python
    /// shebang. Anything else cannot be preloaded: the error says why.
    pub fn parse(command: &[String], cwd: &Path) -> Result<Launch, String> {
        let (program, rest) = command.split_first().ok_or("empty command")?;
        if !is_python(program) {
            return console_script(program, rest, cwd).ok_or_else(|| {
                format!(
                    "preload needs a Python command (`python -m MODULE …`, `python SCRIPT …` or \
                     a console script such as `uvicorn …`); `{program}` is none of these"
                )
            });
        }
        let mut interpreter = vec![program.clone()];
        let mut words = rest.iter();
        while let Some(word) = words.next() {
            match word.as_str() {
                "-m" => {
                    let module = words.next().ok_or("`-m` needs a module name")?;
                    return Ok(Launch {
                        interpreter,
                        module: Some(module.clone()),
                        script: None,
                        args: words.cloned().collect(),
                    });
                }
                "-c" | "-" => return Err(format!("preload cannot run `python {word}`")),
                "-X" | "-W" => {
                    interpreter.push(word.clone());
                    interpreter.extend(words.next().cloned());
                }
                option if option.starts_with('-') => interpreter.push(word.clone()),
                script => {
                    return Ok(Launch {
                        interpreter,
                        module: None,
                        script: Some(script.to_string()),
                        args: words.cloned().collect(),
                    })
                }
            }
        }
        Err("preload needs a module (`-m`) or a script after the Python interpreter".into())
    }
}

/// `python`, `python3`, `python3.12`, with or without a folder (and `.exe`, on Windows).
fn is_python(program: &str) -> bool {
    let name = Path::new(program)
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let name = name.strip_suffix(".exe").unwrap_or(&name);
    let version = name.strip_prefix("python").unwrap_or("x");
    version.chars().all(|c| c.is_ascii_digit() || c == '.')
}

/// `uvicorn app:app` where `uvicorn` (on PATH) starts with `#!/…/python`.
fn console_script(program: &str, args: &[String], cwd: &Path) -> Option<Launch> {
    let path = if program.contains('/') {
        cwd.join(program)
    } else {
        std::env::split_paths(&std::env::var_os("PATH")?)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())?
    };
    let text = std::fs::read(&path).ok()?;
    let first = String::from_utf8_lossy(text.split(|b| *b == b'\n').next()?).to_string();
    let shebang: Vec<String> = first
        .strip_prefix("#!")?
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let python = shebang.iter().any(|w| is_python(w));
    python.then(|| Launch {
        interpreter: shebang,
        module: None,
        script: Some(path.display().to_string()),
        args: args.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn reads_module_and_script_commands() {
        let cwd = Path::new("/");
        let m = Launch::parse(
            &words(".venv/bin/python3.12 -u -X dev -m uvicorn app:app"),
            cwd,
        )
        .unwrap();
        assert_eq!(m.interpreter, words(".venv/bin/python3.12 -u -X dev"));
        assert_eq!(m.module.as_deref(), Some("uvicorn"));
        assert_eq!(m.args, words("app:app"));
        let s = Launch::parse(&words("python server.py --port 1"), cwd).unwrap();
        assert_eq!(s.script.as_deref(), Some("server.py"));
        assert_eq!(s.args, words("--port 1"));
        assert!(Launch::parse(&words("python -c pass"), cwd).is_err());
        assert!(Launch::parse(&words("python -m"), cwd).is_err());
        assert!(Launch::parse(&words("python -u"), cwd).is_err());
        assert!(Launch::parse(&words("node server.js"), cwd).is_err());
        let exe = Launch::parse(&words("C:/venv/Scripts/python.exe -m uvicorn a:app"), cwd);
        assert_eq!(exe.unwrap().module.as_deref(), Some("uvicorn"));
    }

    #[test]
    fn reads_a_console_script_by_its_python_shebang() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("serve"),
            "#!/opt/venv/bin/python3 -u\nprint('hi')\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("tool"), "#!/bin/sh\necho hi\n").unwrap();
        let launch = Launch::parse(&words("./serve app:app"), dir.path()).unwrap();
        assert_eq!(launch.interpreter, words("/opt/venv/bin/python3 -u"));
        let script = dir.path().join("./serve").display().to_string();
        assert_eq!(launch.script, Some(script));
        assert_eq!(launch.args, words("app:app"));
        let shell = Launch::parse(&words("./tool"), dir.path()).unwrap_err();
        assert!(shell.contains("`./tool` is none of these"), "{shell}");
    }
}
