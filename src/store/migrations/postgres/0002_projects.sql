-- Projects: every object belongs to one (`default` for what was stored before; see
-- src/tenancy.rs), and a File's size gets a column (a project's storage is summed).
ALTER TABLE files ADD COLUMN project TEXT NOT NULL DEFAULT 'default';
ALTER TABLE assistants ADD COLUMN project TEXT NOT NULL DEFAULT 'default';
ALTER TABLE threads ADD COLUMN project TEXT NOT NULL DEFAULT 'default';
ALTER TABLE messages ADD COLUMN project TEXT NOT NULL DEFAULT 'default';
ALTER TABLE runs ADD COLUMN project TEXT NOT NULL DEFAULT 'default';
ALTER TABLE run_steps ADD COLUMN project TEXT NOT NULL DEFAULT 'default';
ALTER TABLE transcripts ADD COLUMN project TEXT NOT NULL DEFAULT 'default';
ALTER TABLE uploads ADD COLUMN project TEXT NOT NULL DEFAULT 'default';
ALTER TABLE vector_stores ADD COLUMN project TEXT NOT NULL DEFAULT 'default';
ALTER TABLE vector_store_files ADD COLUMN project TEXT NOT NULL DEFAULT 'default';
ALTER TABLE file_batches ADD COLUMN project TEXT NOT NULL DEFAULT 'default';
ALTER TABLE files ADD COLUMN bytes BIGINT;
UPDATE files SET bytes = CAST(CAST(body AS jsonb) ->> 'bytes' AS BIGINT);
CREATE INDEX files_project ON files (project, seq);
CREATE INDEX assistants_project ON assistants (project, seq);
CREATE INDEX threads_project ON threads (project, seq);
CREATE INDEX uploads_project ON uploads (project, seq);
CREATE INDEX vector_stores_project ON vector_stores (project, seq);
CREATE INDEX runs_project ON runs (project, status);
