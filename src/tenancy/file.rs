//! The keys file: reading and checking it, and adding a key to it (`oasis keys add`).
//!
//! ```toml
//! # Oasis keys file: projects and the SHA-256 of each key (never the key itself).
//! [[projects]]
//! id = "team-a"
//! name = "Team A"                 # optional; the id by default
//! keys = ["sha256:3b1f…"]         # "sha256:" + 64 hex digits per key
//! max_concurrent_runs = 4         # optional limits (see tenancy::Limits)
//! max_live_sessions = 8
//! max_storage_bytes = 1073741824
//! ```
//!
//! Project ids are valid and unique, each hash belongs to one project, and unknown fields are
//! refused, so a typo surfaces rather than silently lifting a limit. Errors name the file and
//! the project, never a key: the TOML parser's messages, which quote what they stumbled on,
//! have quoted strings and long words (anything the length of a key or a hash) blanked out.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, bail};

use super::{KeyHash, Limits, Project, hash_key, valid_project_id};

/// What every key `oasis keys add` makes starts with.
pub const KEY_PREFIX: &str = "sk-oasis-";

/// How many random alphanumeric characters follow [`KEY_PREFIX`] (about 285 bits).
const KEY_RANDOM_CHARS: usize = 48;

/// The longest project name accepted.
const MAX_NAME_CHARS: usize = 200;

/// The top of a keys file `oasis keys add` creates.
const NEW_FILE_HEADER: &str = "\
# Oasis keys file: projects and the SHA-256 of each key (never the key itself).
# `oasis keys add --project ID` adds a key; Oasis picks up changes without a restart.

";

/// A project of the keys file, checked.
#[derive(Debug)]
pub(super) struct FileProject {
    pub project: Project,
    /// Its keys' hashes, each once.
    pub hashes: Vec<KeyHash>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    #[serde(default)]
    projects: Vec<toml::Value>,
}

/// One `[[projects]]` table as written.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    id: String,
    name: Option<String>,
    #[serde(default)]
    keys: Vec<String>,
    max_concurrent_runs: Option<u64>,
    max_live_sessions: Option<u64>,
    max_storage_bytes: Option<u64>,
}

/// The text of keys file `path`.
pub(super) fn read(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading keys file {}", path.display()))?;
    warn_if_others_can_write(path);
    Ok(text)
}

/// Anyone who can write the keys file can give themselves a key.
fn warn_if_others_can_write(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(path)
        && m.permissions().mode() & 0o022 != 0
    {
        tracing::warn!(
            file = %path.display(),
            "the keys file is writable by other users, who could add keys of their own; \
             chmod go-w it"
        );
    }
}

/// The projects of keys file `path`, whose text is `text`, checked: valid, unique ids; every
/// key entry a well-formed hash; no hash in two projects.
pub(super) fn parse(path: &Path, text: &str) -> anyhow::Result<Vec<FileProject>> {
    let file = path.display();
    let doc: Document = toml::from_str(text).map_err(|e| {
        let at = e
            .span()
            .map(|s| {
                let before = &text[..s.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
                format!(" at line {line}, column {column}")
            })
            .unwrap_or_default();
        anyhow::anyhow!("keys file {file}{at}: {}", blank_secrets(e.message()))
    })?;
    let mut out: Vec<FileProject> = Vec::with_capacity(doc.projects.len());
    for (i, value) in doc.projects.into_iter().enumerate() {
        // Errors name the project by its id when it has a valid one, else by its place.
        let label = match value.get("id").and_then(toml::Value::as_str) {
            Some(id) if valid_project_id(id) => format!("project `{id}`"),
            _ => format!("project #{} (of [[projects]])", i + 1),
        };
        let entry: Entry = value.try_into().map_err(|e| {
            anyhow::anyhow!("keys file {file}: {label}: {}", blank_secrets(e.message()))
        })?;
        if !valid_project_id(&entry.id) {
            bail!("keys file {file}: {label}: invalid id: use 1 to 64 letters, digits, '_' or '-'");
        }
        if out.iter().any(|p| *p.project.id == *entry.id) {
            bail!("keys file {file}: {label} is defined twice");
        }
        if let Some(name) = &entry.name {
            check_name(name).with_context(|| format!("keys file {file}: {label}"))?;
        }
        let mut hashes: Vec<KeyHash> = Vec::with_capacity(entry.keys.len());
        for (k, written) in entry.keys.iter().enumerate() {
            let Some(hash) = parse_hash(written) else {
                let hint = if written.starts_with(KEY_PREFIX) {
                    "looks like a key itself: the file holds only a key's hash (add keys with \
                     `oasis keys add`)"
                } else {
                    "is not \"sha256:\" and 64 hex digits"
                };
                bail!("keys file {file}: {label}: key #{} {hint}", k + 1);
            };
            if let Some(other) = out.iter().find(|p| p.hashes.contains(&hash)) {
                bail!(
                    "keys file {file}: {label}: key #{} is also a key of project `{}` (a key \
                     belongs to one project)",
                    k + 1,
                    other.project.id
                );
            }
            if !hashes.contains(&hash) {
                hashes.push(hash);
            }
        }
        out.push(FileProject {
            project: Project {
                name: entry.name.unwrap_or_else(|| entry.id.clone()),
                id: entry.id.into(),
                limits: Limits {
                    max_concurrent_runs: entry.max_concurrent_runs,
                    max_live_sessions: entry.max_live_sessions,
                    max_storage_bytes: entry.max_storage_bytes,
                },
            },
            hashes,
        });
    }
    Ok(out)
}

/// `"sha256:" + 64 hex digits` (either case) as bytes.
fn parse_hash(written: &str) -> Option<KeyHash> {
    let digits = written.strip_prefix("sha256:")?;
    let mut hash = [0u8; 32];
    hex::decode_to_slice(digits, &mut hash).ok()?;
    Some(hash)
}

/// How a key's hash is written in the file.
fn format_hash(hash: &KeyHash) -> String {
    format!("sha256:{}", hex::encode(hash))
}

fn check_name(name: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        !name.trim().is_empty()
            && name.chars().count() <= MAX_NAME_CHARS
            && !name.chars().any(char::is_control),
        "a project name is 1 to {MAX_NAME_CHARS} characters, none of them control characters"
    );
    Ok(())
}

/// A TOML parser's message with what might be a secret blanked out: quoted strings, and
/// words (runs of letters, digits, '_' and '-') of 20 characters or more, longer than any
/// field name of the file but shorter than any key or hash.
fn blank_secrets(message: &str) -> String {
    const LONG_WORD: usize = 20;
    let mut out = String::with_capacity(message.len());
    let mut word = String::new();
    let mut in_quotes = false;
    let flush = |word: &mut String, out: &mut String| {
        if word.chars().count() >= LONG_WORD {
            out.push('…');
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in message.chars() {
        if in_quotes {
            if c == '"' {
                in_quotes = false;
                out.push_str("…\"");
            }
        } else if c.is_alphanumeric() || c == '_' || c == '-' {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
            in_quotes = c == '"';
        }
    }
    if in_quotes {
        out.push('…');
    }
    flush(&mut word, &mut out);
    out
}

/// A new key: [`KEY_PREFIX`] and [`KEY_RANDOM_CHARS`] alphanumeric characters from the
/// thread's CSPRNG (ChaCha, seeded from the operating system).
fn new_key() -> String {
    use rand::Rng;
    let random: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(KEY_RANDOM_CHARS)
        .map(char::from)
        .collect();
    format!("{KEY_PREFIX}{random}")
}

/// Add a new random key to project `project` in keys file `file` (creating the file and/or the
/// project, with `name` if new; an existing project keeps its name), writing the file
/// atomically (a temporary file renamed over it, mode 0600), storing only the key's hash, and
/// keeping the rest of the file (comments and layout included). Returns the new key (the only
/// time it is ever shown). Concurrent calls on files of one folder take turns.
pub fn add_key(file: &Path, project: &str, name: Option<&str>) -> anyhow::Result<String> {
    anyhow::ensure!(
        valid_project_id(project),
        "invalid project id `{}`: use 1 to 64 letters, digits, '_' or '-'",
        project.escape_debug()
    );
    if let Some(name) = name {
        check_name(name)?;
    }
    let folder = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(folder).with_context(|| format!("creating {}", folder.display()))?;
    // The lock is on the folder (released when `_turn` drops), not on the file, which the
    // rename replaces, and not on a lock file, which would be left behind.
    let _turn = std::fs::File::open(folder)
        .and_then(|f| f.lock().map(|()| f))
        .with_context(|| format!("locking {}", folder.display()))?;
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => NEW_FILE_HEADER.to_string(),
        Err(e) => {
            return Err(e).with_context(|| format!("reading keys file {}", file.display()));
        }
    };
    // Only a file that loads is edited.
    parse(file, &text)?;
    let key = new_key();
    let hash = hash_key(&key);
    let edited = with_hash(file, &text, project, name, &format_hash(&hash))?;
    let loaded = parse(file, &edited)?;
    anyhow::ensure!(
        loaded
            .iter()
            .any(|p| *p.project.id == *project && p.hashes.contains(&hash)),
        "internal error: the edited keys file does not list the new key"
    );
    write_private(file, folder, edited.as_bytes())?;
    Ok(key)
}

/// `text` (of keys file `file`) with `hash` added to project `project`'s keys, the project
/// added (with `name`) if new.
fn with_hash(
    file: &Path,
    text: &str,
    project: &str,
    name: Option<&str>,
    hash: &str,
) -> anyhow::Result<String> {
    use toml_edit::{Array, ArrayOfTables, DocumentMut, Item, Table, value};
    let by_hand = || {
        format!(
            "keys file {}: `projects` is not written as [[projects]] tables; add the key by hand",
            file.display()
        )
    };
    let mut doc: DocumentMut = text
        .parse()
        .with_context(|| format!("keys file {}: not TOML", file.display()))?;
    // Without projects, a file's comments are the document's trailing text: they go before the
    // first project rather than after it.
    let trailing = doc.trailing().as_str().unwrap_or_default().to_string();
    let mut trailing_moved = false;
    let projects = doc
        .entry("projects")
        .or_insert(Item::ArrayOfTables(ArrayOfTables::new()));
    if projects.as_array().is_some_and(|a| a.is_empty()) {
        *projects = Item::ArrayOfTables(ArrayOfTables::new());
    }
    let projects = projects.as_array_of_tables_mut().with_context(by_hand)?;
    let existing = projects
        .iter()
        .position(|t| t.get("id").and_then(Item::as_str) == Some(project));
    match existing.and_then(|i| projects.get_mut(i)) {
        Some(table) => {
            let keys = table
                .entry("keys")
                .or_insert(value(Array::new()))
                .as_array_mut()
                .with_context(by_hand)?;
            push_like_the_others(keys, hash);
        }
        None => {
            let mut table = Table::new();
            table.insert("id", value(project));
            if let Some(name) = name {
                table.insert("name", value(name));
            }
            let mut keys = Array::new();
            keys.push(hash);
            table.insert("keys", value(keys));
            if projects.is_empty() {
                table.decor_mut().set_prefix(trailing);
                trailing_moved = true;
            }
            projects.push(table);
        }
    }
    if trailing_moved {
        doc.set_trailing("");
    }
    Ok(doc.to_string())
}

/// Push `hash` onto `keys`, one per line if the array is written one per line, with comments
/// after the last entry (`"sha256:…", # laptop`) staying on its line.
fn push_like_the_others(keys: &mut toml_edit::Array, hash: &str) {
    let Some(indent) = keys
        .iter()
        .last()
        .and_then(|v| v.decor().prefix())
        .and_then(|p| p.as_str())
        .and_then(|p| p.rsplit_once('\n'))
        .map(|(_, indent)| indent.to_string())
    else {
        keys.push(hash);
        return;
    };
    // What follows the last entry up to `]` (and its comma, which the new entry will need):
    // its line's end, then what precedes the `]`.
    let mut trailing = keys.trailing().as_str().unwrap_or_default().to_string();
    if !keys.trailing_comma()
        && let Some(last) = keys.iter_mut().last()
    {
        let suffix = last
            .decor()
            .suffix()
            .and_then(|s| s.as_str())
            .unwrap_or_default();
        trailing = format!("{suffix}{trailing}");
        last.decor_mut().set_suffix("");
    }
    let (line_end, before_bracket) = match trailing.rfind('\n') {
        Some(i) => (&trailing[..=i], format!("\n{}", &trailing[i + 1..])),
        None => ("\n", trailing.clone()),
    };
    keys.push(hash);
    if let Some(last) = keys.iter_mut().last() {
        last.decor_mut().set_prefix(format!("{line_end}{indent}"));
    }
    keys.set_trailing(before_bracket);
}

/// Write `bytes` to `file` (in `folder`) through a temporary sibling and a rename, readable
/// and writable by its owner only, synced with its folder.
fn write_private(file: &Path, folder: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let writing = || format!("writing keys file {}", file.display());
    // NamedTempFile makes its file 0600 already; said again, for the file it becomes.
    let mut tmp = tempfile::NamedTempFile::new_in(folder).with_context(writing)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o600))
        .with_context(writing)?;
    tmp.write_all(bytes).with_context(writing)?;
    tmp.as_file().sync_all().with_context(writing)?;
    tmp.persist(file).with_context(writing)?;
    std::fs::File::open(folder)
        .and_then(|f| f.sync_all())
        .with_context(writing)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenancy::Keys;

    const HASH_A: &str = "sha256:3b1f0000000000000000000000000000000000000000000000000000000000aa";
    const HASH_B: &str = "sha256:3b1f0000000000000000000000000000000000000000000000000000000000bb";

    fn parsed(text: &str) -> anyhow::Result<Vec<FileProject>> {
        parse(Path::new("/etc/oasis/keys.toml"), text)
    }

    /// The error of `text`, which must name the file.
    fn error(text: &str) -> String {
        let msg = format!("{:#}", parsed(text).expect_err("refused"));
        assert!(msg.contains("/etc/oasis/keys.toml"), "{msg}");
        msg
    }

    #[test]
    fn a_good_file_is_read_with_names_limits_and_hashes() {
        let projects = parsed(&format!(
            "# comment\n[[projects]]\nid = \"team-a\"\nname = \"Team A\"\nkeys = [\"{HASH_A}\"]\n\
             max_concurrent_runs = 4\nmax_live_sessions = 8\nmax_storage_bytes = 1073741824\n\n\
             [[projects]]\nid = \"b\"\nkeys = [\"{}\", \"{HASH_B}\"]\n",
            HASH_B.to_uppercase().replace("SHA256", "sha256")
        ))
        .unwrap();
        assert_eq!(projects.len(), 2);
        let a = &projects[0];
        assert_eq!(&*a.project.id, "team-a");
        assert_eq!(a.project.name, "Team A");
        assert_eq!(
            a.project.limits,
            Limits {
                max_concurrent_runs: Some(4),
                max_live_sessions: Some(8),
                max_storage_bytes: Some(1 << 30),
            }
        );
        assert_eq!(a.hashes, vec![parse_hash(HASH_A).unwrap()]);
        let b = &projects[1];
        assert_eq!(b.project.name, "b");
        assert_eq!(b.project.limits, Limits::default());
        // Upper- and lower-case spellings of one hash are one key.
        assert_eq!(b.hashes, vec![parse_hash(HASH_B).unwrap()]);
        assert_eq!(format_hash(&b.hashes[0]), HASH_B);
    }

    #[test]
    fn empty_files_and_projects_without_keys_are_valid() {
        assert!(parsed("").unwrap().is_empty());
        assert!(parsed("projects = []\n").unwrap().is_empty());
        let p = parsed("[[projects]]\nid = \"quiet\"\n").unwrap();
        assert!(p[0].hashes.is_empty());
    }

    #[test]
    fn malformed_hashes_are_refused_without_being_shown() {
        for bad in [
            "sha256:00",
            "sha256:zz1f0000000000000000000000000000000000000000000000000000000000aa",
            "3b1f0000000000000000000000000000000000000000000000000000000000aa",
            "md5:3b1f0000000000000000000000000000000000000000000000000000000000aa",
            "sha256:3b1f0000000000000000000000000000000000000000000000000000000000aa0",
        ] {
            let msg = error(&format!(
                "[[projects]]\nid = \"team-a\"\nkeys = [\"{HASH_A}\", \"{bad}\"]\n"
            ));
            assert!(
                msg.contains("project `team-a`") && msg.contains("key #2"),
                "{msg}"
            );
            assert!(!msg.contains(bad), "{msg}");
        }
        let key = new_key();
        let msg = error(&format!(
            "[[projects]]\nid = \"team-a\"\nkeys = [\"{key}\"]\n"
        ));
        assert!(msg.contains("looks like a key itself"), "{msg}");
        assert!(!msg.contains(&key), "{msg}");
    }

    #[test]
    fn a_duplicate_project_id_is_refused() {
        let msg =
            error("[[projects]]\nid = \"a\"\n[[projects]]\nid = \"b\"\n[[projects]]\nid = \"a\"\n");
        assert!(msg.contains("project `a` is defined twice"), "{msg}");
    }

    #[test]
    fn a_hash_in_two_projects_is_refused_but_twice_in_one_is_one_key() {
        let msg = error(&format!(
            "[[projects]]\nid = \"a\"\nkeys = [\"{HASH_A}\"]\n[[projects]]\nid = \"b\"\nkeys = [\"{HASH_B}\", \"{HASH_A}\"]\n"
        ));
        assert!(
            msg.contains("project `b`") && msg.contains("project `a`"),
            "{msg}"
        );
        assert!(msg.contains("key #2"), "{msg}");
        assert!(!msg.contains(&HASH_A[7..]), "{msg}");
        let p = parsed(&format!(
            "[[projects]]\nid = \"a\"\nkeys = [\"{HASH_A}\", \"{HASH_A}\"]\n"
        ))
        .unwrap();
        assert_eq!(p[0].hashes.len(), 1);
    }

    #[test]
    fn unknown_fields_are_refused_naming_the_project() {
        let msg = error("[[projects]]\nid = \"team-a\"\nmax_concurent_runs = 4\n");
        assert!(
            msg.contains("project `team-a`") && msg.contains("max_concurent_runs"),
            "{msg}"
        );
        let msg = error("[[project]]\nid = \"team-a\"\n");
        assert!(msg.contains("project"), "{msg}");
        let msg = error("[[projects]]\nid = \"team-a\"\nmax_live_sessions = -1\n");
        assert!(msg.contains("project `team-a`"), "{msg}");
    }

    #[test]
    fn bad_project_ids_are_refused() {
        for id in ["", "a.b", "a b", "../x", &"x".repeat(65)] {
            let msg = error(&format!("[[projects]]\nid = \"{id}\"\n"));
            assert!(
                msg.contains("project #1") && msg.contains("invalid id"),
                "{msg}"
            );
        }
        let msg = error("[[projects]]\nname = \"no id\"\n");
        assert!(msg.contains("project #1") && msg.contains("id"), "{msg}");
        let msg = error("[[projects]]\nid = 7\n");
        assert!(msg.contains("project #1"), "{msg}");
    }

    #[test]
    fn toml_errors_give_the_place_but_not_a_key_written_in_the_wrong_spot() {
        let key = new_key();
        // A key where a list was due, a key unquoted, a key as a field name.
        for text in [
            format!("[[projects]]\nid = \"a\"\nkeys = \"{key}\"\n"),
            format!("[[projects]]\nid = \"a\"\nkeys = [{key}]\n"),
            format!("[[projects]]\nid = \"a\"\n{key} = 1\n"),
            format!("[[projects]]\nid = \"a\"\nname = \"{key}\n"),
        ] {
            let msg = error(&text);
            assert!(!msg.contains(&key) && !msg.contains(&key[9..30]), "{msg}");
        }
        let msg = error("[[projects]]\nid = \"a\"\nkeys = [sk]\n");
        assert!(msg.contains("line 3"), "{msg}");
    }

    #[test]
    fn blanking_keeps_field_names_and_drops_strings_and_long_words() {
        assert_eq!(
            blank_secrets("unknown field `max_concurent_runs`, expected `max_concurrent_runs`"),
            "unknown field `max_concurent_runs`, expected `max_concurrent_runs`"
        );
        assert_eq!(
            blank_secrets("invalid type: string \"sk-secret\", expected a sequence"),
            "invalid type: string \"…\", expected a sequence"
        );
        assert_eq!(blank_secrets("at sk-oasis-abcdefghijklmnop."), "at ….");
        assert_eq!(blank_secrets("unclosed \"abc"), "unclosed \"…");
    }

    #[test]
    fn project_names_are_checked() {
        assert!(check_name("Team A").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a\nb").is_err());
        assert!(check_name(&"x".repeat(MAX_NAME_CHARS + 1)).is_err());
        let msg = error("[[projects]]\nid = \"a\"\nname = \"\\u001b[2J\"\n");
        assert!(msg.contains("project `a`"), "{msg}");
    }

    #[test]
    fn new_keys_are_long_random_and_alphanumeric() {
        let a = new_key();
        let b = new_key();
        assert_ne!(a, b);
        assert_eq!(a.len(), KEY_PREFIX.len() + KEY_RANDOM_CHARS);
        let body = a.strip_prefix(KEY_PREFIX).unwrap();
        assert!(body.bytes().all(|c| c.is_ascii_alphanumeric()), "{a}");
    }

    #[test]
    fn add_key_creates_a_private_file_that_holds_only_the_hash() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("keys.toml");
        let key = add_key(&path, "team-a", Some("Team A")).unwrap();
        assert!(key.starts_with(KEY_PREFIX));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# Oasis keys file"), "{text}");
        assert!(!text.contains(&key), "{text}");
        assert!(text.contains(&format_hash(&hash_key(&key))), "{text}");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // No temporary or lock file is left beside it.
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );

        let keys = Keys::new(None, Some(path)).unwrap();
        let project = keys.project_of(&key).unwrap();
        assert_eq!(&*project.id, "team-a");
        assert_eq!(project.name, "Team A");
    }

    #[test]
    fn add_key_appends_to_a_project_and_keeps_the_others_and_the_comments() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        std::fs::write(
            &path,
            format!(
                "# ours, keep me\n[[projects]]\nid = \"team-a\"\nname = \"Team A\"\nkeys = [\n  \"{HASH_A}\", # laptop\n]\n\
                 max_concurrent_runs = 4\n\n[[projects]]\nid = \"b\" # b's\nkeys = [\"{HASH_B}\"]\n"
            ),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        let first = add_key(&path, "team-a", Some("ignored: the project exists")).unwrap();
        let second = add_key(&path, "team-a", None).unwrap();
        let third = add_key(&path, "c", None).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("# ours, keep me") && text.contains("# laptop"),
            "{text}"
        );
        assert!(text.contains("id = \"b\" # b's"), "{text}");
        assert!(!text.contains("ignored"), "{text}");
        for key in [&first, &second, &third] {
            assert!(!text.contains(key.as_str()), "{text}");
        }
        let projects = parse(&path, &text).unwrap();
        let ids: Vec<&str> = projects.iter().map(|p| &*p.project.id).collect();
        assert_eq!(ids, ["team-a", "b", "c"]);
        assert_eq!(projects[0].hashes.len(), 3);
        assert_eq!(projects[0].project.limits.max_concurrent_runs, Some(4));
        assert_eq!(projects[1].hashes, vec![parse_hash(HASH_B).unwrap()]);
        assert_eq!(projects[2].project.name, "c");

        let keys = Keys::new(None, Some(path.clone())).unwrap();
        assert_eq!(&*keys.project_of(&first).unwrap().id, "team-a");
        assert_eq!(&*keys.project_of(&second).unwrap().id, "team-a");
        assert_eq!(keys.project_of(&first).unwrap().name, "Team A");
        assert_eq!(&*keys.project_of(&third).unwrap().id, "c");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_hash_is_added_in_the_layout_of_the_list() {
        let added = |keys: &str| {
            let text = format!("[[projects]]\nid = \"a\"\nkeys = {keys}\nmax_live_sessions = 1\n");
            let edited = with_hash(Path::new("k.toml"), &text, "a", None, "sha256:new").unwrap();
            let start = edited.find("keys = ").unwrap() + "keys = ".len();
            let end = edited.find("\nmax_live_sessions").unwrap();
            edited[start..end].to_string()
        };
        assert_eq!(added("[]"), "[\"sha256:new\"]");
        assert_eq!(added("[\"x\"]"), "[\"x\", \"sha256:new\"]");
        assert_eq!(
            added("[\n  \"x\", # laptop\n]"),
            "[\n  \"x\", # laptop\n  \"sha256:new\",\n]"
        );
        assert_eq!(
            added("[\n  \"x\" # laptop\n]"),
            "[\n  \"x\", # laptop\n  \"sha256:new\"\n]"
        );
        assert_eq!(
            added("[\n  \"x\",\n  \"y\"]"),
            "[\n  \"x\",\n  \"y\",\n  \"sha256:new\"]"
        );
    }

    #[test]
    fn add_key_refuses_bad_ids_names_and_files_that_do_not_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        assert!(add_key(&path, "a.b", None).is_err());
        assert!(add_key(&path, "a", Some("\u{1b}[2J")).is_err());
        assert!(!path.exists());
        let broken = "[[projects]]\nid = \"a\"\nkeys = [\"sha256:00\"]\n";
        std::fs::write(&path, broken).unwrap();
        assert!(add_key(&path, "a", None).is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), broken);
        std::fs::write(&path, "projects = []\n").unwrap();
        let key = add_key(&path, "a", None).unwrap();
        let keys = Keys::new(None, Some(path.clone())).unwrap();
        assert_eq!(&*keys.project_of(&key).unwrap().id, "a");
        std::fs::write(&path, "projects = [{ id = \"a\" }]\n").unwrap();
        let msg = format!("{:#}", add_key(&path, "a", None).unwrap_err());
        assert!(msg.contains("by hand"), "{msg}");
    }

    #[test]
    fn concurrent_adds_lose_no_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        let added: Vec<String> = std::thread::scope(|s| {
            let adders: Vec<_> = (0..8)
                .map(|i| {
                    let path = &path;
                    s.spawn(move || {
                        add_key(path, if i % 2 == 0 { "a" } else { "b" }, None).unwrap()
                    })
                })
                .collect();
            adders.into_iter().map(|t| t.join().unwrap()).collect()
        });
        let keys = Keys::new(None, Some(path)).unwrap();
        for key in &added {
            assert!(keys.project_of(key).is_some(), "a key was lost");
        }
    }
}
