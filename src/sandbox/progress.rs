//! Progress reporting for slow one-time work (download, compile), shown on stderr.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Where progress goes: a terminal-style display on stderr, or nowhere but the log.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    visible: bool,
}

impl Progress {
    /// Progress lines and bars on stderr.
    pub fn stderr() -> Progress {
        Progress { visible: true }
    }

    /// Only tracing log lines.
    pub fn hidden() -> Progress {
        Progress { visible: false }
    }

    /// Whether anything is shown on stderr.
    pub fn is_visible(&self) -> bool {
        self.visible
    }

    /// A line of progress: on stderr when visible, else in the log (once, not both).
    pub fn message(&self, msg: &str) {
        if self.visible {
            eprintln!("oasis: {msg}");
        } else {
            tracing::info!("{msg}");
        }
    }

    /// A byte-counting bar.
    pub fn bar(&self, len: u64, msg: &str) -> ProgressBar {
        let bar = if self.visible {
            ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template("oasis: {msg:24} [{bar:30}] {bytes}/{total_bytes}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_message(msg.to_string());
        bar
    }

    /// A phase of one-time work whose length is known only roughly (`expected`, as measured
    /// on 2 cores, scaled to this machine's cores): on a terminal a bar that fills with time
    /// and shows an ETA (it stops at 99 % if the work runs long); in a log a plain line when it
    /// starts and another, with its time, when it ends.
    pub fn phase(&self, msg: &str, expected_on_2_cores: Duration) -> Phase {
        self.message(msg);
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get()) as u32;
        let expected = (expected_on_2_cores * 2 / cores.max(1)).max(Duration::from_secs(1));
        let bar = if self.visible {
            let bar = ProgressBar::with_draw_target(
                Some(expected.as_millis() as u64),
                ProgressDrawTarget::stderr(),
            );
            bar.set_style(
                ProgressStyle::with_template(
                    "oasis: {msg} [{bar:30}] {elapsed} elapsed, about {eta} left",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_message(short(msg));
            bar
        } else {
            ProgressBar::hidden()
        };
        let ticker = {
            let (bar, len) = (bar.clone(), expected.as_millis() as u64);
            let started = std::time::Instant::now();
            let (stop, stopped) = std::sync::mpsc::channel::<()>();
            std::thread::Builder::new()
                .name("oasis-progress".into())
                .spawn(move || {
                    while stopped.recv_timeout(Duration::from_millis(200)).is_err() {
                        let done = started.elapsed().as_millis() as u64;
                        bar.set_position(done.min(len * 99 / 100));
                    }
                })
                .ok()
                .map(|_| stop)
        };
        Phase {
            progress: *self,
            bar,
            msg: short(msg),
            started: std::time::Instant::now(),
            ticker,
        }
    }

    /// A spinner with elapsed time, for work whose length is unknown.
    pub fn spinner(&self, msg: &str) -> ProgressBar {
        self.message(msg);
        if !self.visible {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("oasis: {spinner} {msg} ({elapsed})")
                .expect("valid template"),
        );
        bar.set_message(msg.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    }
}

/// The part of a progress message before its first parenthesis, for a bar's label.
fn short(msg: &str) -> String {
    msg.split(" (").next().unwrap_or(msg).to_string()
}

/// A phase under way (see [`Progress::phase`]); ends with [`Phase::finish`] or when dropped.
pub struct Phase {
    progress: Progress,
    bar: ProgressBar,
    msg: String,
    started: std::time::Instant,
    ticker: Option<std::sync::mpsc::Sender<()>>,
}

impl Phase {
    /// The phase is over: the bar goes, a line says how long it took.
    pub fn finish(mut self) {
        self.end(true);
    }

    fn end(&mut self, ok: bool) {
        let Some(stop) = self.ticker.take() else {
            return;
        };
        let _ = stop.send(());
        self.bar.finish_and_clear();
        let took = self.started.elapsed().as_secs_f64();
        if ok {
            self.progress
                .message(&format!("{}: done in {took:.0} s", self.msg));
        }
    }
}

impl Drop for Phase {
    fn drop(&mut self) {
        self.end(false);
    }
}
