//! Text out of a document for `file_search`, chosen by the file name's extension as OpenAI's
//! file_search chose: plain text and code, Markdown, JSON, HTML, PDF, docx and pptx.
//!
//! Two ways in:
//! - [`extract_text`] parses bytes in this process. What it reads, decompresses and returns is
//!   bounded by [`ExtractLimits`], and a parser's panic becomes [`ExtractError::Invalid`]; its
//!   time and memory are not bounded (lopdf inflates a PDF's streams whole, a parser may loop).
//! - [`extract_bounded`], the production path, runs [`extract_text`] in a child process,
//!   `oasis extract-worker`, under an address-space and CPU limit and a wall-clock timeout that
//!   kills it: a hostile document costs at most that, and never the server.
//!
//! The server resolves its own binary once at start ([`Isolation::current_exe`], before an
//! upgrade could replace the file) and hands it to the ingestion queue, which calls
//! [`extract_bounded_with`]; tests that run inside a test binary pass the real `oasis` binary
//! (`CARGO_BIN_EXE_oasis`) or [`Isolation::InProcess`].

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::time::Duration;

use ego_tree::iter::Edge;
use scraper::Node;

mod office;
mod worker;

pub use worker::{Isolation, extract_bounded, extract_bounded_with, run_worker};

const MIB: u64 = 1024 * 1024;

/// Extensions (lower case) read as UTF-8 (or UTF-16 with a byte-order mark) text as they are.
const TEXT_EXTENSIONS: &[&str] = &[
    "txt", "md", "json", "c", "cpp", "cs", "css", "go", "java", "js", "php", "py", "rb", "sh",
    "tex", "ts",
];

/// Every extension [`extract_text`] reads (lower case; names match case-insensitively).
pub const SUPPORTED_EXTENSIONS: &[&str] = &[
    "c", "cpp", "cs", "css", "docx", "go", "htm", "html", "java", "js", "json", "md", "pdf", "php",
    "pptx", "py", "rb", "sh", "tex", "ts", "txt",
];

/// What extraction may cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractLimits {
    /// Largest file read at all.
    pub max_input_bytes: u64,
    /// Largest text returned (UTF-8 bytes); past it the file is [`ExtractError::Invalid`].
    pub max_text_bytes: usize,
    /// Bytes a docx/pptx may inflate to, all parts read together.
    pub max_unzipped_bytes: u64,
    /// Wall-clock time of one extraction (the child is killed past it).
    pub timeout: Duration,
    /// Address space of the child process (`RLIMIT_AS`); not enforced in process.
    pub max_memory_bytes: u64,
}

impl Default for ExtractLimits {
    fn default() -> Self {
        ExtractLimits {
            max_input_bytes: 512 * MIB,
            max_text_bytes: 64 * MIB as usize,
            max_unzipped_bytes: 256 * MIB,
            timeout: Duration::from_secs(120),
            max_memory_bytes: 1024 * MIB,
        }
    }
}

/// Why a file gave no text. The message is written for a vector store file's `last_error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtractError {
    /// Not a file type file_search reads.
    #[error("{0}")]
    Unsupported(String),
    /// A broken, empty, too large or too costly file.
    #[error("{0}")]
    Invalid(String),
    /// Our fault: the extractor could not be started, the stored file could not be read.
    #[error("{0}")]
    Failed(String),
}

impl ExtractError {
    /// The `last_error.code` OpenAI used for this.
    pub fn code(&self) -> &'static str {
        match self {
            ExtractError::Unsupported(_) => "unsupported_file",
            ExtractError::Invalid(_) => "invalid_file",
            ExtractError::Failed(_) => "server_error",
        }
    }
}

use ExtractError::{Failed, Invalid};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Text,
    Html,
    Pdf,
    Docx,
    Pptx,
}

fn format_of(filename: &str) -> Option<Format> {
    let ext = Path::new(filename)
        .extension()?
        .to_str()?
        .to_ascii_lowercase();
    Some(match ext.as_str() {
        "html" | "htm" => Format::Html,
        "pdf" => Format::Pdf,
        "docx" => Format::Docx,
        "pptx" => Format::Pptx,
        e if TEXT_EXTENSIONS.contains(&e) => Format::Text,
        _ => return None,
    })
}

fn unsupported(filename: &str) -> ExtractError {
    ExtractError::Unsupported(match Path::new(filename).extension() {
        Some(ext) => format!(
            "Files with extensions [.{}] are not supported for retrieval.",
            ext.to_string_lossy()
        ),
        None => "Files without an extension are not supported for retrieval.".to_owned(),
    })
}

/// Whether `filename`'s extension is one file_search reads.
pub fn is_supported(filename: &str) -> bool {
    format_of(filename).is_some()
}

/// The text of a document, in this process (see the module docs for what that bounds).
pub fn extract_text(
    filename: &str,
    bytes: &[u8],
    limits: &ExtractLimits,
) -> Result<String, ExtractError> {
    let format = format_of(filename).ok_or_else(|| unsupported(filename))?;
    if bytes.len() as u64 > limits.max_input_bytes {
        return Err(too_large(limits.max_input_bytes));
    }
    let parsed = catch_unwind(AssertUnwindSafe(|| match format {
        Format::Text => text_of(bytes, limits.max_text_bytes),
        Format::Html => html_text(bytes, limits.max_text_bytes),
        Format::Pdf => pdf_text(bytes),
        Format::Docx => office::docx_text(bytes, limits),
        Format::Pptx => office::pptx_text(bytes, limits),
    }));
    let text = match parsed {
        Ok(result) => result?,
        Err(panic) => {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| format!(" ({s})"))
                .or_else(|| panic.downcast_ref::<String>().map(|s| format!(" ({s})")))
                .unwrap_or_default();
            return Err(Invalid(format!("The file could not be parsed{why}.")));
        }
    };
    if text.len() > limits.max_text_bytes {
        return Err(too_much_text(limits.max_text_bytes));
    }
    if text.trim().is_empty() {
        return Err(Invalid("The file contains no text.".to_owned()));
    }
    Ok(text)
}

/// A byte count for a message: whole MiB as such, anything else in bytes.
fn size(bytes: u64) -> String {
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{bytes} bytes")
    }
}

fn too_large(max: u64) -> ExtractError {
    Invalid(format!(
        "The file is larger than {}, the most file_search reads.",
        size(max)
    ))
}

fn too_much_text(max: usize) -> ExtractError {
    Invalid(format!(
        "The file holds more than {} of text, the most file_search reads.",
        size(max as u64)
    ))
}

// ---------------------------------------------------------------------------------------------
// Text, HTML, PDF

/// Text as UTF-8 (a BOM dropped) or UTF-16 with a BOM; NULs or many control characters mean
/// binary data.
fn text_of(bytes: &[u8], max_text: usize) -> Result<String, ExtractError> {
    let text = match bytes {
        [0xFF, 0xFE, rest @ ..] => utf16(rest, u16::from_le_bytes)?,
        [0xFE, 0xFF, rest @ ..] => utf16(rest, u16::from_be_bytes)?,
        [0xEF, 0xBB, 0xBF, rest @ ..] | rest => {
            // Refused before it is copied.
            if rest.len() > max_text {
                return Err(too_much_text(max_text));
            }
            utf8(rest)?
        }
    };
    if text.len() > max_text {
        return Err(too_much_text(max_text));
    }
    let sample = &text.as_bytes()[..text.len().min(1 << 20)];
    let controls = sample
        .iter()
        .filter(|&&b| (b < b' ' && !b"\t\n\r\x0b\x0c\x1b".contains(&b)) || b == 0x7f)
        .count();
    if text.contains('\0') || controls > sample.len() / 100 + 8 {
        return Err(Invalid("The file holds binary data, not text.".to_owned()));
    }
    Ok(text)
}

fn utf8(bytes: &[u8]) -> Result<String, ExtractError> {
    String::from_utf8(bytes.to_vec()).map_err(|e| {
        Invalid(format!(
            "The file is not UTF-8 text (invalid byte at offset {}).",
            e.utf8_error().valid_up_to()
        ))
    })
}

fn utf16(bytes: &[u8], unit: fn([u8; 2]) -> u16) -> Result<String, ExtractError> {
    let units = bytes.chunks(2).map(|c| match c {
        [a, b] => Ok(unit([*a, *b])),
        _ => Err(()),
    });
    let mut out = String::with_capacity(bytes.len() / 2);
    for c in char::decode_utf16(
        units
            .collect::<Result<Vec<u16>, ()>>()
            .map_err(|()| bad_utf16())?,
    ) {
        out.push(c.map_err(|_| bad_utf16())?);
    }
    Ok(out)
}

fn bad_utf16() -> ExtractError {
    Invalid("The file is not valid UTF-16 text.".to_owned())
}

/// Text collected up to a byte cap.
struct TextOut {
    s: String,
    max: usize,
}

impl TextOut {
    fn new(max: usize) -> Self {
        TextOut {
            s: String::new(),
            max,
        }
    }

    fn push(&mut self, s: &str) -> Result<(), ExtractError> {
        self.s.push_str(s);
        if self.s.len() > self.max {
            return Err(too_much_text(self.max));
        }
        Ok(())
    }

    /// Ends the current line (spaces before it dropped), unless at a line's start.
    fn end_line(&mut self) {
        self.s.truncate(self.s.trim_end_matches([' ', '\t']).len());
        if !self.s.is_empty() && !self.s.ends_with('\n') {
            self.s.push('\n');
        }
    }

    /// HTML text outside `<pre>`: whitespace runs become one space.
    fn push_collapsed(&mut self, t: &str) -> Result<(), ExtractError> {
        for c in t.chars() {
            if !c.is_whitespace() {
                self.s.push(c);
            } else if !self.s.is_empty() && !self.s.ends_with([' ', '\n', '\t']) {
                self.s.push(' ');
            }
        }
        self.push("")
    }
}

/// Elements whose content a reader never sees.
const HTML_HIDDEN: &[&str] = &["script", "style", "noscript", "template"];
/// Elements that start and end a line.
#[rustfmt::skip]
const HTML_BLOCKS: &[&str] = &[
    "address", "article", "aside", "blockquote", "caption", "dd", "details", "div", "dl", "dt",
    "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr",
    "li", "main", "nav", "ol", "p", "pre", "section", "summary", "table", "title", "tr", "ul",
];

/// HTML as a browser parses it (broken markup, entities), walked without recursion: the text
/// of the title and body, scripts and styles dropped, one line per block, tabs between cells.
fn html_text(bytes: &[u8], max_text: usize) -> Result<String, ExtractError> {
    let src = text_of(bytes, usize::MAX)?;
    let doc = scraper::Html::parse_document(&src);
    drop(src);
    let mut out = TextOut::new(max_text);
    let (mut hidden, mut pre) = (0usize, 0usize);
    for edge in doc.tree.root().traverse() {
        match edge {
            Edge::Open(node) => match node.value() {
                Node::Element(e) => {
                    let name = e.name();
                    if HTML_HIDDEN.contains(&name) {
                        hidden += 1;
                    } else if name == "pre" || name == "textarea" {
                        pre += 1;
                    }
                    if hidden == 0 && name == "br" {
                        out.s.truncate(out.s.trim_end_matches(' ').len());
                        out.push("\n")?;
                    } else if hidden == 0 && HTML_BLOCKS.contains(&name) {
                        out.end_line();
                    }
                }
                Node::Text(t) if hidden == 0 && pre > 0 => out.push(t)?,
                Node::Text(t) if hidden == 0 => out.push_collapsed(t)?,
                _ => {}
            },
            Edge::Close(node) => {
                if let Node::Element(e) = node.value() {
                    let name = e.name();
                    if HTML_HIDDEN.contains(&name) {
                        hidden = hidden.saturating_sub(1);
                    } else if name == "pre" || name == "textarea" {
                        pre = pre.saturating_sub(1);
                    }
                    if hidden == 0 && HTML_BLOCKS.contains(&name) {
                        out.end_line();
                    } else if hidden == 0 && (name == "td" || name == "th") {
                        out.push("\t")?;
                    }
                }
            }
        }
    }
    Ok(out.s)
}

/// A PDF's text, page by page (pages separated by a blank line).
fn pdf_text(bytes: &[u8]) -> Result<String, ExtractError> {
    let pages = pdf_extract::extract_text_from_mem_by_pages(bytes)
        .map_err(|e| Invalid(format!("The PDF could not be read ({e}).")))?;
    Ok(pages.join("\n\n"))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::retrieval) fn limits() -> ExtractLimits {
        ExtractLimits::default()
    }

    /// A PDF with one page per entry of `pages`, each a line of Helvetica text; `repeat` shares
    /// one content stream among that many copies of the pages (a document that is cheap to
    /// store and costly to read).
    pub(in crate::retrieval) fn pdf(pages: &[&str], repeat: usize) -> Vec<u8> {
        let mut objs = vec![
            "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
            String::new(),
            "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_owned(),
        ];
        let mut kids = Vec::new();
        for text in pages {
            let stream = format!("BT /F1 12 Tf 72 720 Td ({text}) Tj ET");
            objs.push(format!(
                "<< /Length {} >>\nstream\n{stream}\nendstream",
                stream.len()
            ));
            let content = objs.len();
            for _ in 0..repeat {
                objs.push(format!(
                    "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources \
                     << /Font << /F1 3 0 R >> >> /Contents {content} 0 R >>"
                ));
                kids.push(format!("{} 0 R", objs.len()));
            }
        }
        objs[1] = format!(
            "<< /Type /Pages /Kids [{}] /Count {} >>",
            kids.join(" "),
            kids.len()
        );
        let mut out = b"%PDF-1.4\n".to_vec();
        let mut offsets = Vec::new();
        for (i, o) in objs.iter().enumerate() {
            offsets.push(out.len());
            out.extend(format!("{} 0 obj\n{o}\nendobj\n", i + 1).bytes());
        }
        let xref = out.len();
        out.extend(format!("xref\n0 {}\n0000000000 65535 f \n", objs.len() + 1).bytes());
        for off in offsets {
            out.extend(format!("{off:010} 00000 n \n").bytes());
        }
        out.extend(
            format!(
                "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
                objs.len() + 1
            )
            .bytes(),
        );
        out
    }

    #[test]
    fn names_choose_the_format() {
        for ok in [
            "a.txt", "b.MD", "c.Py", "page.HTM", "x.html", "r.pdf", "d.docx", "s.pptx",
        ] {
            assert!(is_supported(ok), "{ok}");
        }
        for no in [
            "a.exe",
            "Makefile",
            ".txt",
            "a.tar.gz",
            "a.doc",
            "a.txt.zip",
        ] {
            assert!(!is_supported(no), "{no}");
        }
        let e = extract_text("setup.exe", b"MZ\x90\0", &limits()).unwrap_err();
        assert_eq!(e.code(), "unsupported_file");
        assert_eq!(
            e.to_string(),
            "Files with extensions [.exe] are not supported for retrieval."
        );
        for ext in SUPPORTED_EXTENSIONS {
            assert!(is_supported(&format!("f.{ext}")));
        }
    }

    #[test]
    fn text_files_are_utf8_or_utf16_with_a_bom() {
        let l = limits();
        assert_eq!(
            extract_text("a.py", b"print('hi')\n", &l).unwrap(),
            "print('hi')\n"
        );
        assert_eq!(
            extract_text("a.md", b"\xEF\xBB\xBF# T\n", &l).unwrap(),
            "# T\n"
        );
        let utf16: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain("héllo".encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        assert_eq!(extract_text("a.txt", &utf16, &l).unwrap(), "héllo");
        let json = br#"{"k": ["v", 1]}"#;
        assert_eq!(
            extract_text("a.JSON", json, &l).unwrap(),
            r#"{"k": ["v", 1]}"#
        );
    }

    #[test]
    fn broken_text_is_invalid() {
        let l = limits();
        let mut junk = vec![0u8; 4096];
        let mut x = 7u32;
        for b in &mut junk {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            *b = (x >> 16) as u8;
        }
        for (name, bytes) in [
            ("junk.txt", junk.as_slice()),
            ("zeros.txt", &[0u8; 1000][..]),
            ("latin1.txt", b"caf\xe9"),
            ("empty.txt", b""),
            ("blank.md", b" \n\t\n"),
            ("odd.txt", b"\xFF\xFEa"),
        ] {
            let e = extract_text(name, bytes, &l).unwrap_err();
            assert_eq!(e.code(), "invalid_file", "{name}: {e}");
        }
    }

    #[test]
    fn sizes_are_capped() {
        let l = ExtractLimits {
            max_input_bytes: 100,
            max_text_bytes: 10,
            ..limits()
        };
        let e = extract_text("a.txt", &[b'a'; 101], &l).unwrap_err();
        assert!(e.to_string().contains("larger than"), "{e}");
        let e = extract_text("a.txt", &[b'a'; 50], &l).unwrap_err();
        assert!(e.to_string().contains("more than"), "{e}");
        let page = format!("<p>{}</p>", "word ".repeat(10));
        assert_eq!(
            extract_text("a.html", page.as_bytes(), &l)
                .unwrap_err()
                .code(),
            "invalid_file"
        );
    }

    #[test]
    fn a_ten_megabyte_line_extracts() {
        let line = "lorem ipsum dolor sit amet ".repeat(400_000);
        let text = extract_text("big.txt", line.as_bytes(), &limits()).unwrap();
        assert_eq!(text.len(), line.len());
    }

    #[test]
    fn html_drops_markup_scripts_and_styles() {
        let page = r#"<!doctype html><html><head><title>The Title</title>
            <style>body { color: red }</style><script>var secret = 1;</script></head>
            <body><h1>Heading &amp; more</h1><p>First   para<br>graph &lt;b&gt; &eacute;t&eacute;
            &#x1F600;</p><noscript>enable js</noscript><div>Second<span> line</span></div>
            <table><tr><td>a</td><td>b</td></tr></table><pre>  kept
   spaces</pre><p>unclosed <b>bold <i>nested</p></body></html>"#;
        let text = extract_text("page.html", page.as_bytes(), &limits()).unwrap();
        for want in [
            "The Title\n",
            "Heading & more\n",
            "First para\ngraph <b> été 😀",
            "Second line\n",
            "a\tb",
            "  kept\n   spaces",
            "unclosed bold nested",
        ] {
            assert!(text.contains(want), "{want:?} not in {text:?}");
        }
        for gone in ["color", "secret", "enable js", "<p>", "&amp;"] {
            assert!(!text.contains(gone), "{gone:?} in {text:?}");
        }
    }

    #[test]
    fn pdf_pages_extract_in_order() {
        let doc = pdf(&["Hello from page one", "And page two"], 1);
        let text = extract_text("Report.PDF", &doc, &limits()).unwrap();
        let (one, two) = (text.find("Hello from page one"), text.find("And page two"));
        assert!(one.is_some() && two.is_some() && one < two, "{text:?}");
    }

    #[test]
    fn broken_pdfs_are_invalid_not_panics() {
        let good = pdf(&["Hello"], 1);
        let l = limits();
        for (what, bytes) in [
            ("garbage", b"this is not a pdf at all".to_vec()),
            ("header only", b"%PDF-1.7\n".to_vec()),
            ("truncated", good[..good.len() / 2].to_vec()),
            ("no pages", {
                let mut b = good.clone();
                let at = b.windows(5).position(|w| w == b"/Kids").unwrap();
                b[at..at + 5].copy_from_slice(b"/Kidz");
                b
            }),
        ] {
            let e = extract_text("x.pdf", &bytes, &l).unwrap_err();
            assert_eq!(e.code(), "invalid_file", "{what}: {e}");
        }
    }
}
