//! docx and pptx: the zip's XML parts streamed through quick-xml under one decompressed-byte
//! budget, text runs in document order (slides in presentation order).

use std::io::{BufReader, Cursor, Read};

use quick_xml::events::Event;

use super::{ExtractError, ExtractLimits, Invalid, MIB, TextOut, size};

/// An entry inflating past this many times its packed size (once past `RATIO_FLOOR` bytes) is
/// taken for a zip bomb: Office XML packs 5 to 50 times, repetitive tables a few hundred, and
/// deflate's ceiling (about 1,030) is reached only by runs of a few repeated bytes.
const MAX_RATIO: u64 = 500;
const RATIO_FLOOR: u64 = 4 * MIB;

/// An Office file's zip, read under one decompressed-byte budget.
struct OfficeZip<'a> {
    archive: zip::ZipArchive<Cursor<&'a [u8]>>,
    budget: u64,
    limit: u64,
}

impl<'a> OfficeZip<'a> {
    fn open(bytes: &'a [u8], kind: &str, limits: &ExtractLimits) -> Result<Self, ExtractError> {
        let archive = zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| {
            Invalid(format!(
                "The .{kind} file is not a valid zip archive ({e})."
            ))
        })?;
        Ok(OfficeZip {
            archive,
            budget: limits.max_unzipped_bytes,
            limit: limits.max_unzipped_bytes,
        })
    }

    fn has(&self, name: &str) -> bool {
        self.archive.index_for_name(name).is_some()
    }

    /// Streams the XML entry `name` through `on_event`, charging what it inflates.
    fn read_xml(
        &mut self,
        name: &str,
        mut on_event: impl FnMut(Event<'_>) -> Result<(), ExtractError>,
    ) -> Result<(), ExtractError> {
        let entry = self
            .archive
            .by_name(name)
            .map_err(|e| Invalid(format!("{name} could not be read from the archive ({e}).")))?;
        let packed = entry.compressed_size().max(1);
        if entry.size() > RATIO_FLOOR && entry.size() / packed > MAX_RATIO {
            return Err(bomb(name));
        }
        let budgeted = Budgeted {
            inner: entry,
            budget: self.budget,
            read: 0,
            packed,
            over: None,
        };
        let mut xml = quick_xml::Reader::from_reader(BufReader::new(budgeted));
        let mut buf = Vec::new();
        let ended = loop {
            match xml.read_event_into(&mut buf) {
                Ok(Event::Eof) => break Ok(()),
                Ok(event) => on_event(event)?,
                Err(e) => break Err(e),
            }
            buf.clear();
        };
        let budgeted = xml.get_ref().get_ref();
        self.budget = budgeted.budget;
        match (&budgeted.over, ended) {
            (Some(Over::Budget), _) => Err(Invalid(format!(
                "The file inflates to more than {}; it is refused as a possible zip bomb.",
                size(self.limit)
            ))),
            (Some(Over::Ratio), _) => Err(bomb(name)),
            (None, Err(e)) => Err(Invalid(format!("{name} is not well-formed XML ({e})."))),
            (None, Ok(())) => Ok(()),
        }
    }
}

fn bomb(name: &str) -> ExtractError {
    Invalid(format!(
        "{name} inflates more than {MAX_RATIO} times; it is refused as a possible zip bomb."
    ))
}

enum Over {
    Budget,
    Ratio,
}

/// A reader that fails once its entry inflated past the budget or the ratio.
struct Budgeted<R> {
    inner: R,
    budget: u64,
    read: u64,
    packed: u64,
    over: Option<Over>,
}

impl<R: Read> Read for Budgeted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if n as u64 > self.budget {
            self.over = Some(Over::Budget);
        } else if self.read > RATIO_FLOOR && self.read / self.packed > MAX_RATIO {
            self.over = Some(Over::Ratio);
        }
        if self.over.is_some() {
            return Err(std::io::Error::other("decompression limit"));
        }
        self.budget -= n as u64;
        Ok(n)
    }
}

/// Text runs of WordprocessingML or DrawingML: `t` elements' text, tabs inside runs, breaks,
/// and a line per paragraph (any namespace prefix: `w:`, `a:`, `m:`).
#[derive(Default)]
struct Runs {
    in_text: usize,
    in_run: usize,
}

impl Runs {
    fn on(&mut self, event: Event<'_>, out: &mut TextOut) -> Result<(), ExtractError> {
        match event {
            Event::Start(e) => match e.local_name().as_ref() {
                "t" => self.in_text += 1,
                "r" => self.in_run += 1,
                _ => {}
            },
            Event::End(e) => match e.local_name().as_ref() {
                "t" => self.in_text = self.in_text.saturating_sub(1),
                "r" => self.in_run = self.in_run.saturating_sub(1),
                "p" => out.push("\n")?,
                _ => {}
            },
            Event::Empty(e) => match e.local_name().as_ref() {
                "br" | "cr" => out.push("\n")?,
                "tab" if self.in_run > 0 => out.push("\t")?,
                "p" => out.push("\n")?,
                _ => {}
            },
            Event::Text(t) if self.in_text > 0 => out.push(&t.xml10_content())?,
            Event::CData(t) if self.in_text > 0 => out.push(&t)?,
            Event::GeneralRef(r) if self.in_text > 0 => {
                if let Ok(Some(c)) = r.resolve_char_ref() {
                    out.push(c.encode_utf8(&mut [0; 4]))?;
                } else if let Some(s) = quick_xml::escape::resolve_predefined_entity(&r) {
                    out.push(s)?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

pub(super) fn docx_text(bytes: &[u8], limits: &ExtractLimits) -> Result<String, ExtractError> {
    let mut zip = OfficeZip::open(bytes, "docx", limits)?;
    let body = "word/document.xml";
    if !zip.has(body) {
        return Err(Invalid(format!("The .docx file has no {body}.")));
    }
    let mut out = TextOut::new(limits.max_text_bytes);
    let mut runs = Runs::default();
    zip.read_xml(body, |e| runs.on(e, &mut out))?;
    Ok(out.s)
}

pub(super) fn pptx_text(bytes: &[u8], limits: &ExtractLimits) -> Result<String, ExtractError> {
    let mut zip = OfficeZip::open(bytes, "pptx", limits)?;
    let slides = slide_order(&mut zip)?;
    let mut out = TextOut::new(limits.max_text_bytes);
    for slide in slides {
        out.end_line();
        if !out.s.is_empty() {
            out.push("\n")?;
        }
        let mut runs = Runs::default();
        zip.read_xml(&slide, |e| runs.on(e, &mut out))?;
    }
    Ok(out.s)
}

/// The slides' entries in presentation order (`sldIdLst` through the relationships), or by
/// their number when those are missing.
fn slide_order(zip: &mut OfficeZip<'_>) -> Result<Vec<String>, ExtractError> {
    let deck = "ppt/presentation.xml";
    if !zip.has(deck) {
        return Err(Invalid(format!("The .pptx file has no {deck}.")));
    }
    let mut ids = Vec::new();
    zip.read_xml(deck, |event| {
        if let Event::Start(e) | Event::Empty(e) = event
            && e.local_name().as_ref() == "sldId"
        {
            for a in e.attributes().flatten() {
                if a.key.prefix().is_some() && a.key.local_name().as_ref() == "id" {
                    ids.push(
                        a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                            .unwrap_or_default()
                            .into_owned(),
                    );
                }
            }
        }
        Ok(())
    })?;
    let mut targets = std::collections::HashMap::new();
    let rels = "ppt/_rels/presentation.xml.rels";
    if zip.has(rels) {
        zip.read_xml(rels, |event| {
            if let Event::Start(e) | Event::Empty(e) = event
                && e.local_name().as_ref() == "Relationship"
            {
                let (mut id, mut target) = (None, None);
                for a in e.attributes().flatten() {
                    let value = a
                        .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                        .unwrap_or_default()
                        .into_owned();
                    match a.key.as_ref() {
                        "Id" => id = Some(value),
                        "Target" => target = Some(value),
                        _ => {}
                    }
                }
                if let (Some(id), Some(target)) = (id, target) {
                    targets.insert(id, part_name("ppt", &target));
                }
            }
            Ok(())
        })?;
    }
    let mut seen = std::collections::HashSet::new();
    let ordered: Vec<String> = ids
        .iter()
        .filter_map(|id| targets.get(id))
        .filter(|name| zip.has(name) && seen.insert(name.to_string()))
        .cloned()
        .collect();
    if !ordered.is_empty() {
        return Ok(ordered);
    }
    let mut numbered: Vec<(u64, String)> = zip
        .archive
        .file_names()
        .filter_map(|n| {
            let num = n.strip_prefix("ppt/slides/slide")?.strip_suffix(".xml")?;
            Some((num.parse().ok()?, n.to_owned()))
        })
        .collect();
    numbered.sort();
    Ok(numbered.into_iter().map(|(_, n)| n).collect())
}

/// A relationship target resolved against the folder of its source part.
fn part_name(base: &str, target: &str) -> String {
    let mut parts: Vec<&str> = match target.strip_prefix('/') {
        Some(_) => Vec::new(),
        None => base.split('/').collect(),
    };
    for seg in target.trim_start_matches('/').split('/') {
        match seg {
            ".." => {
                parts.pop();
            }
            "." | "" => {}
            s => parts.push(s),
        }
    }
    parts.join("/")
}

#[cfg(test)]
pub(in crate::retrieval) mod tests {
    use std::io::Write;

    use super::super::extract_text;
    use super::super::tests::limits;
    use super::*;

    /// A zip of `(name, content)` entries, deflated.
    pub(in crate::retrieval) fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .large_file(true);
        for (name, content) in entries {
            w.start_file(*name, opts).unwrap();
            w.write_all(content).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    const W: &str = r#"xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main""#;

    pub(in crate::retrieval) fn docx(body: &str) -> Vec<u8> {
        let doc =
            format!(r#"<?xml version="1.0"?><w:document {W}><w:body>{body}</w:body></w:document>"#);
        zip_of(&[
            ("[Content_Types].xml", b"<Types/>"),
            ("word/document.xml", doc.as_bytes()),
        ])
    }

    fn para(runs: &str) -> String {
        format!(
            r#"<w:p><w:pPr><w:tabs><w:tab w:val="left" w:pos="720"/></w:tabs></w:pPr>{runs}</w:p>"#
        )
    }

    #[test]
    fn docx_paragraphs_runs_tabs_and_breaks() {
        let body = [
            para(r#"<w:r><w:t>Hello</w:t></w:r><w:r><w:t xml:space="preserve"> world &amp; more</w:t></w:r>"#),
            para(r#"<w:r><w:t>a</w:t><w:tab/><w:t>b</w:t><w:br/><w:t>c&#233;</w:t></w:r>"#),
            para(r#"<w:r><w:instrText>PAGE</w:instrText><w:delText>gone</w:delText></w:r>"#),
            "<w:tbl><w:tr><w:tc><w:p><w:r><w:t>cell</w:t></w:r></w:p></w:tc></w:tr></w:tbl>"
                .to_owned(),
        ]
        .concat();
        let text = extract_text("Notes.DOCX", &docx(&body), &limits()).unwrap();
        assert_eq!(text, "Hello world & more\na\tb\ncé\n\ncell\n");
    }

    fn pptx(slides: &[(&str, &str)], order: &[&str]) -> Vec<u8> {
        let ids: String = order
            .iter()
            .enumerate()
            .map(|(i, rid)| format!(r#"<p:sldId id="{}" r:id="{rid}"/>"#, 256 + i))
            .collect();
        let deck = format!(
            r#"<p:presentation xmlns:p="p" xmlns:r="r"><p:sldIdLst>{ids}</p:sldIdLst></p:presentation>"#
        );
        let rels: String = slides
            .iter()
            .enumerate()
            .map(|(i, _)| {
                format!(
                    r#"<Relationship Id="rId{}" Type="slide" Target="slides/slide{}.xml"/>"#,
                    i + 2,
                    i + 1
                )
            })
            .collect();
        let rels = format!("<Relationships>{rels}</Relationships>");
        let bodies: Vec<(String, String)> = slides
            .iter()
            .enumerate()
            .map(|(i, (title, body))| {
                let p = |t: &str| format!("<a:p><a:r><a:t>{t}</a:t></a:r></a:p>");
                (
                    format!("ppt/slides/slide{}.xml", i + 1),
                    format!(
                        r#"<p:sld xmlns:a="a" xmlns:p="p"><p:cSld><p:spTree><p:sp><p:txBody>{}{}</p:txBody></p:sp></p:spTree></p:cSld></p:sld>"#,
                        p(title),
                        p(body)
                    ),
                )
            })
            .collect();
        let mut entries: Vec<(&str, &[u8])> = vec![
            ("ppt/presentation.xml", deck.as_bytes()),
            ("ppt/_rels/presentation.xml.rels", rels.as_bytes()),
        ];
        entries.extend(bodies.iter().map(|(n, b)| (n.as_str(), b.as_bytes())));
        zip_of(&entries)
    }

    #[test]
    fn pptx_slides_in_presentation_order() {
        let slides = [
            ("First file", "one"),
            ("Second file", "two"),
            ("Third file", "three"),
        ];
        // The deck shows slide3, then slide1, then slide2.
        let deck = pptx(&slides, &["rId4", "rId2", "rId3"]);
        let text = extract_text("deck.pptx", &deck, &limits()).unwrap();
        assert_eq!(
            text,
            "Third file\nthree\n\nFirst file\none\n\nSecond file\ntwo\n"
        );
        // Without a usable list, slides go by number.
        let deck = pptx(&slides, &["rId9"]);
        let text = extract_text("deck.pptx", &deck, &limits()).unwrap();
        assert!(text.starts_with("First file\none\n\nSecond"), "{text:?}");
    }

    #[test]
    fn zip_bombs_are_refused_quickly() {
        let huge = format!("<w:p><w:r><w:t>{}</w:t></w:r></w:p>", "a".repeat(64 << 20));
        let bomb = docx(&huge);
        assert!(bomb.len() < 1 << 20, "{} bytes", bomb.len());
        let t = std::time::Instant::now();
        let e = extract_text("bomb.docx", &bomb, &limits()).unwrap_err();
        assert_eq!(e.code(), "invalid_file");
        assert!(e.to_string().contains("zip bomb"), "{e}");
        assert!(t.elapsed().as_secs() < 2, "took {:?}", t.elapsed());

        // Ordinary ratios, but more than the budget: refused once the budget is spent.
        let mut x = 1u32;
        let words: String = (0..400_000)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                ["alpha ", "beta ", "gamma ", "delta "][(x >> 16) as usize % 4]
            })
            .collect();
        let doc = docx(&format!("<w:p><w:r><w:t>{words}</w:t></w:r></w:p>"));
        let tight = ExtractLimits {
            max_unzipped_bytes: 1 << 20,
            ..limits()
        };
        let e = extract_text("big.docx", &doc, &tight).unwrap_err();
        assert!(e.to_string().contains("inflates to more than 1 MiB"), "{e}");
        assert!(extract_text("big.docx", &doc, &limits()).is_ok());
    }

    #[test]
    fn broken_office_files_are_invalid() {
        let l = limits();
        let not_xml = zip_of(&[("word/document.xml", b"<w:document><w:body></w:nope>")]);
        let empty = docx("");
        let no_body = zip_of(&[("other.xml", b"<x/>")]);
        for (name, bytes) in [
            ("a.docx", b"PK\x03\x04 not really".to_vec()),
            ("a.docx", not_xml),
            ("a.docx", empty),
            ("a.docx", no_body.clone()),
            ("a.pptx", no_body),
        ] {
            let e = extract_text(name, &bytes, &l).unwrap_err();
            assert_eq!(e.code(), "invalid_file", "{e}");
        }
    }

    #[test]
    fn relationship_targets_resolve() {
        assert_eq!(
            part_name("ppt", "slides/slide1.xml"),
            "ppt/slides/slide1.xml"
        );
        assert_eq!(part_name("ppt", "/ppt/slides/s.xml"), "ppt/slides/s.xml");
        assert_eq!(part_name("ppt", "../x/./y.xml"), "x/y.xml");
    }
}
