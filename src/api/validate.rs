//! Request validation with OpenAI's limits.

use super::AppState;
use super::error::{ApiError, ApiResult};
use crate::model::{
    Attachment, Content, ImageFile, ImageUrl, MessageRole, Metadata, ResponseFormatOption, Text,
    Tool, ToolResources, VectorStore,
};
use crate::store::StoreExt;

pub fn max_len(param: &str, value: &Option<String>, max: usize) -> ApiResult<()> {
    if let Some(v) = value
        && v.chars().count() > max
    {
        return Err(ApiError::invalid(
            param,
            format!(
                "Invalid '{param}': string too long. Expected a string with maximum length {max}, \
                 but got a string with length {} instead.",
                v.chars().count()
            ),
        )
        .code("string_above_max_length"));
    }
    Ok(())
}

pub fn metadata(m: &Option<Metadata>) -> ApiResult<Metadata> {
    let Some(m) = m else {
        return Ok(Metadata::new());
    };
    if m.len() > 16 {
        return Err(ApiError::invalid(
            "metadata",
            format!(
                "Invalid 'metadata': too many properties. Expected an object with at most 16 \
                 properties, but got an object with {} properties instead.",
                m.len()
            ),
        )
        .code("object_above_max_properties"));
    }
    for (k, v) in m {
        if k.chars().count() > 64 {
            return Err(ApiError::invalid(
                "metadata",
                format!("Invalid 'metadata': key '{k}' is longer than 64 characters."),
            ));
        }
        if v.chars().count() > 512 {
            return Err(ApiError::invalid(
                "metadata",
                format!("Invalid 'metadata.{k}': string too long (maximum 512 characters)."),
            ));
        }
    }
    Ok(m.clone())
}

pub fn tools(tools: &[Tool]) -> ApiResult<()> {
    if tools.len() > 128 {
        return Err(ApiError::invalid(
            "tools",
            format!(
                "Invalid 'tools': array too long. Expected at most 128 items, got {}.",
                tools.len()
            ),
        ));
    }
    for (i, t) in tools.iter().enumerate() {
        if let Tool::FileSearch {
            file_search: Some(fs),
        } = t
        {
            file_search_options(i, fs)?;
        }
        if let Tool::Function { function } = t {
            let ok = !function.name.is_empty()
                && function.name.len() <= 64
                && function
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !ok {
                return Err(ApiError::invalid(
                    &format!("tools[{i}].function.name"),
                    format!(
                        "Invalid 'tools[{i}].function.name': string does not match pattern. \
                         Expected a string that matches the pattern '^[a-zA-Z0-9_-]{{1,64}}$'."
                    ),
                ));
            }
            if let Some(p) = &function.parameters
                && !p.is_object()
            {
                return Err(ApiError::invalid(
                    &format!("tools[{i}].function.parameters"),
                    "Invalid 'parameters': expected a JSON schema object.",
                ));
            }
        }
    }
    Ok(())
}

/// A file_search tool's `max_num_results` (1 to 50) and `score_threshold` (0 to 1).
fn file_search_options(i: usize, fs: &crate::model::FileSearchOptions) -> ApiResult<()> {
    if let Some(n) = fs.max_num_results {
        let param = format!("tools[{i}].file_search.max_num_results");
        let (code, msg) = match n {
            0 => (
                "integer_below_min_value",
                "integer below minimum value. Expected a value >= 1",
            ),
            51.. => (
                "integer_above_max_value",
                "integer above maximum value. Expected a value <= 50",
            ),
            _ => ("", ""),
        };
        if !code.is_empty() {
            return Err(ApiError::invalid(
                &param,
                format!("Invalid '{param}': {msg}, but got {n} instead."),
            )
            .code(code));
        }
    }
    if let Some(r) = &fs.ranking_options
        && !(0.0..=1.0).contains(&r.score_threshold)
    {
        let param = format!("tools[{i}].file_search.ranking_options.score_threshold");
        return Err(ApiError::invalid(
            &param,
            format!(
                "Invalid '{param}': expected a number between 0 and 1, got {}.",
                r.score_threshold
            ),
        ));
    }
    Ok(())
}

/// A `json_schema` format's name: a-z, A-Z, 0-9, `_` and `-`, at most 64.
pub fn response_format(f: &Option<ResponseFormatOption>) -> ApiResult<()> {
    match f {
        Some(f) if !f.name_is_valid() => Err(ApiError::invalid(
            "response_format.json_schema.name",
            "Invalid 'response_format.json_schema.name': string does not match pattern. \
             Expected a string that matches the pattern '^[a-zA-Z0-9_-]{1,64}$'.",
        )),
        _ => Ok(()),
    }
}

pub fn sampling(temperature: Option<f64>, top_p: Option<f64>) -> ApiResult<()> {
    if let Some(t) = temperature
        && !(0.0..=2.0).contains(&t)
    {
        return Err(ApiError::invalid(
            "temperature",
            format!("Invalid 'temperature': expected a value between 0 and 2, got {t}."),
        ));
    }
    if let Some(p) = top_p
        && !(0.0..=1.0).contains(&p)
    {
        return Err(ApiError::invalid(
            "top_p",
            format!("Invalid 'top_p': expected a value between 0 and 1, got {p}."),
        ));
    }
    Ok(())
}

/// Files named by id must exist.
pub async fn files_exist(state: &AppState, param: &str, ids: &[String]) -> ApiResult<()> {
    for id in ids {
        // An expired File is gone, even before the sweep deletes it.
        if super::files::find_live(state, id).await?.is_none() {
            return Err(ApiError::invalid(
                param,
                format!("No file found with id '{id}'."),
            ));
        }
    }
    Ok(())
}

pub async fn tool_resources(
    state: &AppState,
    r: &Option<ToolResources>,
) -> ApiResult<ToolResources> {
    let Some(r) = r else {
        return Ok(ToolResources::default());
    };
    if let Some(ci) = &r.code_interpreter {
        if ci.file_ids.len() > 20 {
            return Err(ApiError::invalid(
                "tool_resources.code_interpreter.file_ids",
                format!(
                    "Invalid 'tool_resources.code_interpreter.file_ids': array too long. \
                     Expected an array with maximum length 20, but got an array with length {} instead.",
                    ci.file_ids.len()
                ),
            ));
        }
        files_exist(
            state,
            "tool_resources.code_interpreter.file_ids",
            &ci.file_ids,
        )
        .await?;
    }
    let mut r = r.clone();
    if let Some(fs) = &mut r.file_search {
        let helpers = fs.vector_stores.take().unwrap_or_default();
        if fs.vector_store_ids.len() + helpers.len() > 1 {
            return Err(ApiError::invalid(
                "tool_resources.file_search.vector_store_ids",
                "Invalid 'tool_resources.file_search.vector_store_ids': at most 1 vector store \
                 (counting any made with 'vector_stores').",
            ));
        }
        for id in &fs.vector_store_ids {
            let (store, id2) = (state.store.clone(), id.clone());
            let found =
                tokio::task::spawn_blocking(move || store.find::<VectorStore>(&id2)).await??;
            if found.is_none() {
                return Err(ApiError::invalid(
                    "tool_resources.file_search.vector_store_ids",
                    format!("No vector store found with id '{id}'."),
                ));
            }
        }
        for (i, h) in helpers.into_iter().enumerate() {
            let param = format!("tool_resources.file_search.vector_stores[{i}]");
            files_exist(state, &format!("{param}.file_ids"), &h.file_ids).await?;
            let id = super::vector_stores::make_store(
                state,
                None,
                h.file_ids,
                &h.chunking_strategy,
                &format!("{param}.chunking_strategy"),
                h.metadata,
            )
            .await?;
            fs.vector_store_ids.push(id);
        }
    }
    Ok(r)
}

/// Message content as given on create: a string or an array of parts.
#[derive(Debug, schemars::JsonSchema)]
#[serde(untagged)]
pub enum ContentInput {
    Text(String),
    Parts(#[schemars(length(min = 1))] Vec<PartInput>),
}

/// Read by hand rather than as an untagged enum, so that a bad part is named as such
/// (`content[1].image_url.detail`) instead of "the content matched no variant".
impl<'de> serde::Deserialize<'de> for ContentInput {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Shape;
        impl<'de> serde::de::Visitor<'de> for Shape {
            type Value = ContentInput;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string or an array of content parts")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<ContentInput, E> {
                Ok(ContentInput::Text(s.to_string()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<ContentInput, A::Error> {
                let mut parts = vec![];
                while let Some(p) = seq.next_element()? {
                    parts.push(p);
                }
                Ok(ContentInput::Parts(parts))
            }
        }
        d.deserialize_any(Shape)
    }
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[schemars(rename = "ContentPartInput")]
pub enum PartInput {
    Text { text: String },
    ImageFile { image_file: ImageFile },
    ImageUrl { image_url: ImageUrl },
}

pub async fn content(state: &AppState, input: ContentInput) -> ApiResult<Vec<Content>> {
    let text = |value: String| Content::Text {
        text: Text {
            value,
            annotations: vec![],
        },
    };
    match input {
        ContentInput::Text(s) => Ok(vec![text(s)]),
        ContentInput::Parts(parts) => {
            if parts.is_empty() {
                return Err(ApiError::invalid(
                    "content",
                    "Invalid 'content': empty array. Expected an array with minimum length 1, \
                     but got an empty array instead.",
                ));
            }
            let mut out = vec![];
            for p in parts {
                out.push(match p {
                    PartInput::Text { text: t } => text(t),
                    PartInput::ImageFile { image_file } => {
                        files_exist(state, "content", std::slice::from_ref(&image_file.file_id))
                            .await?;
                        Content::ImageFile { image_file }
                    }
                    PartInput::ImageUrl { image_url } => Content::ImageUrl { image_url },
                });
            }
            Ok(out)
        }
    }
}

pub fn role(role: &str) -> ApiResult<MessageRole> {
    match role {
        "user" => Ok(MessageRole::User),
        "assistant" => Ok(MessageRole::Assistant),
        _ => Err(ApiError::invalid(
            "role",
            format!("Invalid value: '{role}'. Supported values are: 'user' and 'assistant'."),
        )
        .code("invalid_value")),
    }
}

pub async fn attachments(
    state: &AppState,
    a: &Option<Vec<Attachment>>,
) -> ApiResult<Vec<Attachment>> {
    let a = a.clone().unwrap_or_default();
    let ids: Vec<String> = a.iter().map(|x| x.file_id.clone()).collect();
    files_exist(state, "attachments", &ids).await?;
    Ok(a)
}
