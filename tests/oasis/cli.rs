//! The `oasis` binary as a user runs it.

use std::process::Command;

use crate::helpers::data_dir;

fn bare(sets: &[&str]) -> Command {
    crate::helpers::oasis_binary(sets)
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

/// Start `oasis serve` with these knobs; `Ok` once it listens (then it is stopped), `Err` with
/// its stderr if it exits first.
fn serve(toml: &str, env: &[(&str, &str)], flags: &[&str]) -> Result<(), String> {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("oasis.toml");
    std::fs::write(&config, toml).unwrap();
    let names: Vec<&str> = env.iter().map(|(k, _)| *k).collect();
    let mut child = bare(&names)
        .envs(env.iter().copied())
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--isolation",
            "in-process",
            "--config",
        ])
        .arg(&config)
        .arg("--cache-dir")
        .arg(data_dir())
        .args(flags)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut said = String::new();
    for line in std::io::BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        said.push_str(&line);
        said.push('\n');
        if line.contains("listening on http://") {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(());
        }
    }
    let status = child.wait().unwrap();
    assert!(!status.success(), "{said}");
    Err(said)
}

#[test]
fn every_knob_is_a_toml_key_an_environment_variable_and_a_flag_in_that_order() {
    crate::helpers::sandbox(); // the runtime is provisioned
    const BAD: &str = "max_connections must be 1";
    // The file alone.
    let e = serve("max_connections = 0\n", &[], &[]).unwrap_err();
    assert!(e.contains(BAD), "{e}");
    // The environment over the file, flags over the environment.
    serve(
        "max_connections = 0\n",
        &[("OASIS_MAX_CONNECTIONS", "5")],
        &[],
    )
    .unwrap();
    serve(
        "",
        &[("OASIS_MAX_CONNECTIONS", "0")],
        &["--max-connections", "5"],
    )
    .unwrap();
    let e = serve(
        "",
        &[("OASIS_MAX_CONNECTIONS", "5")],
        &["--max-connections", "0"],
    )
    .unwrap_err();
    assert!(e.contains(BAD), "{e}");
    // A knob that used to be TOML-only is a flag and a variable too.
    let e = serve("", &[("OASIS_SANDBOX_WORKERS", "0")], &[]).unwrap_err();
    assert!(e.contains("sandbox_workers must be 1 to 64"), "{e}");
    let e = serve("", &[], &["--sandbox-workers", "99"]).unwrap_err();
    assert!(e.contains("sandbox_workers must be 1 to 64"), "{e}");
    // An unknown key in the file is refused, naming it.
    let e = serve("max_conections = 5\n", &[], &[]).unwrap_err();
    assert!(e.contains("max_conections"), "{e}");
}
