//! The access log: one line per exchange, written by a thread of its own. The request
//! path only hands a finished `Entry` to a bounded queue (an `Outlet`); when the queue is
//! full the line is dropped and counted, never waited for. SIGUSR1 reopens the file (for
//! logrotate); shutdown writes what is queued before the process ends.

use super::access_line_format::LineWriter;
use super::exchange::Entry;
use super::outlet::{Batches, Outlet};
use crate::config::access_log::{AccessLogSettings, AccessLogTo};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Lines waiting for the writer; past it they are dropped.
const QUEUE: usize = 16 * 1024;
/// The writer writes what is queued this often (a line is on disk within about this).
const WRITE_EVERY: Duration = Duration::from_millis(50);

/// Bumped by SIGUSR1: every file log reopens its file before its next line.
static REOPEN: AtomicU64 = AtomicU64::new(0);

/// Asks every access log file to be reopened (after logrotate moved it).
pub fn reopen_files() {
    REOPEN.fetch_add(1, Ordering::Relaxed);
}

#[derive(Debug)]
pub struct AccessLog {
    pub settings: AccessLogSettings,
    lines: Outlet<Box<Entry>>,
}

impl AccessLog {
    /// Starts the writer thread.
    pub fn start(settings: AccessLogSettings) -> Arc<AccessLog> {
        let writer = Writer {
            settings: settings.clone(),
        };
        let lines = Outlet::start("access-log", QUEUE, move |lines, dropped| {
            writer.run(lines, &dropped)
        });
        Arc::new(AccessLog { settings, lines })
    }

    /// Hands a line to the writer, or drops it (counted) when the queue is full.
    pub fn send(&self, entry: Box<Entry>) {
        self.lines.send(entry);
    }

    pub fn dropped(&self) -> u64 {
        self.lines.dropped()
    }

    /// Writes what is queued and stops the writer (at shutdown). Blocks.
    pub fn close(&self) {
        self.lines.close();
    }
}

struct Writer {
    settings: AccessLogSettings,
}

impl Writer {
    fn run(self, mut lines: Batches<Box<Entry>>, dropped: &AtomicU64) {
        let mut generation = REOPEN.load(Ordering::Relaxed);
        let mut out = self.open();
        let mut batch = Vec::new();
        let mut text = Vec::with_capacity(64 * 1024);
        let mut line = LineWriter::default();
        // Everything queued meanwhile goes in the same write.
        while lines.next(&mut batch, QUEUE, WRITE_EVERY) {
            let now = REOPEN.load(Ordering::Relaxed);
            if now != generation {
                generation = now;
                out = self.open();
            }
            let Some(sink) = out.as_mut() else {
                dropped.fetch_add(batch.len() as u64, Ordering::Relaxed);
                batch.clear();
                continue;
            };
            for entry in batch.drain(..) {
                line.write(&entry, self.settings.format, &mut text);
            }
            if let Err(err) = sink.write_all(&text).and_then(|()| sink.flush()) {
                tracing::error!(error = %err, "access log not written; reopened on SIGUSR1");
                out = None;
            }
            text.clear();
        }
    }

    fn open(&self) -> Option<Box<dyn Write + Send>> {
        match &self.settings.to {
            AccessLogTo::Stdout => Some(Box::new(std::io::stdout())),
            AccessLogTo::File(path) => {
                let opened = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path);
                match opened {
                    // Each batch is one `write_all` already: no buffer between.
                    Ok(file) => Some(Box::new(file)),
                    Err(err) => {
                        tracing::error!(path = %path.display(), error = %err, "access log cannot be opened; lines are dropped until SIGUSR1");
                        None
                    }
                }
            }
        }
    }
}
