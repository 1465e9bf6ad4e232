//! The runtime module's mutable globals, exported so the host can read and set them (as wizer
//! does while it snapshots): a hibernated interpreter's state is its linear memory plus these.
//!
//! The transform adds one export per mutable global, `oasis_global_<index>`, and changes
//! nothing else: every other section is copied byte for byte.

use anyhow::{Context, bail};
use wasmparser::{BinaryReader, ExternalKind, Parser, Payload, TypeRef};

/// Prefix of the exports the transform adds.
pub const PREFIX: &str = "oasis_global_";

/// Bump when the transform changes (it is part of compiled modules' cache keys).
pub const VERSION: &str = "globals 1";

const EXPORT_SECTION: u8 = 7;

/// `wasm` with each mutable global (imported or defined) exported as `oasis_global_<index>`.
pub fn export_mutable_globals(wasm: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut globals = 0u32;
    let mut mutable = vec![];
    let mut exports: Vec<(String, wasm_encoder::ExportKind, u32)> = vec![];
    let mut saw_exports = false;
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.context("reading the runtime module")? {
            Payload::ImportSection(r) => {
                for import in r.into_imports() {
                    if let TypeRef::Global(g) = import?.ty {
                        if g.mutable {
                            mutable.push(globals);
                        }
                        globals += 1;
                    }
                }
            }
            Payload::GlobalSection(r) => {
                for g in r {
                    if g?.ty.mutable {
                        mutable.push(globals);
                    }
                    globals += 1;
                }
            }
            Payload::ExportSection(r) => {
                saw_exports = true;
                for e in r {
                    let e = e?;
                    exports.push((e.name.to_string(), kind(e.kind)?, e.index));
                }
            }
            _ => {}
        }
    }
    if !saw_exports {
        bail!("the runtime module has no export section");
    }
    let mut section = wasm_encoder::ExportSection::new();
    for (name, kind, index) in &exports {
        if name.starts_with(PREFIX) {
            bail!("the runtime module already exports `{name}`");
        }
        section.export(name, *kind, *index);
    }
    for g in &mutable {
        section.export(
            &format!("{PREFIX}{g}"),
            wasm_encoder::ExportKind::Global,
            *g,
        );
    }
    // Copy the sections, swapping in the new export section.
    let mut out = Vec::with_capacity(wasm.len() + 256);
    out.extend_from_slice(wasm.get(..8).context("not a wasm module")?);
    let mut pos = 8;
    while pos < wasm.len() {
        let id = wasm[pos];
        let mut r = BinaryReader::new(&wasm[pos + 1..], 0);
        let size = r.read_var_u32()? as usize;
        let start = pos + 1 + r.original_position();
        let end = start
            .checked_add(size)
            .filter(|e| *e <= wasm.len())
            .context("a section runs past the module's end")?;
        if id == EXPORT_SECTION {
            use wasm_encoder::Encode;
            out.push(EXPORT_SECTION);
            section.encode(&mut out);
        } else {
            out.extend_from_slice(&wasm[pos..end]);
        }
        pos = end;
    }
    Ok(out)
}

fn kind(k: ExternalKind) -> anyhow::Result<wasm_encoder::ExportKind> {
    use wasm_encoder::ExportKind as E;
    Ok(match k {
        ExternalKind::Func | ExternalKind::FuncExact => E::Func,
        ExternalKind::Table => E::Table,
        ExternalKind::Memory => E::Memory,
        ExternalKind::Global => E::Global,
        ExternalKind::Tag => E::Tag,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutable_globals_are_exported_and_nothing_else_changes() {
        let wasm = wat::parse_str(
            r#"(module
                (import "env" "g" (global $imp (mut i32)))
                (import "env" "c" (global $c i64))
                (global $sp (mut i32) (i32.const 1024))
                (global $k i32 (i32.const 7))
                (global $f (mut f64) (f64.const 1.5))
                (memory (export "memory") 1)
                (func (export "bump") (global.set $sp (i32.add (global.get $sp) (i32.const 1))))
                (data (i32.const 0) "hello"))"#,
        )
        .unwrap();
        let out = export_mutable_globals(&wasm).unwrap();
        wasmparser::Validator::new().validate_all(&out).unwrap();
        let mut names = vec![];
        for p in Parser::new(0).parse_all(&out) {
            if let Payload::ExportSection(r) = p.unwrap() {
                for e in r {
                    let e = e.unwrap();
                    names.push((e.name.to_string(), e.index));
                }
            }
        }
        assert_eq!(
            names,
            vec![
                ("memory".to_string(), 0),
                ("bump".to_string(), 0),
                ("oasis_global_0".to_string(), 0),
                ("oasis_global_2".to_string(), 2),
                ("oasis_global_4".to_string(), 4),
            ]
        );
        assert!(out.windows(5).any(|w| w == b"hello"));
    }
}
