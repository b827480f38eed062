//! Progress of long operator commands on stderr: one line redrawn in place
//! (at most ten times a second) when stderr is a terminal, nothing at all
//! when it is a pipe or a file, so scripts and logs stay clean.

use std::io::{IsTerminal as _, Write as _};
use std::time::{Duration, Instant};

/// Time between two redraws.
const EVERY: Duration = Duration::from_millis(100);

pub struct Progress {
    label: &'static str,
    total: Option<u64>,
    on: bool,
    drawn: Option<Instant>,
}

impl Progress {
    /// A progress line for `label`, out of `total` when it is known.
    pub fn new(label: &'static str, total: Option<u64>) -> Self {
        Progress {
            label,
            total,
            on: std::io::stderr().is_terminal(),
            drawn: None,
        }
    }

    /// Shows `done` (throttled; the first call draws at once).
    pub fn set(&mut self, done: u64) {
        if !self.on || self.drawn.is_some_and(|t| t.elapsed() < EVERY) {
            return;
        }
        self.drawn = Some(Instant::now());
        self.draw(done);
    }

    /// Shows `done` one last time and ends the line.
    pub fn finish(&mut self, done: u64) {
        if self.on {
            self.draw(done);
            eprintln!();
        }
    }

    fn draw(&self, done: u64) {
        let line = match self.total {
            Some(t) if t > 0 => format!("{}: {done}/{t} ({}%)", self.label, done.min(t) * 100 / t),
            _ => format!("{}: {done}", self.label),
        };
        let mut err = std::io::stderr().lock();
        // Carriage return, erase the line, draw.
        let _ = write!(err, "\r\x1b[2K{line}");
        let _ = err.flush();
    }
}
