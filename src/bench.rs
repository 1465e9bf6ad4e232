//! `oasis bench sandbox`: latency percentiles and memory of the sandbox, printed (never asserted).
//! Its hibernation section is in `bench/hibernation.rs`; `oasis bench retrieval` is in
//! `bench/retrieval.rs`.

pub mod hibernation;
pub mod retrieval;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::sandbox::{
    DEFAULT_IMAGE, ExecOptions, LoadedImage, ManagerConfig, Outcome, Progress, Sandbox, Session,
    SessionDirs, SessionManager,
};

#[derive(Debug, clap::Args)]
pub struct SandboxBenchArgs {
    /// Samples per measurement.
    #[arg(long, default_value_t = 30)]
    pub samples: usize,
    /// Image to measure.
    #[arg(long, default_value = DEFAULT_IMAGE)]
    pub image: String,
    /// Idle sessions to hold open for the memory measurement.
    #[arg(long, default_value_t = 50)]
    pub idle_sessions: usize,
    /// Run one section only.
    #[arg(long, value_enum)]
    pub only: Option<Section>,
}

/// A section of `oasis bench sandbox`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Section {
    /// New sessions, warm turns, the chart, idle memory.
    Latency,
    /// Hibernate and resume (issue 11), and the cost of `hibernate_every_turn`.
    Hibernation,
}

/// The CSV→PNG chart every chart benchmark runs.
pub const CHART_CODE: &str = r#"
import pandas as pd
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
df = pd.read_csv("/mnt/data/sales.csv")
ax = df.plot(x="month", y="revenue", kind="bar", title="Revenue")
plt.savefig("/mnt/data/chart.png")
plt.close("all")
print(len(df))
"#;

/// A small CSV for the chart.
pub fn sales_csv() -> String {
    let mut s = String::from("month,revenue\n");
    for (i, m) in [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .enumerate()
    {
        s.push_str(&format!("{m},{}\n", 1000 + i * 137 % 500));
    }
    s
}

fn pct(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn report(name: &str, samples: &mut [Duration]) -> Duration {
    let (p50, p90) = (pct(samples, 0.5), pct(samples, 0.9));
    println!(
        "{name:<44} p50 {:>9.3} ms   p90 {:>9.3} ms   (n={})",
        ms(p50),
        ms(p90),
        samples.len()
    );
    p50
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

pub fn sandbox(data_dir: &Path, args: SandboxBenchArgs) -> anyhow::Result<()> {
    let sandbox = Arc::new(Sandbox::open(data_dir, Progress::stderr())?);
    let image = sandbox.image(&args.image)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let scratch = tempfile::tempdir()?;
    let n = args.samples.max(3);
    println!(
        "oasis bench sandbox: image `{}` (warm = {:?})",
        image.image.name, image.image.warm
    );
    println!(
        "machine: {} cores, {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(
                |c| c.lines().find(|l| l.starts_with("model name")).map(|l| l
                    .split(':')
                    .nth(1)
                    .unwrap_or("")
                    .trim()
                    .to_string())
            )
            .unwrap_or_default()
    );
    if args.only != Some(Section::Hibernation) {
        latency(&rt, &sandbox, &image, scratch.path(), &args)?;
    }
    if args.only != Some(Section::Latency) {
        hibernation::run(&rt, &sandbox, &image, scratch.path(), n)?;
    }
    Ok(())
}

/// New sessions, warm turns, the chart against native CPython, idle sessions' memory.
fn latency(
    rt: &tokio::runtime::Runtime,
    sandbox: &Arc<Sandbox>,
    image: &Arc<LoadedImage>,
    scratch: &Path,
    args: &SandboxBenchArgs,
) -> anyhow::Result<()> {
    let opts = ExecOptions::default();
    let n = args.samples.max(3);
    let mk = |i: usize, name: &str| {
        let dir = scratch.join(format!("{name}-{i}"));
        Session::new(
            format!("{name}-{i}"),
            image.clone(),
            SessionDirs {
                data: dir.join("data"),
                tmp: dir.join("tmp"),
            },
        )
    };

    // 1. New session + print(1): through the session manager, with its warm pool topped up
    //    between samples (as between new threads on a server), and without a pool.
    let manager = SessionManager::new(
        sandbox.clone(),
        scratch.join("sessions"),
        ManagerConfig::default(),
    );
    let wait_warm = |m: &SessionManager| {
        rt.block_on(async {
            m.refill_warm();
            let until = Instant::now() + Duration::from_secs(10);
            while m.warm_count() < 2 && Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let mut s = vec![];
    for i in 0..n {
        wait_warm(&manager);
        let t = Instant::now();
        let r = rt.block_on(manager.execute(
            &format!("new-{i}"),
            None,
            "print(1)".into(),
            opts.clone(),
        ))?;
        s.push(t.elapsed());
        anyhow::ensure!(
            r.outcome == Outcome::Ok && r.stdout == "1\n",
            "print(1) failed: {r:?}"
        );
    }
    let new_p50 = report("new session, print(1), warm pool", &mut s);
    let mut s = vec![];
    for i in 0..n {
        let mut sess = mk(i, "cold");
        let t = Instant::now();
        let r = rt.block_on(sess.exec("print(1)", &opts))?;
        s.push(t.elapsed());
        anyhow::ensure!(r.outcome == Outcome::Ok, "print(1) failed: {r:?}");
    }
    report("new session, print(1), no pool (instantiate)", &mut s);

    // 2. Warm turn x += 1.
    let mut sess = mk(0, "warm");
    rt.block_on(sess.exec("x = 0", &opts))?;
    let mut s = vec![];
    for _ in 0..n * 10 {
        let t = Instant::now();
        let r = rt.block_on(sess.exec("x += 1", &opts))?;
        s.push(t.elapsed());
        anyhow::ensure!(r.outcome == Outcome::Ok, "x += 1 failed: {r:?}");
    }
    let warm_p50 = report("warm turn, x += 1", &mut s);

    // 3. CSV -> PNG chart in a new session (warm pool; the CSV is already in /mnt/data).
    let csv = sales_csv();
    let mut s = vec![];
    for i in 0..n.min(10) {
        let id = format!("chart-{i}");
        let data = manager.data_dir(&id)?;
        std::fs::create_dir_all(&data)?;
        std::fs::write(data.join("sales.csv"), &csv)?;
        wait_warm(&manager);
        let t = Instant::now();
        let r = rt.block_on(manager.execute(&id, None, CHART_CODE.into(), opts.clone()))?;
        s.push(t.elapsed());
        anyhow::ensure!(r.outcome == Outcome::Ok, "chart failed: {r:?}");
    }
    let chart_p50 = report("new session, CSV -> PNG chart, warm pool", &mut s);

    // 4. Native CPython, if it has pandas and matplotlib.
    let native = native_chart(&csv, n.min(10))?;
    match native {
        Some(mut s) => {
            let native_p50 = report("native python3, CSV -> PNG chart (process)", &mut s);
            println!(
                "{:<44} {:.2}x native (target <= 0.40x)",
                "chart ratio, Oasis / native",
                ms(chart_p50) / ms(native_p50)
            );
        }
        None => println!("native python3 with pandas+matplotlib not found; no ratio"),
    }

    // 5. Idle sessions with the stack loaded.
    let before = rss_bytes();
    let mut idle = vec![];
    for i in 0..args.idle_sessions {
        let mut sess = mk(i, "idle");
        rt.block_on(sess.exec("import pandas, matplotlib.pyplot; x = 1", &opts))?;
        idle.push(sess);
    }
    let after = rss_bytes();
    let per = (after.saturating_sub(before)) as f64 / args.idle_sessions.max(1) as f64;
    println!(
        "{:<44} {:>9.2} MiB each ({} sessions, RSS {:.0} -> {:.0} MiB; target <= 24 MiB)",
        "idle session, scientific stack loaded",
        per / (1 << 20) as f64,
        args.idle_sessions,
        before as f64 / (1 << 20) as f64,
        after as f64 / (1 << 20) as f64
    );
    println!(
        "targets: new session {:.3} ms (<= 3), warm turn {:.4} ms (<= 0.1)",
        ms(new_p50),
        ms(warm_p50)
    );
    drop(idle);
    Ok(())
}

fn native_chart(csv: &str, n: usize) -> anyhow::Result<Option<Vec<Duration>>> {
    let probe = Command::new("python3")
        .args(["-c", "import pandas, matplotlib"])
        .output();
    if !matches!(probe, Ok(ref o) if o.status.success()) {
        return Ok(None);
    }
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("sales.csv"), csv)?;
    let code = CHART_CODE.replace("/mnt/data", &dir.path().display().to_string());
    let mut s = vec![];
    for _ in 0..n {
        let t = Instant::now();
        let out = Command::new("python3")
            .args(["-c", &code])
            .env("MPLBACKEND", "Agg")
            .output()
            .context("running python3")?;
        s.push(t.elapsed());
        anyhow::ensure!(
            out.status.success(),
            "native chart failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(Some(s))
}
