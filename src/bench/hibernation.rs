//! The hibernation section of `oasis bench sandbox` (issue 11): for a `print` session, a
//! pandas session and a chart session, how long hibernating and resuming take (and where the
//! time goes), what is stored, how many states 50 GB of disk holds, and what
//! `hibernate_every_turn` adds to each call.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::sandbox::{
    ExecOptions, HibernateTimings, LoadedImage, ManagerConfig, Outcome, ResumeTimings, Sandbox,
    Session, SessionDirs, SessionManager,
};

/// A kind of session: its label, the cell that makes it, and a cell that checks its state
/// came back (and what that cell's last expression must be).
struct Kind {
    label: &'static str,
    setup: &'static str,
    check: &'static str,
    expect: &'static str,
}

const KINDS: [Kind; 3] = [
    Kind {
        label: "(a) print(1)",
        setup: "print(1)",
        check: "'ok'",
        expect: "'ok'",
    },
    Kind {
        label: "(b) pandas, 10k-row DataFrame",
        setup: "import pandas as pd, numpy as np; \
                df = pd.DataFrame({'x': np.arange(10_000), 'y': np.random.rand(10_000)})",
        check: "(len(df), int(df.x.sum()))",
        expect: "(10000, 49995000)",
    },
    Kind {
        label: "(c) matplotlib line chart",
        setup: "import matplotlib.pyplot as plt, numpy as np\n\
                fig, ax = plt.subplots()\n\
                ax.plot(np.arange(100), np.random.rand(100))",
        check: "(len(ax.lines), len(ax.lines[0].get_ydata()))",
        expect: "(1, 100)",
    },
];

/// The cell timed on a live and on a just-resumed interpreter.
const PROBE: &str = "z = 1";

/// 50 GB of disk, in bytes.
const DISK: f64 = 50e9;

fn pct(samples: &[Duration], p: f64) -> Duration {
    let mut s = samples.to_vec();
    s.sort();
    s[((s.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

fn line(name: &str, samples: &[Duration]) {
    println!(
        "  {name:<40} p50 {:>8.2} ms   p99 {:>8.2} ms",
        ms(pct(samples, 0.5)),
        ms(pct(samples, 0.99)),
    );
}

/// What one kind measured.
struct Measured {
    hibernate_p50: Duration,
    resume_p50: Duration,
    bytes: u64,
}

/// Run the section: `n` repetitions per kind.
pub fn run(
    rt: &tokio::runtime::Runtime,
    sandbox: &Arc<Sandbox>,
    image: &Arc<LoadedImage>,
    scratch: &Path,
    n: usize,
) -> anyhow::Result<()> {
    let opts = ExecOptions::default();
    println!();
    println!(
        "hibernation (issue 11), {n} repetitions per kind; p99 of {n} samples is their maximum or near it"
    );
    // The image's fresh memory, which states are diffed against, is made once per process.
    let t = Instant::now();
    let base = rt.block_on(image.base_memory())?;
    println!(
        "  image's fresh memory (made once per process): {:.1} MiB in {:.0} ms; pagemap {}",
        mib(base.bytes.len() as u64),
        ms(t.elapsed()),
        if base.pagemap {
            "trusted (untouched pages are not compared)"
        } else {
            "not trusted (every chunk is compared)"
        }
    );
    let mut measured = vec![];
    for (k, kind) in KINDS.iter().enumerate() {
        let dir = scratch.join(format!("hibernate-{k}"));
        let mut sess = Session::new(
            format!("hibernate-{k}"),
            image.clone(),
            SessionDirs {
                data: dir.join("data"),
                tmp: dir.join("tmp"),
            },
        );
        let r = rt.block_on(sess.exec(kind.setup, &opts))?;
        anyhow::ensure!(r.outcome == Outcome::Ok, "{} failed: {r:?}", kind.label);
        for _ in 0..3 {
            rt.block_on(sess.exec(PROBE, &opts))?;
        }
        let (mut live, mut resumed, mut hib, mut res) = (vec![], vec![], vec![], vec![]);
        let (mut hparts, mut rparts) = (vec![], vec![]);
        let mut last = None;
        for _ in 0..n {
            let t = Instant::now();
            let r = rt.block_on(sess.exec(PROBE, &opts))?;
            live.push(t.elapsed());
            anyhow::ensure!(r.outcome == Outcome::Ok, "probe failed: {r:?}");

            let t = Instant::now();
            let h = rt
                .block_on(sess.hibernate(false))?
                .ok_or_else(|| anyhow::anyhow!("{}: nothing was hibernated", kind.label))?;
            hib.push(t.elapsed());
            hparts.push(h.timings);
            anyhow::ensure!(sess.is_hibernated(), "{}: not hibernated", kind.label);

            let t = Instant::now();
            let r = rt.block_on(sess.exec(PROBE, &opts))?;
            resumed.push(t.elapsed());
            anyhow::ensure!(
                r.outcome == Outcome::Ok && r.notice.is_none() && !r.interpreter_reset,
                "{}: the resumed probe failed: {r:?}",
                kind.label
            );
            let timings = sess
                .take_last_resume()
                .ok_or_else(|| anyhow::anyhow!("{}: no resume timing", kind.label))?;
            res.push(timings.total);
            rparts.push(timings);
            last = Some(h);
        }
        // As with `hibernate_every_turn`: the state written after a call, the interpreter
        // kept; then its eviction, which finds the file current and writes nothing.
        let (mut kept, mut kparts, mut evicted) = (vec![], vec![], vec![]);
        for _ in 0..n {
            rt.block_on(sess.exec(PROBE, &opts))?;
            let t = Instant::now();
            let h = rt
                .block_on(sess.hibernate(true))?
                .ok_or_else(|| anyhow::anyhow!("{}: nothing was hibernated", kind.label))?;
            kept.push(t.elapsed());
            kparts.push(h.timings);
            let t = Instant::now();
            let h = rt.block_on(sess.hibernate(false))?;
            evicted.push(t.elapsed());
            anyhow::ensure!(
                h.is_some_and(|h| h.timings.compress.is_zero()),
                "{}: the eviction wrote the state again",
                kind.label
            );
        }
        let r = rt.block_on(sess.exec(kind.check, &opts))?;
        anyhow::ensure!(
            r.outcome == Outcome::Ok && r.result.as_deref() == Some(kind.expect),
            "{}: the state did not come back: {r:?}",
            kind.label
        );
        let h = last.expect("n >= 1");
        // What the file takes on disk (whole blocks).
        let on_disk = std::fs::metadata(sess.state_path())
            .map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512)
            .unwrap_or(h.bytes);

        println!("{}", kind.label);
        println!(
            "  memory {:.1} MiB, {} of {} chunks differ ({:.1} MiB), stored {:.2} MiB ({} bytes; {:.2} MiB on disk); {:.0} fit on 50 GB",
            mib(h.memory),
            h.chunks,
            h.memory / 4096,
            mib(h.chunks as u64 * 4096),
            mib(h.bytes),
            h.bytes,
            mib(on_disk),
            DISK / on_disk.max(1) as f64
        );
        line("hibernate (Session::hibernate)", &hib);
        let part = |f: fn(&HibernateTimings) -> Duration| -> Vec<Duration> {
            hparts.iter().map(f).collect()
        };
        line("  diff (pagemap, compare)", &part(|t| t.diff));
        line("  compress (XOR, zstd)", &part(|t| t.compress));
        line("  digest (SHA-256)", &part(|t| t.digest));
        line("  write (atomic, synced)", &part(|t| t.write));
        line("  release (drop the interpreter)", &part(|t| t.release));
        line("hibernate, interpreter kept (every turn)", &kept);
        let p50 = |f: fn(&HibernateTimings) -> Duration| -> f64 {
            ms(pct(&kparts.iter().map(f).collect::<Vec<_>>(), 0.5))
        };
        println!(
            "    p50s: diff {:.2}, compress {:.2}, digest {:.2}, write {:.2} ms",
            p50(|t| t.diff),
            p50(|t| t.compress),
            p50(|t| t.digest),
            p50(|t| t.write)
        );
        line("eviction after it (nothing written)", &evicted);
        line("resume (state file -> ready interpreter)", &res);
        let part =
            |f: fn(&ResumeTimings) -> Duration| -> Vec<Duration> { rparts.iter().map(f).collect() };
        line("  read", &part(|t| t.read));
        line("  check (digest, header)", &part(|t| t.check));
        line("  instantiate", &part(|t| t.instantiate));
        line(
            "  apply (grow, decompress, XOR, globals)",
            &part(|t| t.apply),
        );
        line(&format!("`{PROBE}` on the live interpreter"), &live);
        line(&format!("`{PROBE}` on the hibernated session"), &resumed);
        println!(
            "  {:<40} p50 {:>8.2} ms",
            "difference of the two p50s",
            ms(pct(&resumed, 0.5).saturating_sub(pct(&live, 0.5)))
        );
        measured.push(Measured {
            hibernate_p50: pct(&hib, 0.5),
            resume_p50: pct(&res, 0.5),
            bytes: h.bytes,
        });
    }

    // The cost of `hibernate_every_turn`: the same probe through two managers, one writing
    // each session's state after every call, interleaved call by call.
    println!(
        "hibernate_every_turn: `{PROBE}` through the session manager (warm pool off), off vs on"
    );
    let mk = |every_turn: bool, name: &str| {
        SessionManager::new(
            sandbox.clone(),
            scratch.join(name),
            ManagerConfig {
                warm_pool: 0,
                hibernate_every_turn: every_turn,
                ..ManagerConfig::default()
            },
        )
    };
    let (off, on) = (mk(false, "every-off"), mk(true, "every-on"));
    for (k, kind) in KINDS.iter().enumerate() {
        let id = format!("kind-{k}");
        let mut s = [vec![], vec![]];
        for (m, manager) in [&off, &on].into_iter().enumerate() {
            let r = rt.block_on(manager.execute(&id, None, kind.setup.into(), opts.clone()))?;
            anyhow::ensure!(r.outcome == Outcome::Ok, "{} failed: {r:?}", kind.label);
            for _ in 0..3 {
                rt.block_on(manager.execute(&id, None, PROBE.into(), opts.clone()))?;
            }
            s[m].clear();
        }
        for _ in 0..n {
            for (m, manager) in [&off, &on].into_iter().enumerate() {
                let t = Instant::now();
                let r = rt.block_on(manager.execute(&id, None, PROBE.into(), opts.clone()))?;
                s[m].push(t.elapsed());
                anyhow::ensure!(r.outcome == Outcome::Ok, "probe failed: {r:?}");
            }
        }
        let info = on
            .info(&id)?
            .ok_or_else(|| anyhow::anyhow!("{}: the session has no folder", kind.label))?;
        anyhow::ensure!(
            info.live && info.state_bytes > 0,
            "{}: every turn wrote no state: {info:?}",
            kind.label
        );
        println!("{}", kind.label);
        line("hibernate_every_turn = false", &s[0]);
        line("hibernate_every_turn = true", &s[1]);
        println!(
            "  {:<40} p50 {:>8.2} ms a call",
            "extra latency",
            ms(pct(&s[1], 0.5).saturating_sub(pct(&s[0], 0.5)))
        );
    }

    let b = &measured[1];
    println!(
        "targets for (b): resume {:.2} ms p50 (<= 10), hibernate {:.2} ms p50 (<= 20), stored {:.2} MB (<= 8)",
        ms(b.resume_p50),
        ms(b.hibernate_p50),
        b.bytes as f64 / 1e6
    );
    Ok(())
}
