//! The text analyzer BM25 indexes and queries with: words are runs of letters and digits
//! (Unicode), lowercased; each Han, Hiragana or Katakana character is a word of its own (those
//! scripts put no spaces between words); English stopwords are dropped and the rest reduced by
//! the Snowball English stemmer. `oasis bench retrieval --analyzers` measures each choice.

use std::borrow::Cow;

use rust_stemmers::{Algorithm, Stemmer};

/// Words longer than this (in bytes) are dropped: hashes, base64 and the like only bloat the
/// vocabulary.
const MAX_WORD_BYTES: usize = 64;

/// Which steps the analyzer takes after splitting and lowercasing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnalyzerConfig {
    pub stopwords: bool,
    pub stem: bool,
}

impl Default for AnalyzerConfig {
    fn default() -> Self {
        AnalyzerConfig {
            stopwords: true,
            stem: true,
        }
    }
}

pub(super) struct Analyzer {
    config: AnalyzerConfig,
    stemmer: Stemmer,
}

impl Analyzer {
    pub(super) fn new(config: AnalyzerConfig) -> Analyzer {
        Analyzer {
            config,
            stemmer: Stemmer::create(Algorithm::English),
        }
    }

    /// Calls `f` with each term of `text`, in order.
    pub(super) fn terms(&self, text: &str, mut f: impl FnMut(&str)) {
        self.words(text, |w| f(&self.stem(w)));
    }

    /// Calls `f` with each word of `text` that becomes a term (lowercased, not a stopword),
    /// before stemming: [`Analyzer::stem`] turns it into its term (indexing caches that).
    pub(super) fn words(&self, text: &str, mut f: impl FnMut(&str)) {
        let mut word = String::new();
        let mut emit = |word: &mut String| {
            if !word.is_empty() {
                if word.len() <= MAX_WORD_BYTES && !(self.config.stopwords && is_stopword(word)) {
                    f(word);
                }
                word.clear();
            }
        };
        for c in text.chars() {
            if is_ideograph(c) {
                emit(&mut word);
                word.push(c);
                emit(&mut word);
            } else if c.is_alphanumeric() {
                if c.is_ascii() {
                    word.push(c.to_ascii_lowercase());
                } else {
                    word.extend(c.to_lowercase());
                }
            } else {
                emit(&mut word);
            }
        }
        emit(&mut word);
    }

    /// A word's term.
    pub(super) fn stem<'a>(&self, word: &'a str) -> Cow<'a, str> {
        if self.config.stem {
            self.stemmer.stem(word)
        } else {
            Cow::Borrowed(word)
        }
    }
}

fn is_ideograph(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF        // Hiragana, Katakana
        | 0x3400..=0x4DBF      // CJK extension A
        | 0x4E00..=0x9FFF      // CJK unified ideographs
        | 0xF900..=0xFAFF      // CJK compatibility ideographs
        | 0x20000..=0x2FA1F) // CJK extensions B.., compatibility supplement
}

/// English function words (lowercase, sorted for the binary search).
const STOPWORDS: &[&str] = &[
    "a",
    "about",
    "above",
    "after",
    "again",
    "against",
    "all",
    "am",
    "an",
    "and",
    "any",
    "are",
    "as",
    "at",
    "be",
    "because",
    "been",
    "before",
    "being",
    "below",
    "between",
    "both",
    "but",
    "by",
    "can",
    "could",
    "did",
    "do",
    "does",
    "doing",
    "down",
    "during",
    "each",
    "few",
    "for",
    "from",
    "further",
    "had",
    "has",
    "have",
    "having",
    "he",
    "her",
    "here",
    "hers",
    "herself",
    "him",
    "himself",
    "his",
    "how",
    "i",
    "if",
    "in",
    "into",
    "is",
    "it",
    "its",
    "itself",
    "just",
    "me",
    "more",
    "most",
    "my",
    "myself",
    "no",
    "nor",
    "not",
    "now",
    "of",
    "off",
    "on",
    "once",
    "only",
    "or",
    "other",
    "our",
    "ours",
    "ourselves",
    "out",
    "over",
    "own",
    "same",
    "she",
    "should",
    "so",
    "some",
    "such",
    "than",
    "that",
    "the",
    "their",
    "theirs",
    "them",
    "themselves",
    "then",
    "there",
    "these",
    "they",
    "this",
    "those",
    "through",
    "to",
    "too",
    "under",
    "until",
    "up",
    "very",
    "was",
    "we",
    "were",
    "what",
    "when",
    "where",
    "which",
    "while",
    "who",
    "whom",
    "why",
    "will",
    "with",
    "would",
    "you",
    "your",
    "yours",
    "yourself",
    "yourselves",
];

fn is_stopword(w: &str) -> bool {
    STOPWORDS.binary_search(&w).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(config: AnalyzerConfig, text: &str) -> Vec<String> {
        let a = Analyzer::new(config);
        let mut out = Vec::new();
        a.terms(text, |t| out.push(t.to_string()));
        out
    }

    #[test]
    fn stopwords_are_sorted() {
        assert!(STOPWORDS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn splits_lowercases_stems_and_drops_stopwords() {
        let t = terms(
            AnalyzerConfig::default(),
            "How do I read the Files? os.path.join(Running) Größe 42",
        );
        assert_eq!(
            t,
            ["read", "file", "os", "path", "join", "run", "größe", "42"]
        );
        let plain = AnalyzerConfig {
            stopwords: false,
            stem: false,
        };
        assert_eq!(terms(plain, "The Files"), ["the", "files"]);
    }

    #[test]
    fn ideographs_are_words_of_their_own() {
        assert_eq!(
            terms(AnalyzerConfig::default(), "東京タワー abc"),
            ["東", "京", "タ", "ワ", "ー", "abc"]
        );
        assert!(terms(AnalyzerConfig::default(), &"x".repeat(65)).is_empty());
    }
}
