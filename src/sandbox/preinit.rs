//! Pre-initialized snapshots: an image's modules imported once, at build time, with
//! `wasmtime-wizer`, so that every new interpreter starts with them already in memory.
//!
//! The runtime's `wizer.initialize` export runs one fixed line of Python (the pre-import line,
//! a C string in the data section) and then the clean-up a snapshot needs (`gc.freeze`, resetting
//! the preopens). Oasis overwrites that line, in place and at the same length, with a line that
//! runs `/tmp/oasis-init.py`, which it writes with the image's imports. Nothing else in the
//! module changes. The result is compiled and cached like any module, keyed by the input's
//! hash, the image's recipe and this file's `RECIPE_VERSION`.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use wasmtime::{Engine, Module, Store};
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use super::engine::ModuleCache;
use super::image::Image;
use super::progress::Progress;
use super::runtime::Runtime;
use super::wasi::{DiskQuota, Door, MemoryLimiter, OutputSink, State, StreamKind};

/// Bump when the way snapshots are built changes.
const RECIPE_VERSION: &str = "1";

/// The stock pre-import line in `python.wasm` (NUL-terminated in its data section).
const STOCK_LINE: &[u8] = b"import encodings, io, os, sys, json, csv, re, _colorize\0";
/// What Oasis puts there instead (padded with spaces to the same length).
const INIT_LINE: &str = "exec(open('/tmp/oasis-init.py').read(),{})";

/// The compiled pre-initialized module of `image`, built on first use, and its cache key.
pub fn module(
    engine: &Engine,
    cache: &ModuleCache,
    runtime: &Runtime,
    image: &Image,
    progress: &Progress,
) -> anyhow::Result<(Module, String)> {
    let sha = runtime.pin.artifact_sha256(&image.artifact)?;
    let script = init_script(image);
    let recipe = format!(
        "preinit {RECIPE_VERSION}\n{}\n{script}\n{:?}",
        super::globals::VERSION,
        image.env
    );
    let key = cache.key(engine, &format!("{}-preinit", image.name), sha, &recipe);
    // Measured on 2 cores: 42 s to pre-initialize (most of it compiling the runtime), then
    // 17 s to compile the snapshot, whose functions the first compile left in the cache.
    let module = cache.get_or_compile(engine, &key, progress, Duration::from_secs(17), || {
        let phase = progress.phase(
            &format!(
                "pre-initializing image `{}` (importing {}; once per runtime pin)",
                image.name,
                image.preimport.join(", ")
            ),
            Duration::from_secs(42),
        );
        let out = build(engine, runtime, image, &script)?;
        phase.finish();
        super::globals::export_mutable_globals(&out)
    })?;
    Ok((module, key))
}

fn init_script(image: &Image) -> String {
    let mut s = String::from("import encodings, io, os, sys, json, csv, re, _colorize\n");
    for m in &image.preimport {
        s.push_str(&format!("import {m}\n"));
    }
    // Build matplotlib's font list now, not in every session.
    if image.preimport.iter().any(|m| m.starts_with("matplotlib")) {
        s.push_str("import matplotlib.font_manager\nmatplotlib.font_manager.fontManager\n");
    }
    // Oasis's helper module, so a new session need not compile it.
    s.push_str(&super::interp::define_helper_code());
    s
}

/// Patch the pre-import line of `wasm` to run the init script.
fn patch(mut wasm: Vec<u8>) -> anyhow::Result<Vec<u8>> {
    let hits: Vec<usize> = wasm
        .windows(STOCK_LINE.len())
        .enumerate()
        .filter(|(_, w)| *w == STOCK_LINE)
        .map(|(i, _)| i)
        .collect();
    let [at] = hits.as_slice() else {
        bail!(
            "python.wasm has {} copies of its stock pre-import line (expected 1); \
             this runtime cannot be pre-initialized by Oasis",
            hits.len()
        );
    };
    let mut line = INIT_LINE.as_bytes().to_vec();
    line.resize(STOCK_LINE.len() - 1, b' ');
    wasm[*at..*at + line.len()].copy_from_slice(&line);
    Ok(wasm)
}

fn build(
    engine: &Engine,
    runtime: &Runtime,
    image: &Image,
    script: &str,
) -> anyhow::Result<Vec<u8>> {
    let input = runtime.artifact(&image.artifact);
    let wasm = std::fs::read(&input).with_context(|| format!("reading {}", input.display()))?;
    let wasm = patch(wasm)?;
    let scratch = tempfile::tempdir().context("creating a scratch folder")?;
    let tmp = scratch.path().join("tmp");
    std::fs::create_dir_all(tmp.join("home"))?;
    std::fs::write(tmp.join("oasis-init.py"), script)?;
    for (k, v) in &image.env {
        if let Some(rest) = v.strip_prefix("/tmp/")
            && k.ends_with("DIR")
        {
            std::fs::create_dir_all(tmp.join(rest))?;
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let out = rt.block_on(wize(engine, runtime, image, &tmp, &wasm))?;
    Ok(out)
}

async fn wize(
    engine: &Engine,
    runtime: &Runtime,
    image: &Image,
    tmp: &Path,
    wasm: &[u8],
) -> anyhow::Result<Vec<u8>> {
    let stdout = OutputSink::new(StreamKind::Stdout);
    let stderr = OutputSink::new(StreamKind::Stderr);
    stdout.reset(1 << 20, None);
    stderr.reset(1 << 20, None);
    let mut env: Vec<(String, String)> = vec![
        ("HOME".into(), "/tmp/home".into()),
        ("PYTHONTZPATH".into(), String::new()),
        ("TMPDIR".into(), "/tmp".into()),
    ];
    for (k, v) in &image.env {
        env.retain(|(ek, _)| ek != k);
        env.push((k.clone(), v.clone()));
    }
    env.sort();
    let mut b = WasiCtxBuilder::new();
    b.args(&["/usr/local/bin/python.wasm"])
        .envs(&env)
        .stdout(stdout.clone())
        .stderr(stderr.clone())
        .allow_blocking_current_thread(true);
    b.preopened_dir(runtime.stdlib_dir(), "/usr/local/lib", FsPerms::ReadOnly)?;
    b.preopened_dir(
        runtime.mpl_data_dir(),
        format!(
            "/usr/local/lib/{}/matplotlib/mpl-data",
            runtime.stdlib_zip_name()
        ),
        FsPerms::ReadOnly,
    )?;
    b.preopened_dir(tmp, "/tmp", FsPerms::ReadWrite)?;
    let state = State {
        wasi: b.build_p1(),
        limiter: MemoryLimiter {
            max_bytes: 4 << 30,
            hit: false,
        },
        disk: DiskQuota {
            roots: vec![],
            max_bytes: u64::MAX,
            max_files: u64::MAX,
            used_bytes: 0,
            used_files: 0,
            hit: false,
        },
        door: Door::default(),
    };
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limiter);
    store.set_epoch_deadline(u64::MAX / 2);
    let linker = super::wasi::linker(engine)?;
    let result = wasmtime_wizer::Wizer::new()
        .init_func("wizer.initialize")
        .run(&mut store, wasm, async |store, module| {
            linker.instantiate_async(store, module).await
        })
        .await;
    match result {
        Ok(bytes) => Ok(bytes),
        Err(e) => {
            let (err, _) = stderr.take();
            let (out, _) = stdout.take();
            bail!(
                "pre-initializing image `{}` failed: {e:#}\nstdout: {}\nstderr: {}",
                image.name,
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&err)
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_init_line_fits_in_the_stock_line() {
        assert!(INIT_LINE.len() < STOCK_LINE.len());
        let mut wasm = b"xx\0".to_vec();
        wasm.extend_from_slice(STOCK_LINE);
        wasm.extend_from_slice(b"yy");
        let patched = patch(wasm).unwrap();
        let text = String::from_utf8(patched).unwrap();
        assert!(text.contains(INIT_LINE));
        assert!(!text.contains("_colorize"));
        assert_eq!(text.len(), 3 + STOCK_LINE.len() + 2);
    }

    #[test]
    fn a_module_without_the_stock_line_is_refused() {
        assert!(patch(b"no line here".to_vec()).is_err());
    }
}
