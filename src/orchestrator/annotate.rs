//! Finding `sandbox:/mnt/data/…` links in a model's text.

/// A link to a file in the session: where it is in the text and the path under `/mnt/data`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Character (not byte) offsets, as OpenAI's `start_index`/`end_index` count.
    pub start: usize,
    pub end: usize,
    /// The whole link text, `sandbox:/mnt/data/…`.
    pub text: String,
    /// The path relative to `/mnt/data`.
    pub relative: String,
}

const PREFIX: &str = "sandbox:/mnt/data/";

/// Every `sandbox:/mnt/data/<path>` in `text`. A path ends at whitespace, a closing bracket or
/// a quote; trailing sentence punctuation is not part of it. In a markdown destination written
/// `(<sandbox:/mnt/data/…>)` it ends at the `>` and may hold spaces. `%XX` escapes are decoded
/// (`my%20chart.png` is the file `my chart.png`); a path whose parts are empty, `.` or `..`
/// (before or after decoding) is no link.
pub fn links(text: &str) -> Vec<Link> {
    let mut out = vec![];
    let mut from = 0;
    while let Some(pos) = text[from..].find(PREFIX) {
        let start = from + pos;
        let rest = &text[start + PREFIX.len()..];
        from = start + PREFIX.len();
        let bracketed = text[..start].ends_with('<');
        let path = if bracketed {
            match rest.find(['>', '\n']) {
                Some(n) if rest[n..].starts_with('>') => &rest[..n],
                _ => continue,
            }
        } else {
            let len = rest
                .find(|c: char| c.is_whitespace() || ")]>\"'`".contains(c))
                .unwrap_or(rest.len());
            rest[..len].trim_end_matches(['.', ',', ';', ':', '!', '?'])
        };
        let decoded = percent_encoding::percent_decode_str(path)
            .decode_utf8()
            .map(|d| d.into_owned())
            .unwrap_or_else(|_| path.to_string());
        if [path, decoded.as_str()].iter().any(|p| {
            p.is_empty()
                || p.contains('\0')
                || p.split('/').any(|c| c.is_empty() || c == "." || c == "..")
        }) {
            continue;
        }
        let end = start + PREFIX.len() + path.len();
        out.push(Link {
            start: text[..start].chars().count(),
            end: text[..end].chars().count(),
            text: text[start..end].to_string(),
            relative: decoded,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_found_with_character_offsets() {
        let text = "Voilà: [chart](sandbox:/mnt/data/chart.png). And sandbox:/mnt/data/out/a.csv, \
                    not sandbox:/mnt/data/../etc/passwd nor sandbox:/mnt/data/";
        let l = links(text);
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].relative, "chart.png");
        assert_eq!(l[0].text, "sandbox:/mnt/data/chart.png");
        let chars: Vec<char> = text.chars().collect();
        let slice: String = chars[l[0].start..l[0].end].iter().collect();
        assert_eq!(slice, l[0].text);
        assert_eq!(l[1].relative, "out/a.csv");
        let slice: String = chars[l[1].start..l[1].end].iter().collect();
        assert_eq!(slice, "sandbox:/mnt/data/out/a.csv");
    }

    #[test]
    fn escaped_and_bracketed_paths_decode_to_the_file_name() {
        let text = "[my chart](sandbox:/mnt/data/my%20chart%20%281%29.png) and \
                    [é](<sandbox:/mnt/data/dir/é x.csv>) but not sandbox:/mnt/data/%2e%2e/etc \
                    nor sandbox:/mnt/data/a%2F..%2Fb nor sandbox:/mnt/data/x%00y";
        let l = links(text);
        assert_eq!(l.len(), 2, "{l:?}");
        assert_eq!(l[0].relative, "my chart (1).png");
        assert_eq!(l[0].text, "sandbox:/mnt/data/my%20chart%20%281%29.png");
        assert_eq!(l[1].relative, "dir/é x.csv");
        let chars: Vec<char> = text.chars().collect();
        let slice: String = chars[l[1].start..l[1].end].iter().collect();
        assert_eq!(slice, "sandbox:/mnt/data/dir/é x.csv");
        // A bad escape is kept as written.
        assert_eq!(links("sandbox:/mnt/data/100%zz")[0].relative, "100%zz");
    }

    #[test]
    fn targets_round_trip_through_the_scanner() {
        for name in [
            "a.csv",
            "my chart.png",
            "out/(1) [x] 50%.txt",
            "naïve#1?.md",
            "q'\"`.txt",
        ] {
            let t = crate::model::sandbox_link(name);
            let text = format!("See [{name}]({t}).");
            let l = links(&text);
            assert_eq!(l.len(), 1, "{text}");
            assert_eq!(l[0].relative, name);
            assert_eq!(l[0].text, t);
        }
        assert_eq!(
            crate::model::sandbox_link("a b.png"),
            "sandbox:/mnt/data/a%20b.png"
        );
    }
}
