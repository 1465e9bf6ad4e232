-- The chunks of the files in vector stores: their text and embedding (little-endian f32s),
-- which each node's in-memory search index is built from. `embedder` names the model that
-- made `vector`, so a store is never searched with another model's vectors.
CREATE TABLE chunks (
    vector_store_id TEXT NOT NULL,
    file_id         TEXT NOT NULL,
    idx             INTEGER NOT NULL,
    text            TEXT NOT NULL,
    embedder        TEXT NOT NULL,
    vector          BLOB NOT NULL,
    PRIMARY KEY (vector_store_id, file_id, idx)
);
CREATE INDEX chunks_file ON chunks (file_id);
