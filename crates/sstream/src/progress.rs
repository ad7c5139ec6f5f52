//! Download progress: a bar with bytes, rate and ETA on a terminal, plain
//! periodic lines otherwise.

use crate::plan_view::{PlanFormat, render};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use simplestreams::plan::Plan;
use simplestreams::source::ProgressFn;
use simplestreams::units::human_size as human;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A progress display for one run.
pub struct Progress {
    bar: Option<ProgressBar>,
    done: Arc<AtomicI64>,
    ticker: Option<std::thread::JoinHandle<()>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Progress {
    /// A display for `total` bytes; `enabled` false shows nothing.
    pub fn new(total: u64, enabled: bool) -> Progress {
        let done = Arc::new(AtomicI64::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        if !enabled {
            return Progress {
                bar: None,
                done,
                ticker: None,
                stop,
            };
        }
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{bar:40.cyan/blue} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(200));
            return Progress {
                bar: Some(bar),
                done,
                ticker: None,
                stop,
            };
        }
        let (d, s) = (done.clone(), stop.clone());
        let ticker = std::thread::spawn(move || {
            let start = Instant::now();
            let mut last = Instant::now();
            while !s.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                if last.elapsed() >= Duration::from_secs(5) {
                    last = Instant::now();
                    eprintln!(
                        "{}",
                        plain_line(
                            d.load(Ordering::Relaxed).max(0) as u64,
                            total,
                            start.elapsed()
                        )
                    );
                }
            }
        });
        Progress {
            bar: None,
            done,
            ticker: Some(ticker),
            stop,
        }
    }

    /// The callback to hand to the executor.
    pub fn callback(&self) -> ProgressFn {
        let done = self.done.clone();
        let bar = self.bar.clone();
        Arc::new(move |delta: i64| {
            let now = done.fetch_add(delta, Ordering::Relaxed) + delta;
            if let Some(bar) = &bar {
                bar.set_position(now.max(0) as u64);
            }
        })
    }

    /// Stops the display.
    pub fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
    }
}

/// One plain progress line: percentage, bytes, rate and ETA.
pub fn plain_line(done: u64, total: u64, elapsed: Duration) -> String {
    let pct = done.saturating_mul(100).checked_div(total).unwrap_or(100);
    let rate = done as f64 / elapsed.as_secs_f64().max(0.001);
    let eta = if rate > 0.0 && total > done {
        format!("{:.0}s", (total - done) as f64 / rate)
    } else {
        "-".into()
    };
    format!(
        "progress: {pct:>3}% {} of {} at {}/s, ETA {eta}",
        human(done),
        human(total),
        human(rate as u64)
    )
}

/// What a mirror run shows on stderr: the plan (when `chatty`), then a
/// progress display (when `bar`).
pub struct RunDisplay {
    bar: bool,
    chatty: bool,
    format: PlanFormat,
    progress: Mutex<Option<Progress>>,
    callback: OnceLock<ProgressFn>,
}

impl RunDisplay {
    /// A display; `bar` shows progress, `chatty` prints the plan (in the
    /// reference's lines; see [`RunDisplay::plan_format`]).
    pub fn new(bar: bool, chatty: bool) -> RunDisplay {
        RunDisplay {
            bar,
            chatty,
            format: PlanFormat::Reference,
            progress: Mutex::new(None),
            callback: OnceLock::new(),
        }
    }

    /// The display, printing the plan in `format`.
    pub fn plan_format(self, format: PlanFormat) -> RunDisplay {
        RunDisplay { format, ..self }
    }

    /// Stops the progress display.
    pub fn finish(&self) {
        let taken = self.progress.lock().ok().and_then(|mut p| p.take());
        if let Some(p) = taken {
            p.finish();
        }
    }
}

impl simplestreams::mirror::Progress for RunDisplay {
    fn planned(&self, plan: &Plan) {
        if self.chatty {
            for line in render(plan, self.format) {
                eprintln!("{line}");
            }
        }
        let progress = Progress::new(plan.download_bytes(), self.bar);
        let _ = self.callback.set(progress.callback());
        if let Ok(mut slot) = self.progress.lock() {
            *slot = Some(progress);
        }
    }

    fn transferred(&self, bytes: i64) {
        if let Some(callback) = self.callback.get() {
            callback(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines() {
        let l = plain_line(
            512 * 1024 * 1024,
            1024 * 1024 * 1024,
            Duration::from_secs(2),
        );
        assert_eq!(
            l,
            "progress:  50% 512.0 MiB of 1.0 GiB at 256.0 MiB/s, ETA 2s"
        );
        assert_eq!(human(10), "10 B");
    }
}
