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

    /// A spinner with elapsed time, for work whose length is unknown (compiling).
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
