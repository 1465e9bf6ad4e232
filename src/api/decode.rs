//! Reading a JSON body into its request type, with serde's complaints put in OpenAI's words:
//! the full path of the field at fault as `param` (`thread.messages[0].content`), and messages
//! that name JSON types (`an object`, `an integer`) rather than Rust ones (`struct
//! CreateThread`, `u64`) or serde's machinery (`untagged enum`, `line 1 column 80`).

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::ApiError;

/// Read `bytes` (well-formed JSON, already parsed as `value`) as a `T`.
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8], value: &Value) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let message = e.into_inner().to_string();
        let path = refine(&path, value, strip_position(&message));
        explain(&path, &message)
    })
}

/// serde loses the path inside a tagged enum (a tool, a content part): it reports the enum's
/// own place. When that place holds an object and the message quotes the value at fault, the
/// field holding that value (searched depth first) is the one to name.
fn refine(path: &str, body: &Value, message: &str) -> String {
    let quoted = message
        .strip_prefix("unknown variant `")
        .and_then(|rest| rest.split('`').next());
    let (Some(quoted), Some(at)) = (quoted, lookup(body, path)) else {
        return path.to_string();
    };
    if !(at.is_object() || at.is_array()) {
        return path.to_string();
    }
    match find_string(at, quoted) {
        Some(inner) if path.is_empty() => inner.trim_start_matches('.').to_string(),
        Some(inner) => format!("{path}{inner}"),
        None => path.to_string(),
    }
}

/// The value at a `a.b[0].c` path.
fn lookup<'a>(mut v: &'a Value, path: &str) -> Option<&'a Value> {
    if path.is_empty() {
        return Some(v);
    }
    for part in path.split('.') {
        let (key, indexes) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            v = v.get(key)?;
        }
        for index in indexes.split(['[', ']']).filter(|s| !s.is_empty()) {
            v = v.get(index.parse::<usize>().ok()?)?;
        }
    }
    Some(v)
}

/// Where (as `.key` / `[i]` steps) the string `s` sits inside `v`, depth first.
fn find_string(v: &Value, s: &str) -> Option<String> {
    match v {
        Value::String(x) if x == s => Some(String::new()),
        Value::Object(m) => m
            .iter()
            .find_map(|(k, x)| find_string(x, s).map(|rest| format!(".{k}{rest}"))),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .find_map(|(i, x)| find_string(x, s).map(|rest| format!("[{i}]{rest}"))),
        _ => None,
    }
}

/// OpenAI's error for serde's `message` about the value at `path` (`""` for the body itself).
pub fn explain(path: &str, message: &str) -> ApiError {
    let message = strip_position(message);
    let join = |field: &str| {
        if path.is_empty() {
            field.to_string()
        } else {
            format!("{path}.{field}")
        }
    };
    if let Some(field) = quoted_after(message, "unknown field `") {
        // The path already ends at the unknown field.
        let param = if path == field || path.ends_with(&format!(".{field}")) {
            path.to_string()
        } else {
            join(field)
        };
        return ApiError::invalid(
            &param,
            format!("Unrecognized request argument supplied: {param}"),
        );
    }
    if let Some(field) = quoted_after(message, "missing field `") {
        let param = join(field);
        return ApiError::invalid(&param, format!("Missing required parameter: '{param}'."));
    }
    let param = if path.is_empty() { "body" } else { path };
    let invalid = |text: String| {
        if path.is_empty() {
            ApiError::bad_request(text)
        } else {
            ApiError::invalid(path, text)
        }
    };
    if let Some(rest) = message.strip_prefix("unknown variant `")
        && let Some((value, expected)) = rest.split_once('`')
    {
        let names: Vec<String> = expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(|n| format!("'{n}'"))
            .collect();
        let supported = match names.as_slice() {
            [] => String::new(),
            [one] => format!(" Supported values are: {one}."),
            [a, b] => format!(" Supported values are: {a} and {b}."),
            [init @ .., last] => format!(" Supported values are: {}, and {last}.", init.join(", ")),
        };
        return invalid(format!("Invalid value: '{value}'.{supported}")).code("invalid_value");
    }
    if let Some(rest) = message.strip_prefix("invalid type: ")
        && let Some((got, expected)) = rest.split_once(", expected ")
    {
        return invalid(format!(
            "Invalid type for '{param}': expected {}, but got {} instead.",
            json_kind(expected),
            json_kind(got)
        ))
        .code("invalid_type");
    }
    if let Some(rest) = message.strip_prefix("invalid value: ")
        && let Some((got, expected)) = rest.split_once(", expected ")
    {
        return invalid(format!(
            "Invalid value for '{param}': expected {}, but got {}.",
            json_kind(expected),
            shown_value(got)
        ));
    }
    if let Some(name) = message.strip_prefix("data did not match any variant of untagged enum ") {
        return invalid(format!(
            "Invalid type for '{param}': expected {}.",
            untagged(name.trim())
        ))
        .code("invalid_type");
    }
    // The message of one of Oasis's own checks inside a type.
    invalid(format!("Invalid '{param}': {message}."))
}

/// `message` without serde_json's ` at line 1 column 80`.
fn strip_position(message: &str) -> &str {
    match message.rfind(" at line ") {
        Some(i) if message[i..].contains(" column ") => &message[..i],
        _ => message,
    }
}

/// The text between `prefix` and the next backquote.
fn quoted_after<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    message.strip_prefix(prefix)?.split('`').next()
}

/// A JSON type for serde's name of what it saw or wanted (`integer `5``, `struct X`, `u64`,
/// `a sequence`); a description of Oasis's own (`a string or an array of content parts`) is
/// kept.
fn json_kind(serde: &str) -> String {
    let s = serde.trim();
    let kind = match s {
        "a string" | "a borrowed string" | "string" | "a character" | "char" => "a string",
        "a sequence" | "sequence" | "a tuple" => "an array",
        "a map" | "map" => "an object",
        "a boolean" | "bool" => "a boolean",
        "null" | "unit" | "unit value" => "null",
        "u64" | "u32" | "u16" | "u8" | "usize" => "a non-negative integer",
        "i64" | "i32" | "i16" | "i8" | "isize" => "an integer",
        "f64" | "f32" => "a number",
        _ => match s.split([' ', '`']).next().unwrap_or_default() {
            "string" => "a string",
            "integer" => "an integer",
            "floating" => "a number",
            "boolean" => "a boolean",
            "struct" | "internally" | "adjacently" | "map" => "an object",
            "sequence" => "an array",
            _ => return s.to_string(),
        },
    };
    kind.to_string()
}

/// What a value serde quotes looks like to the client (`integer `-1`` → `-1`).
fn shown_value(serde: &str) -> String {
    match serde.split_once('`') {
        Some((_, rest)) => rest.trim_end_matches('`').to_string(),
        None => serde.to_string(),
    }
}

/// What an untagged request enum takes, by its Rust name.
fn untagged(name: &str) -> &'static str {
    match name {
        "ToolChoiceWire" => {
            "'none', 'auto', 'required' or an object naming a tool ({\"type\": \"function\", \
             \"function\": {\"name\": …}})"
        }
        _ => "one of the forms this field takes",
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        thread: Option<Thread>,
        count: Option<u64>,
        mode: Option<Mode>,
        meta: Option<BTreeMap<String, String>>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Thread {
        messages: Vec<Msg>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Msg {
        role: String,
        content: crate::api::validate::ContentInput,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Mode {
        Fast,
        Slow,
    }

    fn err(v: serde_json::Value) -> serde_json::Value {
        from_slice::<Body>(v.to_string().as_bytes(), &v)
            .unwrap_err()
            .body()["error"]
            .clone()
    }

    #[test]
    fn nested_fields_are_named_by_their_whole_path() {
        let e = err(json!({"thread": {"bogus": 1, "messages": []}}));
        assert_eq!(e["param"], "thread.bogus");
        assert_eq!(
            e["message"],
            "Unrecognized request argument supplied: thread.bogus"
        );
        let e = err(json!({"thread": {"messages": [{"role": "user"}]}}));
        assert_eq!(e["param"], "thread.messages[0].content");
        assert_eq!(
            e["message"],
            "Missing required parameter: 'thread.messages[0].content'."
        );
    }

    #[test]
    fn messages_name_json_types_not_rust_ones() {
        let e = err(json!({"thread": {"messages": [{"role": "user", "content": 5}]}}));
        assert_eq!(e["param"], "thread.messages[0].content");
        assert_eq!(
            e["message"],
            "Invalid type for 'thread.messages[0].content': expected a string or an array of \
             content parts, but got an integer instead."
        );
        let e = err(json!({"thread": 5}));
        assert_eq!(
            e["message"],
            "Invalid type for 'thread': expected an object, but got an integer instead."
        );
        let e = err(json!({"count": "many"}));
        assert_eq!(e["param"], "count");
        assert_eq!(
            e["message"],
            "Invalid type for 'count': expected a non-negative integer, but got a string \
             instead."
        );
        let e = err(json!({"count": -1}));
        assert_eq!(
            e["message"],
            "Invalid value for 'count': expected a non-negative integer, but got -1."
        );
        let e = err(json!({"mode": "medium"}));
        assert_eq!(e["param"], "mode");
        assert_eq!(
            e["message"],
            "Invalid value: 'medium'. Supported values are: 'fast' and 'slow'."
        );
        let e = err(json!({"meta": {"k": 1}}));
        assert_eq!(e["param"], "meta.k");
        for e in [
            err(json!({"thread": 5})),
            err(json!({"thread": {"messages": [{"role": "user", "content": 5}]}})),
            err(json!({"count": true})),
        ] {
            let m = e["message"].as_str().unwrap();
            for word in ["struct", "untagged", "line 1", "u64", "enum"] {
                assert!(!m.contains(word), "{m}");
            }
        }
    }
}
