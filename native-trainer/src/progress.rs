//! Progress of long stages (training, evaluation, benchmarks): a bar on a
//! terminal; in a log file (stderr not a terminal: `> log 2>&1`, nohup, a
//! scheduler) a plain line at a steady interval saying what, how far, how
//! fast and how long is left.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Seconds between plain progress lines (`ATOP_PROGRESS_SECONDS`, default 30).
fn interval() -> Duration {
    let seconds = std::env::var("ATOP_PROGRESS_SECONDS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .unwrap_or(30.0);
    Duration::from_secs_f64(seconds.min(86_400.0))
}

/// Whether stderr is a terminal (and so gets bars and colours).
pub fn on_terminal() -> bool {
    std::io::stderr().is_terminal()
}

pub enum Progress {
    Bar(ProgressBar),
    Lines(PlainLines),
}

pub struct PlainLines {
    name: String,
    total: u64,
    position: u64,
    /// Where this process started counting (for the rate).
    start_position: u64,
    message: String,
    started: Instant,
    last: Instant,
    every: Duration,
}

impl Progress {
    /// Progress of `total` units named `name`, `position` already done.
    pub fn new(name: &str, total: usize, position: usize) -> Self {
        Self::with_interval(name, total, position, on_terminal(), interval())
    }

    fn with_interval(
        name: &str,
        total: usize,
        position: usize,
        terminal: bool,
        every: Duration,
    ) -> Self {
        if terminal {
            let bar = ProgressBar::new(total as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>16} [{bar:30}] {pos}/{len} {per_sec} eta {eta} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_prefix(name.to_string());
            bar.set_position(position as u64);
            return Self::Bar(bar);
        }
        let now = Instant::now();
        Self::Lines(PlainLines {
            name: name.to_string(),
            total: total as u64,
            position: position as u64,
            start_position: position as u64,
            message: String::new(),
            started: now,
            last: now,
            every,
        })
    }

    pub fn inc(&mut self, n: u64) {
        match self {
            Self::Bar(b) => b.inc(n),
            Self::Lines(l) => {
                l.position += n;
                if l.last.elapsed() >= l.every {
                    l.last = Instant::now();
                    eprintln!("{}", l.line());
                }
            }
        }
    }

    pub fn set_message(&mut self, message: impl Into<String>) {
        match self {
            Self::Bar(b) => b.set_message(message.into()),
            Self::Lines(l) => l.message = message.into(),
        }
    }

    /// A line above the bar (or in the log).
    pub fn println(&self, line: impl AsRef<str>) {
        match self {
            Self::Bar(b) => b.println(line.as_ref()),
            Self::Lines(_) => eprintln!("{}", line.as_ref()),
        }
    }

    pub fn finish(&self) {
        match self {
            Self::Bar(b) => b.finish_and_clear(),
            Self::Lines(l) if l.position > l.start_position => eprintln!("{}", l.line()),
            Self::Lines(_) => {}
        }
    }

    /// Stops drawing, leaving the bar where it stood (a failed stage).
    pub fn abandon(&self) {
        if let Self::Bar(b) = self {
            b.abandon();
        }
    }
}

impl PlainLines {
    /// "eval: 120/400 (30%), 2.1/s, 57 s elapsed, about 2 min 13 s left; pgd ...".
    fn line(&self) -> String {
        let elapsed = self.started.elapsed().as_secs_f64();
        let done = self.position.saturating_sub(self.start_position) as f64;
        let rate = if elapsed > 0.0 { done / elapsed } else { 0.0 };
        let left = self.total.saturating_sub(self.position) as f64;
        let eta = match rate > 0.0 {
            true => format!("about {} left", human(left / rate)),
            false => "time left unknown".into(),
        };
        let percent = 100.0 * self.position as f64 / self.total.max(1) as f64;
        let mut line = format!(
            "{}: {}/{} ({percent:.0}%), {rate:.2}/s, {} elapsed, {eta}",
            self.name,
            self.position,
            self.total,
            human(elapsed)
        );
        if !self.message.is_empty() {
            line.push_str("; ");
            line.push_str(&self.message);
        }
        line
    }
}

/// Seconds as "42 s", "3 min 5 s" or "2 h 7 min".
fn human(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_say_what_how_far_how_fast_and_what_is_left() {
        let mut p = Progress::with_interval("eval", 400, 100, false, Duration::from_secs(3600));
        p.inc(20);
        p.set_message("pgd eps 0.1");
        let Progress::Lines(l) = &mut p else {
            panic!("a terminal bar off a terminal")
        };
        l.started = Instant::now() - Duration::from_secs(10);
        let line = l.line();
        // 20 units in 10 s: 2/s, 280 left: 140 s.
        assert!(
            line.starts_with(
                "eval: 120/400 (30%), 2.00/s, 10 s elapsed, about 2 min 20 s left; pgd eps 0.1"
            ),
            "{line}"
        );
        assert!(!line.contains('\u{1b}'), "{line}");
    }

    #[test]
    fn durations_read_as_a_person_says_them() {
        assert_eq!(human(42.4), "42 s");
        assert_eq!(human(185.0), "3 min 5 s");
        assert_eq!(human(7620.0), "2 h 7 min");
    }
}
