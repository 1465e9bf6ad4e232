//! file_search's text extraction through the real `oasis extract-worker` child process, with
//! no server running: the limits the kernel enforces on it (time, memory) end a hostile
//! document with a clear `invalid_file` error.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use oasis::retrieval::extract::{ExtractLimits, Isolation, extract_bounded_with};

use crate::helpers::zlib_of_repeated;

/// The `oasis` binary, as `helpers::oasis_binary` finds it (the test binary itself is not
/// `oasis`, so `extract_bounded`'s `current_exe` would be the wrong program here).
fn oasis() -> Isolation {
    Isolation::Process(PathBuf::from(env!("CARGO_BIN_EXE_oasis")))
}

/// A PDF of `objs` (numbered from 1; the first is the catalog).
fn pdf_of(objs: &[Vec<u8>]) -> Vec<u8> {
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, o) in objs.iter().enumerate() {
        offsets.push(out.len());
        out.extend(format!("{} 0 obj\n", i + 1).bytes());
        out.extend(o);
        out.extend(b"\nendobj\n");
    }
    let xref = out.len();
    out.extend(format!("xref\n0 {}\n0000000000 65535 f \n", objs.len() + 1).bytes());
    for off in offsets {
        out.extend(format!("{off:010} 00000 n \n").bytes());
    }
    let trailer = format!(
        "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
        objs.len() + 1
    );
    out.extend(trailer.bytes());
    out
}

/// A PDF of `pages` pages in Helvetica, each drawing the content streams `contents` (objects
/// 4, 5, …, given with their dictionary entries besides `/Length`) in turn, so that one long
/// stream drawn on many pages, or many times on one, is cheap to store and costly to read.
fn pdf(contents: &[(&str, &[u8])], draws: usize, pages: usize) -> Vec<u8> {
    let n = contents.len();
    let mut objs: Vec<Vec<u8>> = vec![
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        format!(
            "<< /Type /Pages /Kids [{}] /Count {pages} >>",
            (0..pages)
                .map(|i| format!("{} 0 R", 4 + n + i))
                .collect::<Vec<_>>()
                .join(" ")
        )
        .into_bytes(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_vec(),
    ];
    for (dict, data) in contents {
        let mut o = format!("<< /Length {} {dict} >>\nstream\n", data.len()).into_bytes();
        o.extend(*data);
        o.extend(b"\nendstream");
        objs.push(o);
    }
    let refs: Vec<String> = (0..draws).map(|i| format!("{} 0 R", 4 + i % n)).collect();
    for _ in 0..pages {
        objs.push(
            format!(
                "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources \
                 << /Font << /F1 3 0 R >> >> /Contents [{}] >>",
                refs.join(" ")
            )
            .into_bytes(),
        );
    }
    pdf_of(&objs)
}

fn stored(dir: &Path, bytes: &[u8]) -> PathBuf {
    let path = dir.join(format!("blob-{}", bytes.len()));
    std::fs::write(&path, bytes).unwrap();
    path
}

#[tokio::test]
async fn a_pdf_extracts_in_the_child_process() {
    let dir = tempfile::tempdir().unwrap();
    let text = b"BT /F1 12 Tf 72 720 Td (Quarterly report) Tj ET";
    let path = stored(dir.path(), &pdf(&[("", text)], 1, 2));
    let text = extract_bounded_with(&oasis(), "Report.pdf", &path, &ExtractLimits::default())
        .await
        .unwrap();
    assert_eq!(text.matches("Quarterly report").count(), 2, "{text:?}");

    // The child's typed errors come back as they were.
    let junk = stored(dir.path(), b"\x00\x01\x02 not text");
    let e = extract_bounded_with(&oasis(), "notes.txt", &junk, &ExtractLimits::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), "invalid_file", "{e}");
    let broken = stored(dir.path(), b"%PDF-1.7\ngarbage");
    let e = extract_bounded_with(&oasis(), "a.pdf", &broken, &ExtractLimits::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), "invalid_file", "{e}");
}

#[tokio::test]
async fn a_costly_pdf_is_stopped_at_the_time_limit() {
    // 170 KB of text operators drawn on 5,000 pages: a 1 MB file that takes minutes to read.
    let content = format!("BT /F1 12 Tf {} ET", "(x) Tj ".repeat(25_000));
    let dir = tempfile::tempdir().unwrap();
    let path = stored(dir.path(), &pdf(&[("", content.as_bytes())], 1, 5_000));
    let limits = ExtractLimits {
        timeout: Duration::from_secs(2),
        ..ExtractLimits::default()
    };
    let t = Instant::now();
    let e = extract_bounded_with(&oasis(), "slow.pdf", &path, &limits)
        .await
        .unwrap_err();
    let took = t.elapsed();
    assert_eq!(e.code(), "invalid_file", "{e}");
    assert!(
        e.to_string().contains("took too long (more than 2 s)"),
        "{e}"
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

#[tokio::test]
async fn a_compression_bomb_is_stopped_at_the_memory_limit() {
    // 64 MiB of spaces deflate to 64 KB; drawn 32 times on one page they inflate to 2 GiB.
    let spaces = zlib_of_repeated(&vec![b' '; 64 << 20], 1);
    let doc = pdf(&[("/Filter /FlateDecode", &spaces)], 32, 1);
    assert!(doc.len() < 1 << 20, "{} bytes", doc.len());
    let dir = tempfile::tempdir().unwrap();
    let path = stored(dir.path(), &doc);
    let limits = ExtractLimits {
        max_memory_bytes: 512 << 20,
        ..ExtractLimits::default()
    };
    let t = Instant::now();
    let e = extract_bounded_with(&oasis(), "bomb.pdf", &path, &limits)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "invalid_file", "{e}");
    assert!(
        e.to_string()
            .contains("used too much memory (more than 512 MiB)"),
        "{e}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(60),
        "took {:?}",
        t.elapsed()
    );
}
