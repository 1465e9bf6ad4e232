//! Token chunking as OpenAI's file_search did it: windows of `max_tokens` tokens, each starting
//! `max_tokens - overlap_tokens` tokens after the previous one (`auto`: 800 and 400).
//!
//! Tokens are `cl100k_base`'s (tiktoken-rs), the encoding of the embedding models OpenAI's
//! file_search used (`text-embedding-3-large`), so a chunk here holds what one held there.
//! Windows are cut on token boundaries moved back to the nearest character boundary, and each
//! chunk is counted again on its own (a piece of text can tokenize a little differently than
//! it did in place) and shortened until it fits.
//!
//! The encoder works on pieces of at most [`SEGMENT_BYTES`], cut where the tokenizer's own
//! pre-split would cut (before a space, after a letter), so counts are those of the whole text
//! and a long run without spaces costs linear time rather than the quadratic time of one huge
//! BPE piece.

use std::sync::LazyLock;

use tiktoken_rs::CoreBPE;

/// How text is cut into chunks, in tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkSpec {
    /// Most tokens in a chunk.
    pub max_tokens: usize,
    /// Tokens a chunk shares with the previous one (at most half of `max_tokens`).
    pub overlap_tokens: usize,
}

impl ChunkSpec {
    /// OpenAI's `auto` strategy.
    pub const AUTO: ChunkSpec = ChunkSpec {
        max_tokens: 800,
        overlap_tokens: 400,
    };
    /// Bounds of a `static` strategy's `max_chunk_size_tokens`.
    pub const MIN_MAX_TOKENS: usize = 100;
    pub const MAX_MAX_TOKENS: usize = 4096;

    /// Whether this is a `static` strategy OpenAI accepted: `max_tokens` from 100 to 4096 and
    /// `overlap_tokens` at most half of it. The API checks this; [`chunk`] clamps instead.
    pub fn is_valid(&self) -> bool {
        (Self::MIN_MAX_TOKENS..=Self::MAX_MAX_TOKENS).contains(&self.max_tokens)
            && self.overlap_tokens <= self.max_tokens / 2
    }
}

impl Default for ChunkSpec {
    fn default() -> Self {
        ChunkSpec::AUTO
    }
}

/// Text is encoded in pieces of at most this many bytes.
pub const SEGMENT_BYTES: usize = 8 * 1024;

/// The encoder, built once (about 0.1 s), and each token's length in bytes.
struct Tokenizer {
    bpe: CoreBPE,
    lens: Vec<u16>,
}

static TOKENIZER: LazyLock<Tokenizer> = LazyLock::new(|| {
    let bpe = tiktoken_rs::cl100k_base().expect("cl100k_base's tables are compiled in");
    // Ranks run to 100,276 (the special tokens); a gap decodes to nothing.
    let lens = (0..100_300u32)
        .map(|rank| bpe.decode_bytes(&[rank]).map_or(0, |b| b.len() as u16))
        .collect();
    Tokenizer { bpe, lens }
});

impl Tokenizer {
    fn len_of(&self, token: u32) -> usize {
        match self.lens.get(token as usize) {
            Some(&n) => n as usize,
            None => self.bpe.decode_bytes(&[token]).map_or(0, |b| b.len()),
        }
    }

    fn encode(&self, text: &str) -> Vec<u32> {
        let mut tokens = Vec::with_capacity(text.len() / 4 + 1);
        let mut rest = text;
        while !rest.is_empty() {
            let cut = split_point(rest, SEGMENT_BYTES);
            tokens.extend(self.bpe.encode_ordinary(&rest[..cut]));
            rest = &rest[cut..];
        }
        tokens
    }
}

/// Where to end the next piece of `text`, at most `limit` bytes in: the last place in the
/// second half of that span where `cl100k_base`'s pre-split surely cuts too (before a space
/// that follows a non-space, or after a letter followed by a non-letter), else the last
/// character boundary.
fn split_point(text: &str, limit: usize) -> usize {
    if text.len() <= limit {
        return text.len();
    }
    let hi = text.floor_char_boundary(limit);
    let mut next: Option<char> = text[hi..].chars().next();
    for (i, prev) in text[..hi].char_indices().rev() {
        if i + prev.len_utf8() < limit / 2 {
            break;
        }
        if let Some(cur) = next
            && ((cur == ' ' && !prev.is_whitespace())
                || (prev.is_alphabetic() && !cur.is_alphabetic()))
        {
            return i + prev.len_utf8();
        }
        next = Some(prev);
    }
    if hi == 0 {
        // A limit under one character: take that character.
        text.chars().next().map_or(text.len(), char::len_utf8)
    } else {
        hi
    }
}

/// Tokens of `text` in `cl100k_base`.
pub fn count_tokens(text: &str) -> usize {
    TOKENIZER.encode(text).len()
}

/// Byte offsets of token indexes, walked from the last one asked for.
struct Offsets<'a> {
    tokenizer: &'a Tokenizer,
    tokens: &'a [u32],
    at: usize,
    byte: usize,
}

impl Offsets<'_> {
    fn of(&mut self, index: usize) -> usize {
        while self.at < index {
            self.byte += self.tokenizer.len_of(self.tokens[self.at]);
            self.at += 1;
        }
        while self.at > index {
            self.at -= 1;
            self.byte -= self.tokenizer.len_of(self.tokens[self.at]);
        }
        self.byte
    }
}

/// `text` cut into chunks of at most `spec.max_tokens` tokens (counted with [`count_tokens`]),
/// each sharing about `spec.overlap_tokens` with the one before, together covering all of it.
/// Empty text gives no chunks. An overlap past half of `max_tokens` is taken as half.
pub fn chunk(text: &str, spec: ChunkSpec) -> Vec<String> {
    spans(text, spec)
        .into_iter()
        .map(|r| text[r].to_owned())
        .collect()
}

/// The byte ranges of [`chunk`]'s chunks.
fn spans(text: &str, spec: ChunkSpec) -> Vec<std::ops::Range<usize>> {
    let tokenizer = &*TOKENIZER;
    let max = spec.max_tokens.max(1);
    let overlap = spec.overlap_tokens.min(max / 2);
    let tokens = tokenizer.encode(text);
    let n = tokens.len();
    let mut offsets = Offsets {
        tokenizer,
        tokens: &tokens,
        at: 0,
        byte: 0,
    };
    let mut chunks = Vec::with_capacity(n / (max - overlap) + 1);
    let mut start = 0;
    while start < n {
        let mut end = (start + max).min(n);
        let from = text.floor_char_boundary(offsets.of(start));
        let to = loop {
            let to = if end == n {
                text.len()
            } else {
                text.floor_char_boundary(offsets.of(end))
            };
            let count = count_tokens(&text[from..to]);
            if count <= max || end - start <= 1 {
                break to;
            }
            end -= (count - max).min(end - start - 1);
        };
        if to > from {
            chunks.push(from..to);
        }
        if end == n {
            break;
        }
        start = end.saturating_sub(overlap).max(start + 1);
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prose(bytes: usize) -> String {
        let words = [
            "the",
            "file_search",
            "tool",
            "reads",
            "documents,",
            "splits",
            "them",
            "into",
            "chunks;",
            "embeds",
            "each",
            "one.",
            "Ünïcödé",
            "日本語のテキスト",
            "naïve",
            "café",
            "42",
            "3.14159",
            "emoji🙂",
            "(parenthesised)",
            "\n",
        ];
        let mut s = String::with_capacity(bytes + 32);
        let mut x = 0x2545_f491_4f6c_dd1du64;
        while s.len() < bytes {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            s.push_str(words[(x % words.len() as u64) as usize]);
            s.push(' ');
        }
        s
    }

    fn check(text: &str, spec: ChunkSpec) -> Vec<String> {
        let spans = spans(text, spec);
        let chunks = chunk(text, spec);
        assert!(!chunks.is_empty());
        for c in &chunks {
            assert!(!c.is_empty());
            let n = count_tokens(c);
            assert!(n <= spec.max_tokens, "{n} tokens > {}", spec.max_tokens);
        }
        // The first starts the text, the last ends it, each starts inside the one before (or
        // right at its end without overlap), sharing about `overlap_tokens` with it.
        assert_eq!(spans[0].start, 0);
        assert_eq!(spans.last().unwrap().end, text.len());
        for pair in spans.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            assert!(a.start < b.start && b.start <= a.end, "{a:?} then {b:?}");
            let shared = count_tokens(&text[b.start..a.end]);
            let want = spec.overlap_tokens;
            assert!(
                shared + 3 >= want && shared <= want + 3,
                "overlap of {shared} tokens, not about {want}"
            );
        }
        chunks
    }

    #[test]
    fn auto_chunks_are_800_tokens_overlapping_by_400() {
        let text = prose(60_000);
        let chunks = check(&text, ChunkSpec::AUTO);
        let full: Vec<usize> = chunks[..chunks.len() - 1]
            .iter()
            .map(|c| count_tokens(c))
            .collect();
        assert!(full.iter().all(|&n| n >= 790), "{full:?}");
        let windows = (count_tokens(&text) - 400).div_ceil(400);
        assert!(
            chunks.len().abs_diff(windows) <= 1,
            "{} chunks",
            chunks.len()
        );
    }

    #[test]
    fn static_specs_hold_their_sizes() {
        let text = prose(40_000);
        for spec in [
            ChunkSpec {
                max_tokens: 100,
                overlap_tokens: 0,
            },
            ChunkSpec {
                max_tokens: 100,
                overlap_tokens: 50,
            },
            ChunkSpec {
                max_tokens: 4096,
                overlap_tokens: 2048,
            },
            ChunkSpec {
                max_tokens: 333,
                overlap_tokens: 17,
            },
        ] {
            assert!(spec.is_valid());
            let chunks = check(&text, spec);
            if spec.overlap_tokens == 0 {
                assert_eq!(chunks.concat(), text);
            }
        }
        assert!(
            !ChunkSpec {
                max_tokens: 99,
                overlap_tokens: 0
            }
            .is_valid()
        );
        assert!(
            !ChunkSpec {
                max_tokens: 4097,
                overlap_tokens: 0
            }
            .is_valid()
        );
        assert!(
            !ChunkSpec {
                max_tokens: 800,
                overlap_tokens: 401
            }
            .is_valid()
        );
    }

    #[test]
    fn short_and_empty_text() {
        assert!(chunk("", ChunkSpec::AUTO).is_empty());
        assert_eq!(chunk("hello world", ChunkSpec::AUTO), vec!["hello world"]);
        assert_eq!(count_tokens("hello world"), 2);
        assert_eq!(count_tokens(""), 0);
    }

    #[test]
    fn segmented_counts_match_whole_text_counts() {
        // Pieces cut where the pre-split cuts anyway: the same tokens as one encode.
        let text = prose(200_000);
        let whole = TOKENIZER.bpe.encode_ordinary(&text);
        assert_eq!(TOKENIZER.encode(&text), whole);
        let code =
            "fn main() { println!(\"{}\", x.iter().map(|v| v * 2).sum::<u32>()); }\n".repeat(2_000);
        assert_eq!(
            count_tokens(&code),
            TOKENIZER.bpe.encode_ordinary(&code).len()
        );
    }

    #[test]
    fn multibyte_text_without_spaces_is_cut_on_character_boundaries() {
        let text = "日本語のテキストは空白がありません".repeat(3_000);
        check(&text, ChunkSpec::AUTO);
        let emoji = "🙂".repeat(20_000);
        check(
            &emoji,
            ChunkSpec {
                max_tokens: 100,
                overlap_tokens: 30,
            },
        );
    }

    #[test]
    fn a_ten_megabyte_line_chunks_quickly() {
        let line = prose(10 << 20).replace('\n', " ");
        let t = std::time::Instant::now();
        let chunks = chunk(&line, ChunkSpec::AUTO);
        let took = t.elapsed();
        assert!(chunks.len() > 5_000);
        assert!(line.starts_with(&chunks[0]) && line.ends_with(chunks.last().unwrap()));
        assert!(chunks.iter().all(|c| count_tokens(c) <= 800));
        // Generous for an unoptimized build on a busy 2-core machine; about 1 s in release.
        assert!(took.as_secs() < 60, "took {took:?}");
    }

    #[test]
    fn long_runs_without_spaces_cost_linear_time() {
        for junk in [
            "a".repeat(2 << 20),
            " ".repeat(2 << 20),
            "x9".repeat(1 << 20),
        ] {
            let t = std::time::Instant::now();
            let chunks = chunk(&junk, ChunkSpec::AUTO);
            assert!(!chunks.is_empty());
            assert!(t.elapsed().as_secs() < 20, "took {:?}", t.elapsed());
        }
    }
}
