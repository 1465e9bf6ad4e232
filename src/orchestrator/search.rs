//! `file_search` in runs: the search function the model is offered, its calls run against the
//! run's vector stores, and the citation markers (`【2:0†manual.pdf】`) of its answer turned
//! into `file_citation` annotations.

use super::worker::Ctx;
use super::{Orchestrator, Result};
use crate::backend::FunctionSpec;
use crate::model::{
    Annotation, FileRef, FileSearchCall, FileSearchOptions, FileSearchRanking, FileSearchResult,
    Ranker, SearchText, Tool,
};
use crate::vectors::SearchRequest;

/// Most characters of one passage handed to the model.
const MAX_PASSAGE_CHARS: usize = 4000;

/// The name file_search is offered under: `file_search`, unless a function of the run has it.
pub fn search_tool_name(tools: &[Tool]) -> Option<String> {
    if !tools.iter().any(|t| matches!(t, Tool::FileSearch { .. })) {
        return None;
    }
    let taken = |n: &str| {
        tools
            .iter()
            .any(|t| matches!(t, Tool::Function { function } if function.name == n))
    };
    ["file_search", "oasis_file_search"]
        .into_iter()
        .find(|n| !taken(n))
        .map(str::to_string)
}

/// The function the model calls to search.
pub fn search_spec(name: &str) -> FunctionSpec {
    FunctionSpec {
        name: name.to_string(),
        description: Some(
            "Search the user's uploaded files. Returns numbered passages, each starting with a \
             marker like 【0:1†report.pdf】."
                .into(),
        ),
        parameters: serde_json::json!({
            "type": "object",
            "properties": {"queries": {
                "type": "array", "items": {"type": "string"},
                "description": "One or more search queries."
            }},
            "required": ["queries"],
        }),
        strict: None,
    }
}

/// What the model is told about the search tool.
pub fn search_instructions(name: &str) -> String {
    format!(
        "You can search the user's files with the `{name}` tool. When you use a passage, cite \
         it by writing its marker (for example 【0:1†report.pdf】) right after what it supports."
    )
}

/// The queries of a search call: `{"queries": […]}`, `{"query": "…"}` or a bare string.
fn queries_of(arguments: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(arguments).unwrap_or(serde_json::Value::Null);
    let list = match &v {
        serde_json::Value::Object(o) => o
            .get("queries")
            .or_else(|| o.get("query"))
            .cloned()
            .unwrap_or_default(),
        other => other.clone(),
    };
    let out: Vec<String> = match list {
        serde_json::Value::Array(a) => a
            .iter()
            .filter_map(|q| q.as_str().map(str::to_string))
            .collect(),
        serde_json::Value::String(s) => vec![s],
        _ => vec![],
    };
    out.into_iter()
        .filter(|q| !q.trim().is_empty())
        .take(10)
        .collect()
}

/// The run's file_search tool's overrides (defaults when it gives none).
fn options(tools: &[Tool]) -> FileSearchOptions {
    tools
        .iter()
        .find_map(|t| match t {
            Tool::FileSearch { file_search } => file_search.clone(),
            _ => None,
        })
        .unwrap_or_default()
}

/// How the run's searches rank, as its steps show it: `auto` is Oasis's one ranker.
pub fn ranking(tools: &[Tool]) -> FileSearchRanking {
    let threshold = options(tools)
        .ranking_options
        .map(|r| r.score_threshold)
        .unwrap_or(0.0);
    FileSearchRanking {
        ranker: Ranker::Default20240821,
        score_threshold: threshold,
    }
}

/// How long a run waits for its thread's store to finish reading files (OpenAI's minute).
const THREAD_FILES_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

impl Orchestrator {
    /// Before a run with file_search starts, wait (at most a minute, or until the run is
    /// stopped) for the files of its thread's store that are still being read, as OpenAI did:
    /// a file just attached to a message is then found by the run's first search.
    pub(super) async fn wait_for_thread_files(&self, ctx: &Ctx, stop: &super::worker::Stop) {
        let (Some(_), Some(store), Some(vectors)) =
            (&ctx.search_tool, &ctx.thread_store, self.vectors())
        else {
            return;
        };
        let until = tokio::time::Instant::now() + THREAD_FILES_WAIT;
        tokio::select! {
            _ = stop.token().cancelled() => {}
            r = vectors.wait_until_read(store, until) => match r {
                Ok(true) => {}
                Ok(false) => tracing::info!(run = %ctx.run.id, store = %store,
                    "the thread's files were still being read after a minute; the run goes on"),
                Err(e) => tracing::warn!(run = %ctx.run.id, error = %e,
                    "could not check the thread's files"),
            },
        }
    }

    /// Run one search call of the model: what the step shows, and what the model reads.
    pub(super) async fn run_search(
        &self,
        ctx: &mut Ctx,
        arguments: &str,
    ) -> Result<(FileSearchCall, String)> {
        let ranking = ranking(&ctx.run.tools);
        let queries = queries_of(arguments);
        let Some(vectors) = self.vectors() else {
            return Ok((
                FileSearchCall {
                    ranking_options: ranking,
                    results: vec![],
                },
                "File search is not available.".into(),
            ));
        };
        if queries.is_empty() {
            return Ok((
                FileSearchCall {
                    ranking_options: ranking,
                    results: vec![],
                },
                "No query was given: call the tool with {\"queries\": [\"…\"]}.".into(),
            ));
        }
        let req = SearchRequest {
            queries,
            max_results: options(&ctx.run.tools).max_results(),
            score_threshold: ranking.score_threshold,
            filter: None,
        };
        let hits = match vectors.search(&ctx.vector_stores, &req).await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(run = %ctx.run.id, error = %e, "a file search failed");
                return Ok((
                    FileSearchCall {
                        ranking_options: ranking,
                        results: vec![],
                    },
                    format!("The search failed: {e}"),
                ));
            }
        };
        let n = ctx.searches.len();
        let mut text = String::new();
        if hits.is_empty() {
            text.push_str("No passages matched.");
        }
        for (i, h) in hits.iter().enumerate() {
            let passage: String = h.text.chars().take(MAX_PASSAGE_CHARS).collect();
            text.push_str(&format!("【{n}:{i}†{}】 {passage}\n\n", h.file_name));
        }
        ctx.searches
            .push(hits.iter().map(|h| h.file_id.clone()).collect());
        let results = hits
            .into_iter()
            .map(|h| FileSearchResult {
                file_id: h.file_id,
                file_name: h.file_name,
                score: h.score,
                content: Some(vec![SearchText::Text { text: h.text }]),
            })
            .collect();
        Ok((
            FileSearchCall {
                ranking_options: ranking,
                results,
            },
            text,
        ))
    }
}

/// `file_citation` annotations for the markers in `text` that point at a result of this run's
/// searches (`【search:result†…】`, or `【result†…】` for the latest search); others stay text.
/// Offsets are in characters, as the other annotations'.
pub fn citations(text: &str, searches: &[Vec<String>]) -> Vec<Annotation> {
    let mut out = vec![];
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i].1 != '【' {
            i += 1;
            continue;
        }
        let Some(end) = chars[i..]
            .iter()
            .position(|(_, c)| *c == '】')
            .map(|p| i + p)
        else {
            break;
        };
        let inner: String = chars[i + 1..end].iter().map(|(_, c)| *c).collect();
        let target = inner.split('†').next().and_then(|head| {
            let mut parts = head.split(':');
            let a = parts.next()?.trim().parse::<usize>().ok()?;
            match parts.next() {
                Some(b) => Some((a, b.trim().parse::<usize>().ok()?)),
                None => Some((searches.len().checked_sub(1)?, a)),
            }
        });
        if inner.contains('†')
            && let Some((s, r)) = target
            && let Some(file_id) = searches.get(s).and_then(|rs| rs.get(r))
        {
            let marker: String = chars[i..=end].iter().map(|(_, c)| *c).collect();
            out.push(Annotation::FileCitation {
                text: marker,
                start_index: i,
                end_index: end + 1,
                file_citation: FileRef {
                    file_id: file_id.clone(),
                },
            });
        }
        i = end + 1;
    }
    out
}

/// Offer the search to the model: its function, and how to cite what it finds.
pub fn offer(req: &mut crate::backend::ChatRequest, name: &str) {
    req.tools.push(search_spec(name));
    req.search_tool = Some(name.to_string());
    if let Some(system) = req.messages.first_mut()
        && system.role == crate::backend::Role::System
    {
        if !system.content.is_empty() {
            system.content.push_str("\n\n");
        }
        system.content.push_str(&search_instructions(name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_that_point_at_results_become_citations_and_others_stay_text() {
        let searches = vec![vec!["file-a".to_string(), "file-b".to_string()]];
        let text = "Rinse it【0:1†pump.md】. Then【0:7†x】 and【1:0†y】 and 【0†pump.md】.";
        let c = citations(text, &searches);
        assert_eq!(c.len(), 2);
        let Annotation::FileCitation {
            text: t,
            start_index,
            end_index,
            file_citation,
        } = &c[0]
        else {
            panic!()
        };
        assert_eq!(t, "【0:1†pump.md】");
        assert_eq!(file_citation.file_id, "file-b");
        let chars: Vec<char> = text.chars().collect();
        let marker: String = chars[*start_index..*end_index].iter().collect();
        assert_eq!(&marker, t);
        let Annotation::FileCitation { file_citation, .. } = &c[1] else {
            panic!()
        };
        assert_eq!(file_citation.file_id, "file-a");
    }

    #[test]
    fn queries_are_read_from_the_forms_models_write() {
        assert_eq!(queries_of(r#"{"queries": ["a", "b"]}"#), ["a", "b"]);
        assert_eq!(queries_of(r#"{"query": "a"}"#), ["a"]);
        assert_eq!(queries_of(r#""a""#), ["a"]);
        assert!(queries_of("{}").is_empty());
    }
}
