//! Sandbox images: one TOML manifest per image in `sandbox-images/`.
//!
//! The shipped manifests are compiled into the binary; `OASIS_IMAGES_DIR` adds (or overrides)
//! images from a folder of `<name>.toml` files.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

use super::SandboxError;
use super::limits::Limits;

const BUILTIN: &[(&str, &str)] = &[(
    "scientific",
    include_str!("../../sandbox-images/scientific.toml"),
)];

/// The image every session uses unless told otherwise.
pub const DEFAULT_IMAGE: &str = "scientific";

/// How a new interpreter gets the image's modules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Warm {
    /// A pre-initialized module with `preimport` already imported.
    Snapshot,
    /// The stock snapshot; modules are imported on first use.
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Image {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub artifact: String,
    pub warm: Warm,
    #[serde(default)]
    pub preimport: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub limits: ImageLimits,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageLimits {
    pub timeout_ms: u64,
    pub memory_bytes: u64,
    pub stdout_bytes: usize,
    pub stderr_bytes: usize,
    pub disk_bytes: u64,
    pub disk_files: u64,
}

impl Image {
    /// Load an image by name.
    pub fn load(name: &str) -> Result<Image, SandboxError> {
        if let Some(dir) = std::env::var_os("OASIS_IMAGES_DIR") {
            let path = Path::new(&dir).join(format!("{name}.toml"));
            if valid_name(name) && path.is_file() {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                return Image::parse(name, &text);
            }
        }
        match BUILTIN.iter().find(|(n, _)| *n == name) {
            Some((_, text)) => Image::parse(name, text),
            None => Err(SandboxError::UnknownImage {
                name: name.to_string(),
                known: Image::names().join(", "),
            }),
        }
    }

    /// Names of the built-in images.
    pub fn names() -> Vec<&'static str> {
        BUILTIN.iter().map(|(n, _)| *n).collect()
    }

    fn parse(name: &str, text: &str) -> Result<Image, SandboxError> {
        let mut image: Image = toml::from_str(text)
            .with_context(|| format!("parsing the manifest of image {name}"))?;
        if image.name != name {
            return Err(anyhow::anyhow!(
                "image manifest {name}.toml says its name is {}",
                image.name
            )
            .into());
        }
        if let Some(v) = std::env::var_os("OASIS_WARM") {
            image.warm = match v.to_str() {
                Some("none") => Warm::None,
                Some("snapshot") => Warm::Snapshot,
                _ => return Err(anyhow::anyhow!("OASIS_WARM must be `snapshot` or `none`").into()),
            };
        }
        for m in &image.preimport {
            if m.is_empty() || !m.split('.').all(is_identifier) {
                return Err(anyhow::anyhow!("image {name}: `{m}` is not a module name").into());
            }
        }
        Ok(image)
    }

    /// The image's default per-call limits.
    pub fn limits(&self) -> Limits {
        let l = &self.limits;
        Limits {
            timeout: Duration::from_millis(l.timeout_ms),
            memory_bytes: l.memory_bytes,
            stdout_bytes: l.stdout_bytes,
            stderr_bytes: l.stderr_bytes,
            disk_bytes: l.disk_bytes,
            disk_files: l.disk_files,
        }
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scientific_image_loads_with_pandas_and_pyplot_preimported() {
        let image = Image::load("scientific").unwrap();
        assert!(image.preimport.iter().any(|m| m == "pandas"));
        assert!(image.preimport.iter().any(|m| m == "matplotlib.pyplot"));
        assert_eq!(image.env.get("MPLBACKEND").map(String::as_str), Some("Agg"));
        assert!(image.limits().timeout >= Duration::from_secs(1));
    }

    #[test]
    fn an_unknown_image_is_a_clear_error_naming_the_known_ones() {
        let err = Image::load("gpu-magic").unwrap_err().to_string();
        assert!(err.contains("gpu-magic"), "{err}");
        assert!(err.contains("scientific"), "{err}");
    }
}
