//! The access log: one line per exchange, written by a thread of its own. The request
//! path only hands a finished `Entry` to a bounded queue; when the queue is full the line
//! is dropped and counted, never waited for. SIGUSR1 reopens the file (for logrotate).

use crate::config::access_log::{AccessLogFormat, AccessLogSettings, AccessLogTo};
use http::{HeaderValue, Method, Version};
use serde::Serialize;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Lines waiting for the writer; past it they are dropped.
const QUEUE: usize = 16 * 1024;

/// Bumped by SIGUSR1: every file log reopens its file before its next line.
static REOPEN: AtomicU64 = AtomicU64::new(0);

/// Asks every access log file to be reopened (after logrotate moved it).
pub fn reopen_files() {
    REOPEN.fetch_add(1, Ordering::Relaxed);
}

#[derive(Debug)]
pub struct AccessLog {
    pub settings: AccessLogSettings,
    queue: SyncSender<Entry>,
    dropped: Arc<AtomicU64>,
}

/// One exchange, as the request path saw it.
#[derive(Debug)]
pub struct Entry {
    pub start: SystemTime,
    pub duration: Duration,
    pub method: Method,
    pub authority: Option<HeaderValue>,
    pub target: String,
    pub protocol: Version,
    pub status: u16,
    /// Why the exchange ended: "completed", "retried_on_stable", "client_gone",
    /// "upstream_connect_failed", "upstream_timeout", "upstream_reset", ...
    pub end: &'static str,
    /// The request body's declared length, when it had one.
    pub bytes_in: Option<u64>,
    pub bytes_out: u64,
    /// From the request's start to the upstream's answer head.
    pub upstream: Option<Duration>,
    pub service: Option<Arc<str>>,
    pub version: Option<Arc<str>>,
    pub revision: u64,
    pub request_id: HeaderValue,
    pub trace_id: Option<String>,
    pub client: HeaderValue,
    pub user_agent: Option<HeaderValue>,
}

impl AccessLog {
    /// Starts the writer thread.
    pub fn start(settings: AccessLogSettings) -> Arc<AccessLog> {
        let (queue, lines) = sync_channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            settings: settings.clone(),
            dropped: dropped.clone(),
        };
        let spawned = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer.run(lines));
        if let Err(err) = spawned {
            tracing::error!(error = %err, "access log writer not started: lines are dropped");
        }
        Arc::new(AccessLog {
            settings,
            queue,
            dropped,
        })
    }

    /// Hands a line to the writer, or drops it (counted) when the queue is full.
    pub fn send(&self, entry: Entry) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.queue.try_send(entry)
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

struct Writer {
    settings: AccessLogSettings,
    dropped: Arc<AtomicU64>,
}

impl Writer {
    fn run(self, lines: Receiver<Entry>) {
        let mut generation = REOPEN.load(Ordering::Relaxed);
        let mut out = self.open();
        let mut line = Vec::with_capacity(512);
        while let Ok(first) = lines.recv() {
            let now = REOPEN.load(Ordering::Relaxed);
            if now != generation {
                generation = now;
                out = self.open();
            }
            let Some(sink) = out.as_mut() else {
                self.dropped
                    .fetch_add(1 + lines.try_iter().count() as u64, Ordering::Relaxed);
                continue;
            };
            // Everything queued meanwhile goes in the same write.
            for entry in std::iter::once(first).chain(lines.try_iter()) {
                format(&entry, self.settings.format, &mut line);
            }
            if let Err(err) = sink.write_all(&line).and_then(|()| sink.flush()) {
                tracing::error!(error = %err, "access log not written; reopened on SIGUSR1");
                out = None;
            }
            line.clear();
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
                    Ok(file) => Some(Box::new(std::io::BufWriter::new(file))),
                    Err(err) => {
                        tracing::error!(path = %path.display(), error = %err, "access log cannot be opened; lines are dropped until SIGUSR1");
                        None
                    }
                }
            }
        }
    }
}

/// The line's fields, in the order they are written.
#[derive(Serialize)]
struct Line<'a> {
    start: String,
    duration_ms: f64,
    method: &'a str,
    authority: Option<&'a str>,
    path: &'a str,
    protocol: &'static str,
    status: u16,
    end: &'static str,
    bytes_in: Option<u64>,
    bytes_out: u64,
    upstream_ms: Option<f64>,
    service: Option<&'a str>,
    version: Option<&'a str>,
    revision: u64,
    request_id: &'a str,
    trace_id: Option<&'a str>,
    client: &'a str,
    user_agent: Option<&'a str>,
}

fn format(entry: &Entry, format: AccessLogFormat, out: &mut Vec<u8>) {
    let line = Line {
        start: crate::clock::rfc3339_millis(crate::clock::unix_ms(entry.start)),
        duration_ms: millis(entry.duration),
        method: entry.method.as_str(),
        authority: entry.authority.as_ref().map(text),
        path: &entry.target,
        protocol: match entry.protocol {
            Version::HTTP_2 => "HTTP/2",
            Version::HTTP_10 => "HTTP/1.0",
            _ => "HTTP/1.1",
        },
        status: entry.status,
        end: entry.end,
        bytes_in: entry.bytes_in,
        bytes_out: entry.bytes_out,
        upstream_ms: entry.upstream.map(millis),
        service: entry.service.as_deref(),
        version: entry.version.as_deref(),
        revision: entry.revision,
        request_id: text(&entry.request_id),
        trace_id: entry.trace_id.as_deref(),
        client: text(&entry.client),
        user_agent: entry.user_agent.as_ref().map(text),
    };
    match format {
        AccessLogFormat::Json => {
            if serde_json::to_writer(&mut *out, &line).is_ok() {
                out.push(b'\n');
            }
        }
        AccessLogFormat::Text => {
            let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(&line) else {
                return;
            };
            let pairs: Vec<String> = fields
                .iter()
                .map(|(key, value)| match value {
                    serde_json::Value::String(s)
                        if !s.is_empty() && !s.contains([' ', '"', '=']) =>
                    {
                        format!("{key}={s}")
                    }
                    serde_json::Value::Null => format!("{key}=-"),
                    other => format!("{key}={other}"),
                })
                .collect();
            out.extend_from_slice(pairs.join(" ").as_bytes());
            out.push(b'\n');
        }
    }
}

fn text(value: &HeaderValue) -> &str {
    value.to_str().unwrap_or("(not text)")
}

fn millis(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1e6).round() / 1e3
}
