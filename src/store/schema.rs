//! Which table holds each kind of object, and the columns pulled out of its JSON.
//!
//! Every table has `seq` (creation order), `id`, `scope` (the thread or vector store an object
//! belongs to), `created_at` and `body` (the object as JSON, served as stored). What is
//! filtered, ordered or locked on also gets a column of its own, copied from the body on
//! every write ([`Table::extras`]); `runs` also has `node` and `claimed_at`, which only the
//! store writes (who drives a run).

use serde_json::Value as Json;

use super::sql::Value;
use crate::model::Kind;

/// One table of objects.
#[derive(Debug)]
pub struct Table {
    pub kind: Kind,
    pub name: &'static str,
    /// The kind whose deletion deletes these objects (their `scope`).
    pub parent: Option<Kind>,
    /// `(column, JSON path)`: a column copied from the body. A [`super::Filter`]'s `field`
    /// names the path.
    pub extras: &'static [(&'static str, &'static str)],
}

const EXPIRES: (&str, &str) = ("expires_at", "expires_at");
const STATUS: (&str, &str) = ("status", "status");
const RUN_ID: (&str, &str) = ("run_id", "run_id");

pub const TABLES: &[Table] = &[
    Table {
        kind: Kind::File,
        name: "files",
        parent: None,
        extras: &[EXPIRES, ("purpose", "purpose"), ("bytes", "bytes")],
    },
    Table {
        kind: Kind::Assistant,
        name: "assistants",
        parent: None,
        extras: &[],
    },
    Table {
        kind: Kind::Thread,
        name: "threads",
        parent: None,
        extras: &[],
    },
    Table {
        kind: Kind::Message,
        name: "messages",
        parent: Some(Kind::Thread),
        extras: &[RUN_ID],
    },
    Table {
        kind: Kind::Run,
        name: "runs",
        parent: Some(Kind::Thread),
        extras: &[STATUS, EXPIRES],
    },
    Table {
        kind: Kind::RunStep,
        name: "run_steps",
        parent: Some(Kind::Thread),
        extras: &[RUN_ID],
    },
    Table {
        kind: Kind::Transcript,
        name: "transcripts",
        parent: Some(Kind::Thread),
        extras: &[],
    },
    Table {
        kind: Kind::Upload,
        name: "uploads",
        parent: None,
        extras: &[STATUS, EXPIRES],
    },
    Table {
        kind: Kind::VectorStore,
        name: "vector_stores",
        parent: None,
        extras: &[STATUS, EXPIRES],
    },
    Table {
        kind: Kind::VectorStoreFile,
        name: "vector_store_files",
        parent: Some(Kind::VectorStore),
        extras: &[("file_id", "file.id"), ("status", "file.status")],
    },
    Table {
        kind: Kind::FileBatch,
        name: "file_batches",
        parent: Some(Kind::VectorStore),
        extras: &[STATUS],
    },
];

pub fn table(kind: Kind) -> &'static Table {
    TABLES
        .iter()
        .find(|t| t.kind == kind)
        .expect("every kind has a table")
}

impl Table {
    /// The column a filter on JSON `path` reads.
    pub fn column_of(&self, path: &str) -> Option<&'static str> {
        self.extras
            .iter()
            .find(|(_, p)| *p == path)
            .map(|(c, _)| *c)
    }

    /// The extra columns' values for `body`.
    pub fn extra_values(&self, body: &str) -> Vec<Value> {
        if self.extras.is_empty() {
            return vec![];
        }
        let json: Json = serde_json::from_str(body).unwrap_or(Json::Null);
        self.extras
            .iter()
            .map(|(_, path)| {
                let mut v = &json;
                for part in path.split('.') {
                    v = v.get(part).unwrap_or(&Json::Null);
                }
                match v {
                    Json::String(s) => Value::Text(s.clone()),
                    Json::Number(n) => n.as_i64().map(Value::Int).unwrap_or(Value::Null),
                    Json::Bool(b) => Value::Int(*b as i64),
                    _ => Value::Null,
                }
            })
            .collect()
    }

    /// The tables whose rows are deleted with an object of this table.
    pub fn children(&self) -> impl Iterator<Item = &'static Table> + '_ {
        TABLES.iter().filter(|t| t.parent == Some(self.kind))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extras_come_from_the_body_and_missing_ones_are_null() {
        let t = table(Kind::VectorStoreFile);
        let v = t.extra_values(r#"{"file":{"id":"file-1","status":"in_progress"}}"#);
        assert_eq!(
            v,
            vec![
                Value::Text("file-1".into()),
                Value::Text("in_progress".into())
            ]
        );
        let r = table(Kind::Run).extra_values(r#"{"status":"queued"}"#);
        assert_eq!(r, vec![Value::Text("queued".into()), Value::Null]);
        assert_eq!(t.column_of("file.status"), Some("status"));
        assert_eq!(t.column_of("nope"), None);
        let kids: Vec<_> = table(Kind::Thread).children().map(|t| t.name).collect();
        assert_eq!(kids, ["messages", "runs", "run_steps", "transcripts"]);
    }
}
