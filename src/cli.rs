//! The `oasis` command line.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::sandbox::{
    DEFAULT_IMAGE, ExecOptions, Outcome, OutputTap, Progress, Sandbox, Session, SessionDirs,
    StreamKind,
};

#[derive(Debug, Parser)]
#[command(
    name = "oasis",
    version,
    about = "OpenAI-compatible Assistants API with a WASI Python code interpreter"
)]
pub struct Cli {
    /// Folder for Oasis's state: the runtime, the compiled-module cache, sessions.
    #[arg(
        long,
        global = true,
        env = "OASIS_DATA_DIR",
        default_value = "./oasis-data"
    )]
    pub data_dir: PathBuf,
    /// What to do; without one, `serve`.
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage the pinned Python runtime.
    Runtime {
        #[command(subcommand)]
        action: RuntimeAction,
    },
    /// Serve the OpenAI-compatible API.
    Serve(Box<crate::server::ServeArgs>),
    /// Run Python in a fresh sandbox session and print what it printed.
    Exec(ExecArgs),
    /// Manage the API keys of projects (the keys file).
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Run benchmarks and print numbers.
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
    },
    /// Run one sandbox worker process (started by `oasis serve`, not by hand).
    #[command(hide = true)]
    SandboxWorker(crate::sandbox::worker::WorkerArgs),
    /// Extract one document's text under limits (started by `oasis serve`, not by hand).
    #[command(hide = true)]
    ExtractWorker,
}

#[derive(Debug, Subcommand)]
pub enum RuntimeAction {
    /// Download, verify and unpack the runtime (idempotent).
    Fetch,
    /// Fetch the runtime and compile (and pre-initialize) an image now.
    Prepare {
        #[arg(long, default_value = DEFAULT_IMAGE)]
        image: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysAction {
    /// Make a new key for a project (created if new) and print it; the keys file keeps only
    /// its SHA-256, and a running server picks it up within a second.
    Add {
        /// The project's id: 1 to 64 letters, digits, '_' or '-'.
        #[arg(long)]
        project: String,
        /// A name for people, for a new project (an existing project keeps its name).
        #[arg(long)]
        name: Option<String>,
        /// The keys file (created if absent).
        #[arg(long, env = "OASIS_KEYS_FILE")]
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum BenchWhat {
    /// Sandbox latencies and memory.
    Sandbox(crate::bench::SandboxBenchArgs),
    /// file_search quality, ingestion throughput, search latency and memory.
    Retrieval(crate::bench::retrieval::RetrievalBenchArgs),
}

#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// Image to run.
    #[arg(long, default_value = DEFAULT_IMAGE)]
    pub image: String,
    /// Host folder mounted at /mnt/data (default: a new temporary folder).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Wall-clock limit in seconds (default: the image's).
    #[arg(long)]
    pub timeout: Option<f64>,
    /// Code to run.
    #[arg(short = 'c', conflicts_with = "file")]
    pub code: Option<String>,
    /// File to run, or `-` for standard input.
    pub file: Option<PathBuf>,
}

pub fn main() -> ExitCode {
    let mut cli = Cli::parse();
    if cli.command.is_none() {
        // No subcommand means `serve`, with its flags and environment as usual.
        cli = Cli::parse_from(std::env::args_os().chain([std::ffi::OsString::from("serve")]));
    }
    let default_filter = match cli.command {
        None | Some(Command::Serve(_)) => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("OASIS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal, never escapes in a log file or a pipe.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("oasis: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let command = cli.command.context("no command")?;
    match command {
        Command::Runtime { action } => {
            let progress = Progress::stderr();
            match action {
                RuntimeAction::Fetch => {
                    let rt = crate::sandbox::Runtime::locate(&cli.data_dir, &progress)?;
                    println!("{}", rt.dir.display());
                }
                RuntimeAction::Prepare { image } => {
                    let sandbox = Sandbox::open(&cli.data_dir, progress)?;
                    sandbox.image(&image)?;
                    progress.message(&format!("image `{image}` is ready"));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(args) => {
            crate::server::run(&cli.data_dir, *args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Exec(args) => exec(&cli.data_dir, args),
        Command::SandboxWorker(args) => {
            crate::sandbox::worker::run(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::ExtractWorker => {
            crate::retrieval::extract::run_worker()?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys { action } => match action {
            KeysAction::Add {
                project,
                name,
                file,
            } => {
                let key = crate::tenancy::add_key(&file, &project, name.as_deref())?;
                println!("{key}");
                eprintln!(
                    "oasis: stored its SHA-256 in {}; this is the only time the key is shown",
                    file.display()
                );
                Ok(ExitCode::SUCCESS)
            }
        },
        Command::Bench { what } => match what {
            BenchWhat::Sandbox(args) => {
                crate::bench::sandbox(&cli.data_dir, args)?;
                Ok(ExitCode::SUCCESS)
            }
            BenchWhat::Retrieval(args) => {
                crate::bench::retrieval::retrieval(&cli.data_dir, args)?;
                Ok(ExitCode::SUCCESS)
            }
        },
    }
}

fn exec(data_dir: &std::path::Path, args: ExecArgs) -> anyhow::Result<ExitCode> {
    let code = match (&args.code, &args.file) {
        (Some(c), _) => c.clone(),
        (None, Some(p)) if p.as_os_str() == "-" => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading stdin")?;
            s
        }
        (None, Some(p)) => {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?
        }
        (None, None) => anyhow::bail!("give code with -c CODE, a FILE, or - for stdin"),
    };
    let progress = Progress::stderr();
    let sandbox = Sandbox::open(data_dir, progress)?;
    let image = sandbox.image(&args.image)?;
    let scratch = tempfile::tempdir().context("creating a scratch folder")?;
    let data = match &args.data {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            d.clone()
        }
        None => scratch.path().join("data"),
    };
    let mut session = Session::new(
        "exec",
        image.clone(),
        SessionDirs {
            data,
            tmp: scratch.path().join("tmp"),
        },
    );
    let mut limits = image.image.limits();
    if let Some(t) = args.timeout {
        anyhow::ensure!(
            t > 0.0 && t.is_finite(),
            "--timeout must be a positive number of seconds"
        );
        limits.timeout = Duration::from_secs_f64(t);
    }
    // Print output as the guest writes it, with terminal controls escaped.
    let streams = Arc::new(std::sync::Mutex::new((
        TerminalText::default(),
        TerminalText::default(),
    )));
    let tap_streams = streams.clone();
    let tap: OutputTap = Arc::new(move |kind, bytes: &[u8]| {
        let mut st = tap_streams.lock().expect("terminal streams lock");
        match kind {
            StreamKind::Stdout => print_out(&st.0.push(bytes)),
            StreamKind::Stderr => print_err(&st.1.push(bytes)),
        }
    });
    let opts = ExecOptions {
        limits: Some(limits),
        tap: Some(tap),
        cancel: None,
        inputs: vec![],
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(session.exec(&code, &opts))?;
    {
        let mut st = streams.lock().expect("terminal streams lock");
        print_out(&st.0.finish());
        print_err(&st.1.finish());
    }
    if let Some(r) = &result.result {
        println!("{}", escape_terminal(r));
    }
    if result.truncated() {
        eprintln!("oasis: output truncated at the limit");
    }
    for f in &result.files {
        eprintln!(
            "oasis: {} {} ({} bytes, sha256 {})",
            if f.created { "created" } else { "changed" },
            escape_terminal(&f.path),
            f.size,
            &f.sha256[..16]
        );
    }
    if !result.images.is_empty() {
        let dir = std::env::temp_dir().join(format!("oasis-exec-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        for (i, png) in result.images.iter().enumerate() {
            let path = dir.join(format!("image-{}.png", i + 1));
            std::fs::write(&path, png)?;
            eprintln!("oasis: image {} ({} bytes)", path.display(), png.len());
        }
    }
    if let Some(d) = &result.detail
        && result.outcome != Outcome::Ok
    {
        eprintln!("oasis: {}: {d}", result.outcome.as_str());
    }
    let status = match result.outcome {
        Outcome::Timeout => 124,
        Outcome::Crashed | Outcome::Cancelled => 70,
        Outcome::MemoryLimit => result.exit_code.unwrap_or(137),
        _ => result.exit_code.unwrap_or(1),
    };
    Ok(ExitCode::from(status.clamp(0, 255) as u8))
}

fn print_out(text: &str) {
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(text.as_bytes());
    let _ = o.flush();
}

fn print_err(text: &str) {
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// Guest text made safe for the operator's terminal: control characters other than `\n` and
/// `\t` (ESC, which starts ANSI and OSC sequences; `\r`; BEL; the C1 controls) and the Unicode
/// bidi controls become visible escapes (`\x1b`, `\r`, `\u{202e}`); the rest is kept.
pub fn escape_terminal(text: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' | '\t' => out.push(c),
            '\r' => out.push_str("\\r"),
            '\0'..='\x1f' | '\x7f' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            '\u{80}'..='\u{9f}'
            | '\u{61c}'
            | '\u{200e}'
            | '\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}' => {
                let _ = write!(out, "\\u{{{:04x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// One output stream on its way to the terminal: chunks may split a UTF-8 character, whose
/// first bytes wait for the next chunk; invalid bytes become U+FFFD.
#[derive(Debug, Default)]
struct TerminalText {
    pending: Vec<u8>,
}

impl TerminalText {
    fn push(&mut self, bytes: &[u8]) -> String {
        let mut data = std::mem::take(&mut self.pending);
        data.extend_from_slice(bytes);
        let mut text = String::new();
        let mut rest = data.as_slice();
        while !rest.is_empty() {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    text.push_str(s);
                    rest = &[];
                }
                Err(e) => {
                    let (good, bad) = rest.split_at(e.valid_up_to());
                    text.push_str(std::str::from_utf8(good).expect("valid up to here"));
                    match e.error_len() {
                        Some(n) => {
                            text.push('\u{fffd}');
                            rest = &bad[n..];
                        }
                        None => {
                            self.pending = bad.to_vec();
                            rest = &[];
                        }
                    }
                }
            }
        }
        escape_terminal(&text)
    }

    /// What is left at the end: an unfinished character.
    fn finish(&mut self) -> String {
        if std::mem::take(&mut self.pending).is_empty() {
            String::new()
        } else {
            "\u{fffd}".to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_controls_in_guest_output_are_escaped_but_newlines_and_tabs_are_kept() {
        assert_eq!(
            escape_terminal("\x1b[31mred\x1b[0m\r\x07|\u{202e}evil|\u{9b}2J|\ttab|\0\x7f\n"),
            "\\x1b[31mred\\x1b[0m\\r\\x07|\\u{202e}evil|\\u{009b}2J|\ttab|\\x00\\x7f\n"
        );
        assert_eq!(escape_terminal("héllo €, 世界\n"), "héllo €, 世界\n");
    }

    #[test]
    fn a_character_split_across_chunks_is_kept_and_invalid_bytes_are_replaced() {
        let mut t = TerminalText::default();
        assert_eq!(t.push(b"a\xe2\x82"), "a");
        assert_eq!(t.push(b"\xac\xff\x1b"), "\u{20ac}\u{fffd}\\x1b");
        assert_eq!(t.push(b"\xc3"), "");
        assert_eq!(t.finish(), "\u{fffd}");
        assert_eq!(t.finish(), "");
    }
}
