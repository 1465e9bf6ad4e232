//! Attribute filters of vector-store search, as OpenAI defines them; they are also the wire
//! types (`ComparisonFilter`, `CompoundFilter`), and `/openapi.json` is derived from them.
//!
//! Semantics (OpenAI documents the operators, not these corners; these are Oasis's choices):
//!
//! - `eq`, `gt`, `gte`, `lt`, `lte` and `in` need the key to be present with a value of a
//!   comparable type: a missing key or a type mismatch (`"5"` against `5`) never matches.
//! - `ne` is exactly `not eq` and `nin` exactly `not in`, so a missing key or a value of
//!   another type matches them (`status ne "archived"` keeps files without a status), and
//!   De Morgan holds for any mix of `and`, `or` and negated operators.
//! - Numbers compare numerically (`5` equals `5.0`); strings compare exactly (case matters),
//!   and order by their bytes (so ISO-8601 dates order as dates); booleans only compare for
//!   (in)equality: `gt` and the rest never match a boolean.
//! - `in`/`nin` take an array of strings and numbers; a single value is taken as an array of
//!   one. Any other operator with an array never matches (`check` reports it, for a 400).
//! - `and` of no filters matches everything, `or` of none matches nothing.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

/// The most characters an attribute's string value may have (OpenAI's limit).
pub const MAX_ATTR_STRING_CHARS: usize = 512;
/// The most attributes a file may have (OpenAI's limit).
pub const MAX_ATTRS: usize = 16;
/// The most characters an attribute key may have (OpenAI's limit).
pub const MAX_ATTR_KEY_CHARS: usize = 64;

/// An attribute's value: a string (at most 512 characters), a number or a boolean.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum AttrValue {
    String(#[schemars(length(max = 512))] String),
    Number(f64),
    Bool(bool),
}

/// A file's attributes (at most 16), which search filters read.
pub type Attributes = BTreeMap<String, AttrValue>;

/// Why a set of attributes breaks OpenAI's limits, in OpenAI's words.
pub fn check_attributes(attrs: &Attributes) -> Result<(), String> {
    if attrs.len() > MAX_ATTRS {
        return Err(format!(
            "Invalid 'attributes': too many properties. Expected an object with at most \
             {MAX_ATTRS} properties, but got an object with {} properties instead.",
            attrs.len()
        ));
    }
    for (k, v) in attrs {
        if k.chars().count() > MAX_ATTR_KEY_CHARS {
            return Err(format!(
                "Invalid 'attributes': key '{k}' is longer than {MAX_ATTR_KEY_CHARS} characters."
            ));
        }
        if let AttrValue::String(s) = v
            && s.chars().count() > MAX_ATTR_STRING_CHARS
        {
            return Err(format!(
                "Invalid 'attributes.{k}': string too long (maximum {MAX_ATTR_STRING_CHARS} \
                 characters)."
            ));
        }
    }
    Ok(())
}

/// A comparison or a compound filter.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Filter {
    Comparison(ComparisonFilter),
    Compound(CompoundFilter),
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ComparisonOp {
    /// Equals.
    Eq,
    /// Not equal (also true when the key is missing).
    Ne,
    /// Greater than.
    Gt,
    /// Greater than or equal.
    Gte,
    /// Less than.
    Lt,
    /// Less than or equal.
    Lte,
    /// One of the values.
    In,
    /// None of the values (also true when the key is missing).
    Nin,
}

/// Compares the attribute `key` with `value`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ComparisonFilter {
    /// `eq`, `ne`, `gt`, `gte`, `lt`, `lte`, `in` or `nin`.
    #[serde(rename = "type")]
    pub op: ComparisonOp,
    /// The attribute compared.
    pub key: String,
    /// What it is compared with: a string, number or boolean, or for `in`/`nin` an array of
    /// strings and numbers.
    pub value: FilterValue,
}

/// The value of a comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum FilterValue {
    String(String),
    Number(f64),
    Bool(bool),
    List(Vec<ListItem>),
}

/// An item of an `in`/`nin` array.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ListItem {
    String(String),
    Number(f64),
}

/// `and` or `or`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CompoundOp {
    And,
    Or,
}

/// Combines filters with `and` or `or`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompoundFilter {
    /// `and` or `or`.
    #[serde(rename = "type")]
    pub op: CompoundOp,
    /// Comparison or compound filters.
    pub filters: Vec<Filter>,
}

/// A filter that breaks a rule the types cannot express: where (relative to the filter, e.g.
/// `filters[1].value`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for FilterError {}

/// The one-level form serde reads: dispatching on `type` first gives errors that name the
/// field at fault (an untagged enum could only say that nothing matched).
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum Tagged {
    Eq { key: String, value: FilterValue },
    Ne { key: String, value: FilterValue },
    Gt { key: String, value: FilterValue },
    Gte { key: String, value: FilterValue },
    Lt { key: String, value: FilterValue },
    Lte { key: String, value: FilterValue },
    In { key: String, value: FilterValue },
    Nin { key: String, value: FilterValue },
    And { filters: Vec<Filter> },
    Or { filters: Vec<Filter> },
}

impl<'de> Deserialize<'de> for Filter {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let cmp = |op, key, value| Filter::Comparison(ComparisonFilter { op, key, value });
        let compound = |op, filters| Filter::Compound(CompoundFilter { op, filters });
        Ok(match Tagged::deserialize(d)? {
            Tagged::Eq { key, value } => cmp(ComparisonOp::Eq, key, value),
            Tagged::Ne { key, value } => cmp(ComparisonOp::Ne, key, value),
            Tagged::Gt { key, value } => cmp(ComparisonOp::Gt, key, value),
            Tagged::Gte { key, value } => cmp(ComparisonOp::Gte, key, value),
            Tagged::Lt { key, value } => cmp(ComparisonOp::Lt, key, value),
            Tagged::Lte { key, value } => cmp(ComparisonOp::Lte, key, value),
            Tagged::In { key, value } => cmp(ComparisonOp::In, key, value),
            Tagged::Nin { key, value } => cmp(ComparisonOp::Nin, key, value),
            Tagged::And { filters } => compound(CompoundOp::And, filters),
            Tagged::Or { filters } => compound(CompoundOp::Or, filters),
        })
    }
}

impl Filter {
    /// Whether a chunk with these attributes passes.
    pub fn matches(&self, attrs: &Attributes) -> bool {
        match self {
            Filter::Comparison(c) => c.matches(attrs),
            Filter::Compound(c) => c.matches(attrs),
        }
    }

    /// The rules serde cannot check: arrays only with `in`/`nin`.
    pub fn check(&self) -> Result<(), FilterError> {
        self.check_at(String::new())
    }

    fn check_at(&self, path: String) -> Result<(), FilterError> {
        match self {
            Filter::Comparison(c) => {
                if matches!(c.value, FilterValue::List(_))
                    && !matches!(c.op, ComparisonOp::In | ComparisonOp::Nin)
                {
                    let at = if path.is_empty() {
                        "value".to_string()
                    } else {
                        format!("{path}.value")
                    };
                    return Err(FilterError {
                        path: at,
                        message: "an array value is only allowed with `in` and `nin`".into(),
                    });
                }
                Ok(())
            }
            Filter::Compound(c) => {
                for (i, f) in c.filters.iter().enumerate() {
                    let at = if path.is_empty() {
                        format!("filters[{i}]")
                    } else {
                        format!("{path}.filters[{i}]")
                    };
                    f.check_at(at)?;
                }
                Ok(())
            }
        }
    }
}

impl CompoundFilter {
    pub fn matches(&self, attrs: &Attributes) -> bool {
        match self.op {
            CompoundOp::And => self.filters.iter().all(|f| f.matches(attrs)),
            CompoundOp::Or => self.filters.iter().any(|f| f.matches(attrs)),
        }
    }
}

impl ComparisonFilter {
    pub fn matches(&self, attrs: &Attributes) -> bool {
        let attr = attrs.get(&self.key);
        match self.op {
            ComparisonOp::Eq => attr.is_some_and(|a| equal(a, &self.value)),
            ComparisonOp::Ne => !attr.is_some_and(|a| equal(a, &self.value)),
            ComparisonOp::In => attr.is_some_and(|a| among(a, &self.value)),
            ComparisonOp::Nin => !attr.is_some_and(|a| among(a, &self.value)),
            ComparisonOp::Gt => order(attr, &self.value).is_some_and(|o| o.is_gt()),
            ComparisonOp::Gte => order(attr, &self.value).is_some_and(|o| o.is_ge()),
            ComparisonOp::Lt => order(attr, &self.value).is_some_and(|o| o.is_lt()),
            ComparisonOp::Lte => order(attr, &self.value).is_some_and(|o| o.is_le()),
        }
    }
}

fn equal(a: &AttrValue, v: &FilterValue) -> bool {
    match (a, v) {
        (AttrValue::String(a), FilterValue::String(v)) => a == v,
        (AttrValue::Number(a), FilterValue::Number(v)) => a == v,
        (AttrValue::Bool(a), FilterValue::Bool(v)) => a == v,
        _ => false,
    }
}

fn among(a: &AttrValue, v: &FilterValue) -> bool {
    match v {
        FilterValue::List(items) => items.iter().any(|item| match (a, item) {
            (AttrValue::String(a), ListItem::String(i)) => a == i,
            (AttrValue::Number(a), ListItem::Number(i)) => a == i,
            _ => false,
        }),
        scalar => equal(a, scalar),
    }
}

fn order(a: Option<&AttrValue>, v: &FilterValue) -> Option<std::cmp::Ordering> {
    match (a?, v) {
        (AttrValue::String(a), FilterValue::String(v)) => Some(a.as_bytes().cmp(v.as_bytes())),
        (AttrValue::Number(a), FilterValue::Number(v)) => a.partial_cmp(v),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attrs(v: serde_json::Value) -> Attributes {
        serde_json::from_value(v).unwrap()
    }

    fn filter(v: serde_json::Value) -> Filter {
        serde_json::from_value(v).unwrap()
    }

    fn doc() -> Attributes {
        attrs(
            json!({"author": "Ada", "year": 2021, "score": 4.5, "draft": false, "date": "2024-03-01"}),
        )
    }

    #[test]
    fn comparisons() {
        let d = doc();
        let yes = |f| assert!(filter(f).matches(&d));
        let no = |f| assert!(!filter(f).matches(&d));
        yes(json!({"type": "eq", "key": "author", "value": "Ada"}));
        no(json!({"type": "eq", "key": "author", "value": "ada"}));
        yes(json!({"type": "eq", "key": "year", "value": 2021.0}));
        yes(json!({"type": "eq", "key": "draft", "value": false}));
        yes(json!({"type": "ne", "key": "author", "value": "Bob"}));
        no(json!({"type": "ne", "key": "author", "value": "Ada"}));
        yes(json!({"type": "gt", "key": "year", "value": 2020}));
        no(json!({"type": "gt", "key": "year", "value": 2021}));
        yes(json!({"type": "gte", "key": "year", "value": 2021}));
        yes(json!({"type": "lt", "key": "score", "value": 5}));
        no(json!({"type": "lt", "key": "score", "value": 4.5}));
        yes(json!({"type": "lte", "key": "score", "value": 4.5}));
        yes(json!({"type": "gte", "key": "date", "value": "2024-01-01"}));
        no(json!({"type": "lt", "key": "date", "value": "2024-01-01"}));
        yes(json!({"type": "in", "key": "author", "value": ["Bob", "Ada"]}));
        yes(json!({"type": "in", "key": "year", "value": [1999, 2021]}));
        no(json!({"type": "in", "key": "author", "value": []}));
        yes(json!({"type": "in", "key": "author", "value": "Ada"}));
        no(json!({"type": "nin", "key": "author", "value": ["Bob", "Ada"]}));
        yes(json!({"type": "nin", "key": "author", "value": ["Bob"]}));
    }

    #[test]
    fn missing_keys_and_type_mismatches() {
        let d = doc();
        let yes = |f| assert!(filter(f).matches(&d));
        let no = |f| assert!(!filter(f).matches(&d));
        for op in ["eq", "gt", "gte", "lt", "lte", "in"] {
            no(json!({"type": op, "key": "missing", "value": 1}));
        }
        yes(json!({"type": "ne", "key": "missing", "value": 1}));
        yes(json!({"type": "nin", "key": "missing", "value": [1]}));
        // "2021" is not 2021; booleans have no order.
        no(json!({"type": "eq", "key": "year", "value": "2021"}));
        yes(json!({"type": "ne", "key": "year", "value": "2021"}));
        no(json!({"type": "gt", "key": "year", "value": "1000"}));
        no(json!({"type": "in", "key": "year", "value": ["2021"]}));
        no(json!({"type": "gte", "key": "draft", "value": false}));
        no(json!({"type": "eq", "key": "draft", "value": 0}));
        // An array with another operator never matches.
        no(json!({"type": "eq", "key": "author", "value": ["Ada"]}));
    }

    #[test]
    fn compounds() {
        let d = doc();
        let f = filter(json!({"type": "and", "filters": [
            {"type": "eq", "key": "author", "value": "Ada"},
            {"type": "or", "filters": [
                {"type": "gt", "key": "year", "value": 2030},
                {"type": "eq", "key": "draft", "value": false}
            ]}
        ]}));
        assert!(f.matches(&d));
        let f = filter(json!({"type": "or", "filters": [
            {"type": "eq", "key": "author", "value": "Bob"},
            {"type": "and", "filters": [
                {"type": "eq", "key": "draft", "value": true}
            ]}
        ]}));
        assert!(!f.matches(&d));
        assert!(filter(json!({"type": "and", "filters": []})).matches(&d));
        assert!(!filter(json!({"type": "or", "filters": []})).matches(&d));
    }

    #[test]
    fn de_morgan_holds_with_missing_keys() {
        let d = attrs(json!({"a": 1}));
        let ab = filter(json!({"type": "and", "filters": [
            {"type": "eq", "key": "a", "value": 1}, {"type": "eq", "key": "b", "value": 1}]}));
        let not_ab = filter(json!({"type": "or", "filters": [
            {"type": "ne", "key": "a", "value": 1}, {"type": "ne", "key": "b", "value": 1}]}));
        assert_ne!(ab.matches(&d), not_ab.matches(&d));
    }

    #[test]
    fn wire_round_trip() {
        let v = json!({"type": "and", "filters": [
            {"type": "in", "key": "tag", "value": ["a", 2.5]},
            {"type": "or", "filters": [{"type": "eq", "key": "ok", "value": true}]}
        ]});
        let f = filter(v.clone());
        assert_eq!(serde_json::to_value(&f).unwrap(), v);
        let Filter::Compound(c) = &f else {
            panic!("not compound")
        };
        assert_eq!(c.op, CompoundOp::And);
        assert_eq!(
            c.filters[0],
            Filter::Comparison(ComparisonFilter {
                op: ComparisonOp::In,
                key: "tag".into(),
                value: FilterValue::List(vec![ListItem::String("a".into()), ListItem::Number(2.5)]),
            })
        );
    }

    #[test]
    fn errors_name_the_fault() {
        let err = |v| serde_json::from_value::<Filter>(v).unwrap_err().to_string();
        let e = err(json!({"type": "like", "key": "a", "value": "x"}));
        assert!(e.contains("unknown variant `like`"), "{e}");
        let e = err(json!({"type": "eq", "value": "x"}));
        assert!(e.contains("missing field `key`"), "{e}");
        let e = err(json!({"type": "eq", "key": "a", "value": "x", "extra": 1}));
        assert!(e.contains("unknown field `extra`"), "{e}");
        let e = err(json!({"type": "and"}));
        assert!(e.contains("missing field `filters`"), "{e}");
        assert!(
            serde_json::from_value::<Filter>(json!({"type": "eq", "key": "a", "value": null}))
                .is_err()
        );
        assert!(
            serde_json::from_value::<Filter>(json!({"type": "in", "key": "a", "value": [true]}))
                .is_err()
        );
    }

    #[test]
    fn check_finds_arrays_outside_in() {
        let f = filter(json!({"type": "or", "filters": [
            {"type": "in", "key": "a", "value": [1]},
            {"type": "eq", "key": "a", "value": [1]}]}));
        let e = f.check().unwrap_err();
        assert_eq!(e.path, "filters[1].value");
        assert!(
            filter(json!({"type": "nin", "key": "a", "value": ["x"]}))
                .check()
                .is_ok()
        );
    }

    #[test]
    fn attribute_limits() {
        assert!(check_attributes(&doc()).is_ok());
        let long = attrs(json!({"k": "x".repeat(513)}));
        assert!(
            check_attributes(&long)
                .unwrap_err()
                .contains("string too long")
        );
        let many: Attributes = (0..17)
            .map(|i| (format!("k{i}"), AttrValue::Bool(true)))
            .collect();
        assert!(check_attributes(&many).unwrap_err().contains("too many"));
        let key = attrs(json!({"k".repeat(65): 1}));
        assert!(check_attributes(&key).is_err());
    }

    #[test]
    fn schema_names_both_shapes() {
        let s = serde_json::to_string(&schemars::schema_for!(Filter)).unwrap();
        for needle in ["ComparisonFilter", "CompoundFilter", "\"nin\"", "\"or\""] {
            assert!(s.contains(needle), "{needle} missing from {s}");
        }
    }
}
