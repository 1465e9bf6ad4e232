-- Store v2: a table per kind of object. Each keeps `seq` (creation order, carried over from
-- `objects`), id, scope (the thread or vector store it belongs to), created_at and the object as
-- JSON, plus a column for each field filtered, ordered or locked on (src/store/schema.rs).
-- `runs.node`/`claimed_at` say which node drives a run (NULL: none yet); `queued_at` (database
-- milliseconds) when it was last queued.
CREATE TABLE files (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT NOT NULL UNIQUE,
    scope      TEXT,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    purpose    TEXT,
    body       TEXT NOT NULL
);
INSERT INTO files (seq, id, scope, created_at, expires_at, purpose, body)
    SELECT seq, id, scope, created_at, json_extract(body, '$.expires_at'), json_extract(body, '$.purpose'), body FROM objects WHERE kind = 'file';
CREATE TABLE assistants (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT NOT NULL UNIQUE,
    scope      TEXT,
    created_at INTEGER NOT NULL,
    body       TEXT NOT NULL
);
INSERT INTO assistants (seq, id, scope, created_at, body)
    SELECT seq, id, scope, created_at, body FROM objects WHERE kind = 'assistant';
CREATE TABLE threads (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT NOT NULL UNIQUE,
    scope      TEXT,
    created_at INTEGER NOT NULL,
    body       TEXT NOT NULL
);
INSERT INTO threads (seq, id, scope, created_at, body)
    SELECT seq, id, scope, created_at, body FROM objects WHERE kind = 'thread';
CREATE TABLE messages (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT NOT NULL UNIQUE,
    scope      TEXT,
    created_at INTEGER NOT NULL,
    run_id     TEXT,
    body       TEXT NOT NULL
);
INSERT INTO messages (seq, id, scope, created_at, run_id, body)
    SELECT seq, id, scope, created_at, json_extract(body, '$.run_id'), body FROM objects WHERE kind = 'thread.message';
CREATE TABLE runs (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT NOT NULL UNIQUE,
    scope      TEXT,
    created_at INTEGER NOT NULL,
    status     TEXT,
    expires_at INTEGER,
    node       TEXT,
    claimed_at INTEGER,
    queued_at  INTEGER,
    body       TEXT NOT NULL
);
INSERT INTO runs (seq, id, scope, created_at, status, expires_at, body)
    SELECT seq, id, scope, created_at, json_extract(body, '$.status'), json_extract(body, '$.expires_at'), body FROM objects WHERE kind = 'thread.run';
CREATE TABLE run_steps (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT NOT NULL UNIQUE,
    scope      TEXT,
    created_at INTEGER NOT NULL,
    run_id     TEXT,
    body       TEXT NOT NULL
);
INSERT INTO run_steps (seq, id, scope, created_at, run_id, body)
    SELECT seq, id, scope, created_at, json_extract(body, '$.run_id'), body FROM objects WHERE kind = 'thread.run.step';
CREATE TABLE transcripts (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT NOT NULL UNIQUE,
    scope      TEXT,
    created_at INTEGER NOT NULL,
    body       TEXT NOT NULL
);
INSERT INTO transcripts (seq, id, scope, created_at, body)
    SELECT seq, id, scope, created_at, body FROM objects WHERE kind = 'oasis.transcript';
CREATE TABLE uploads (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT NOT NULL UNIQUE,
    scope      TEXT,
    created_at INTEGER NOT NULL,
    status     TEXT,
    expires_at INTEGER,
    body       TEXT NOT NULL
);
INSERT INTO uploads (seq, id, scope, created_at, status, expires_at, body)
    SELECT seq, id, scope, created_at, json_extract(body, '$.status'), json_extract(body, '$.expires_at'), body FROM objects WHERE kind = 'upload';
CREATE TABLE vector_stores (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT NOT NULL UNIQUE,
    scope      TEXT,
    created_at INTEGER NOT NULL,
    status     TEXT,
    expires_at INTEGER,
    body       TEXT NOT NULL
);
INSERT INTO vector_stores (seq, id, scope, created_at, status, expires_at, body)
    SELECT seq, id, scope, created_at, json_extract(body, '$.status'), json_extract(body, '$.expires_at'), body FROM objects WHERE kind = 'vector_store';
CREATE TABLE vector_store_files (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT NOT NULL UNIQUE,
    scope      TEXT,
    created_at INTEGER NOT NULL,
    file_id    TEXT,
    status     TEXT,
    body       TEXT NOT NULL
);
INSERT INTO vector_store_files (seq, id, scope, created_at, file_id, status, body)
    SELECT seq, id, scope, created_at, json_extract(body, '$.file.id'), json_extract(body, '$.file.status'), body FROM objects WHERE kind = 'vector_store.file';
CREATE TABLE file_batches (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT NOT NULL UNIQUE,
    scope      TEXT,
    created_at INTEGER NOT NULL,
    status     TEXT,
    body       TEXT NOT NULL
);
INSERT INTO file_batches (seq, id, scope, created_at, status, body)
    SELECT seq, id, scope, created_at, json_extract(body, '$.status'), body FROM objects WHERE kind = 'vector_store.files_batch';
CREATE INDEX messages_scope ON messages (scope, seq);
CREATE INDEX messages_run ON messages (run_id);
CREATE INDEX runs_scope ON runs (scope, seq);
CREATE INDEX runs_status ON runs (status, seq);
CREATE INDEX runs_node ON runs (node) WHERE node IS NOT NULL;
CREATE INDEX run_steps_scope ON run_steps (scope, run_id, seq);
CREATE INDEX transcripts_scope ON transcripts (scope);
CREATE INDEX files_expires ON files (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX files_purpose ON files (purpose, seq);
CREATE INDEX uploads_expires ON uploads (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX vector_store_files_scope ON vector_store_files (scope, seq);
CREATE INDEX vector_store_files_file ON vector_store_files (file_id);
CREATE INDEX vector_store_files_status ON vector_store_files (status, seq);
CREATE INDEX file_batches_scope ON file_batches (scope, seq);
-- Nodes of a cluster, by the database's clock (milliseconds); a node that stops
-- heart-beating is lost, and the runs it drove end.
CREATE TABLE nodes (
    id           TEXT PRIMARY KEY,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL
);
-- Leases: which node holds a code-interpreter session (or a file being read, `ingest.<key>`)
-- now (`node` NULL: none; until `expires_at`, database milliseconds), and for a session how
-- many turns its shared state has had: a node whose copy is at an older `generation` fetches
-- the state from the object store first.
CREATE TABLE leases (
    id         TEXT PRIMARY KEY,
    node       TEXT,
    expires_at INTEGER NOT NULL,
    generation INTEGER NOT NULL
);
-- Change counters by key (a vector store's files, for the search indexes every node keeps).
CREATE TABLE counters (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
DROP TABLE objects;
