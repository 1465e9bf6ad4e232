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
    Serve(crate::server::ServeArgs),
    /// Run Python in a fresh sandbox session and print what it printed.
    Exec(ExecArgs),
    /// Run benchmarks and print numbers.
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
    },
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
pub enum BenchWhat {
    /// Sandbox latencies and memory.
    Sandbox(crate::bench::SandboxBenchArgs),
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
            crate::server::run(&cli.data_dir, args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Exec(args) => exec(&cli.data_dir, args),
        Command::Bench { what } => match what {
            BenchWhat::Sandbox(args) => {
                crate::bench::sandbox(&cli.data_dir, args)?;
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
    // Print output as the guest writes it.
    let tap: OutputTap = Arc::new(|kind, bytes: &[u8]| match kind {
        StreamKind::Stdout => {
            let mut o = std::io::stdout().lock();
            let _ = o.write_all(bytes);
            let _ = o.flush();
        }
        StreamKind::Stderr => {
            let _ = std::io::stderr().lock().write_all(bytes);
        }
    });
    let opts = ExecOptions {
        limits: Some(limits),
        tap: Some(tap),
        cancel: None,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(session.exec(&code, &opts))?;
    if let Some(r) = &result.result {
        println!("{r}");
    }
    if result.truncated() {
        eprintln!("oasis: output truncated at the limit");
    }
    for f in &result.files {
        eprintln!(
            "oasis: {} {} ({} bytes, sha256 {})",
            if f.created { "created" } else { "changed" },
            f.path,
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
