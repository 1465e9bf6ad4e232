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
/// a quote; trailing sentence punctuation is not part of it.
pub fn links(text: &str) -> Vec<Link> {
    let mut out = vec![];
    let mut from = 0;
    while let Some(pos) = text[from..].find(PREFIX) {
        let start = from + pos;
        let rest = &text[start + PREFIX.len()..];
        let len = rest
            .find(|c: char| c.is_whitespace() || ")]>\"'`".contains(c))
            .unwrap_or(rest.len());
        let mut path = &rest[..len];
        path = path.trim_end_matches(['.', ',', ';', ':', '!', '?']);
        from = start + PREFIX.len();
        if path.is_empty()
            || path
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            continue;
        }
        let end = start + PREFIX.len() + path.len();
        out.push(Link {
            start: text[..start].chars().count(),
            end: text[..end].chars().count(),
            text: text[start..end].to_string(),
            relative: path.to_string(),
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
}
