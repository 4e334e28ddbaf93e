//! Changes outside `[watch].include`, or inside ignored folders, never restart the backend.
//! Each test then saves version.py as a control: the watcher was live all along.

use crate::harness::*;

fn assert_change_ignored(watch: &str, rel: &str) {
    let config = format!(
        r#"
command = ["$PYTHON", "normal.py"]
port = $PORT

[watch]
debounce_ms = 50
{watch}
"#
    );
    let p = Project::new("testapp").config(&config).start();
    p.wait_for_version("v1", WAIT);

    p.write_atomic(rel, "X = 1\n");
    p.write_inplace(rel, "X = 2\n");
    std::thread::sleep(QUIET);
    assert_eq!(p.starts().len(), 1, "saving {rel} restarted the backend");

    p.write_atomic("version.py", &version_py("v2"));
    let v2 = p.wait_for_version("v2", WAIT);
    assert_eq!(v2.generation, Some(2));
    assert_eq!(p.settle().len(), 2);
}

#[test]
fn a_file_not_matching_include_is_ignored() {
    assert_change_ignored("", "notes.txt");
}

#[test]
fn a_file_in_an_ignored_folder_is_ignored() {
    assert_change_ignored(r#"ignore = ["data/**"]"#, "data/x.py");
}

#[test]
fn pycache_is_ignored() {
    assert_change_ignored("", "__pycache__/x.py");
}

#[test]
fn a_virtualenv_is_ignored() {
    assert_change_ignored("", ".venv/lib/x.py");
}

#[test]
fn ext_flag_replaces_include() {
    let p = Project::testapp("normal.py")
        .args(["--ext", "html"])
        .start();
    p.wait_for_version("v1", WAIT);

    p.write_atomic("version.py", &version_py("v2"));
    std::thread::sleep(QUIET);
    assert_eq!(
        p.starts().len(),
        1,
        "--ext html still reloaded on a .py file"
    );

    p.write_atomic("templates/index.html", "<p>hi</p>\n");
    let v2 = p.wait_for_version("v2", WAIT);
    assert_eq!(v2.generation, Some(2));
}
