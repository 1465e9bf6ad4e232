-- The PostgreSQL schema, the same tables as SQLite's after its migration 0003
-- (src/store/schema.rs names what each column is for).
CREATE TABLE files (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    scope      TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    purpose    TEXT,
    body       TEXT NOT NULL
);
CREATE TABLE assistants (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    scope      TEXT,
    created_at BIGINT NOT NULL,
    body       TEXT NOT NULL
);
CREATE TABLE threads (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    scope      TEXT,
    created_at BIGINT NOT NULL,
    body       TEXT NOT NULL
);
CREATE TABLE messages (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    scope      TEXT,
    created_at BIGINT NOT NULL,
    run_id     TEXT,
    body       TEXT NOT NULL
);
CREATE TABLE runs (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    scope      TEXT,
    created_at BIGINT NOT NULL,
    status     TEXT,
    expires_at BIGINT,
    node       TEXT,
    claimed_at BIGINT,
    queued_at  BIGINT,
    body       TEXT NOT NULL
);
CREATE TABLE run_steps (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    scope      TEXT,
    created_at BIGINT NOT NULL,
    run_id     TEXT,
    body       TEXT NOT NULL
);
CREATE TABLE transcripts (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    scope      TEXT,
    created_at BIGINT NOT NULL,
    body       TEXT NOT NULL
);
CREATE TABLE uploads (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    scope      TEXT,
    created_at BIGINT NOT NULL,
    status     TEXT,
    expires_at BIGINT,
    body       TEXT NOT NULL
);
CREATE TABLE vector_stores (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    scope      TEXT,
    created_at BIGINT NOT NULL,
    status     TEXT,
    expires_at BIGINT,
    body       TEXT NOT NULL
);
CREATE TABLE vector_store_files (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    scope      TEXT,
    created_at BIGINT NOT NULL,
    file_id    TEXT,
    status     TEXT,
    body       TEXT NOT NULL
);
CREATE TABLE file_batches (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    scope      TEXT,
    created_at BIGINT NOT NULL,
    status     TEXT,
    body       TEXT NOT NULL
);
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
    started_at   BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL
);
-- The chunks of the files in vector stores: their text and embedding (little-endian f32s),
-- which each node's in-memory search index is built from.
CREATE TABLE chunks (
    vector_store_id TEXT NOT NULL,
    file_id         TEXT NOT NULL,
    idx             BIGINT NOT NULL,
    text            TEXT NOT NULL,
    embedder        TEXT NOT NULL,
    vector          BYTEA NOT NULL,
    PRIMARY KEY (vector_store_id, file_id, idx)
);
CREATE INDEX chunks_file ON chunks (file_id);
-- Leases: which node holds a code-interpreter session (or a file being read, `ingest.<key>`)
-- now (`node` NULL: none; until `expires_at`, database milliseconds), and for a session how
-- many turns its shared state has had: a node whose copy is at an older `generation` fetches
-- the state from the object store first.
CREATE TABLE leases (
    id         TEXT PRIMARY KEY,
    node       TEXT,
    expires_at BIGINT NOT NULL,
    generation BIGINT NOT NULL
);
-- Change counters by key (a vector store's files, for the search indexes every node keeps).
CREATE TABLE counters (
    key   TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
