//! The `oasis` binary as a user runs it.

use std::process::Command;

use crate::helpers::data_dir;

/// The binary with only the `OASIS_*` variables in `sets` that the caller then sets (a
/// developer's exported ones are removed).
fn bare(sets: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_oasis"));
    for k in crate::helpers::foreign_oasis_vars(sets) {
        c.env_remove(k);
    }
    c
}

fn oasis() -> Command {
    let mut c = bare(&["OASIS_DATA_DIR"]);
    c.env_remove("OASIS_RUNTIME_DIR")
        .env("OASIS_DATA_DIR", data_dir());
    c
}

#[test]
fn exec_prints_what_the_code_printed_and_exits_with_its_status() {
    crate::helpers::sandbox(); // provision once, shared with the other tests
    let out = oasis()
        .args(["exec", "-c", "print(sum(range(10)))"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "45\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success());

    let dir = tempfile::tempdir().unwrap();
    let out = oasis()
        .args(["exec", "--data"])
        .arg(dir.path())
        .args([
            "-c",
            "open('/mnt/data/out.txt', 'w').write('hi')\nraise SystemExit(3)",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out.txt")).unwrap(),
        "hi"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("created /mnt/data/out.txt"), "{err}");

    let out = oasis()
        .args(["exec", "--timeout", "0.5", "-c", "while True: pass"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(124));
    assert!(String::from_utf8_lossy(&out.stderr).contains("timeout"));
}

#[test]
fn a_missing_python3_or_runtime_dir_is_named_in_the_error() {
    let fresh = tempfile::tempdir().unwrap();
    let out = bare(&["OASIS_DATA_DIR"])
        .args(["runtime", "fetch"])
        .env("OASIS_DATA_DIR", fresh.path())
        .env_remove("OASIS_RUNTIME_DIR")
        .env("PATH", fresh.path()) // no python3 on it
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("python3 is not installed"), "{err}");

    let out = bare(&["OASIS_RUNTIME_DIR"])
        .args(["runtime", "fetch"])
        .env("OASIS_RUNTIME_DIR", fresh.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("OASIS_RUNTIME_DIR is missing"), "{err}");
}
