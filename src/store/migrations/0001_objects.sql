-- Every API object is one row: its id, kind, the thread it belongs to (if any), creation time,
-- and the object itself as JSON. `seq` orders objects created in the same second.
CREATE TABLE objects (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT NOT NULL UNIQUE,
    kind       TEXT NOT NULL,
    scope      TEXT,
    created_at INTEGER NOT NULL,
    body       TEXT NOT NULL
);
CREATE INDEX objects_kind_scope_seq ON objects (kind, scope, seq);
CREATE INDEX objects_scope ON objects (scope);
