//! The access log: one line per exchange, written by a thread of its own. The request
//! path only hands a finished `Entry` to a bounded queue (an `Outlet`); when the queue is
//! full the line is dropped and counted, never waited for. SIGUSR1 reopens the file (for
//! logrotate); shutdown writes what is queued before the process ends.

use super::outlet::{Batches, Outlet};
use crate::config::access_log::{AccessLogFormat, AccessLogSettings, AccessLogTo};
use http::{HeaderValue, Method, Version};
use serde::Serialize;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

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
    lines: Outlet<Entry>,
}

/// One exchange, as the request path saw it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub start: SystemTime,
    pub duration: Duration,
    /// `None` for a connection refused before its request was read.
    pub method: Option<Method>,
    pub authority: Option<HeaderValue>,
    pub target: Option<String>,
    pub protocol: Option<Version>,
    /// The client came over TLS.
    pub tls: bool,
    pub status: u16,
    /// Why the exchange ended: "completed", "retried_on_stable", "client_gone",
    /// "refused_by_limit", "upstream_connect_failed", "upstream_timeout", ...
    pub end: &'static str,
    /// The request body's declared length, when it had one.
    pub bytes_in: Option<u64>,
    pub bytes_out: u64,
    /// From the request's start to the upstream's answer head.
    pub upstream: Option<Duration>,
    pub service: Option<Arc<str>>,
    pub version: Option<Arc<str>>,
    /// The upstream address that answered (or was last tried).
    pub endpoint: Option<SocketAddr>,
    pub revision: u64,
    pub request_id: HeaderValue,
    pub trace_id: Option<String>,
    pub client: HeaderValue,
    pub user_agent: Option<HeaderValue>,
}

impl Entry {
    /// A connection refused at `max_connections`, before any request was read.
    pub fn refused(client: HeaderValue, tls: bool, revision: u64) -> Entry {
        Entry {
            start: SystemTime::now(),
            duration: Duration::ZERO,
            method: None,
            authority: None,
            target: None,
            protocol: None,
            tls,
            status: 503,
            end: "refused_by_limit",
            bytes_in: None,
            bytes_out: 0,
            upstream: None,
            service: None,
            version: None,
            endpoint: None,
            revision,
            request_id: HeaderValue::from_static("-"),
            trace_id: None,
            client,
            user_agent: None,
        }
    }
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
    pub fn send(&self, entry: Entry) {
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
    fn run(self, mut lines: Batches<Entry>, dropped: &AtomicU64) {
        let mut generation = REOPEN.load(Ordering::Relaxed);
        let mut out = self.open();
        let mut batch = Vec::new();
        let mut text = Vec::with_capacity(512);
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
                format(&entry, self.settings.format, &mut text);
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
    method: Option<&'a str>,
    authority: Option<&'a str>,
    path: Option<&'a str>,
    protocol: Option<&'static str>,
    status: u16,
    end: &'static str,
    bytes_in: Option<u64>,
    bytes_out: u64,
    upstream_ms: Option<f64>,
    service: Option<&'a str>,
    version: Option<&'a str>,
    endpoint: Option<String>,
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
        method: entry.method.as_ref().map(Method::as_str),
        authority: entry.authority.as_ref().map(text),
        path: entry.target.as_deref(),
        protocol: entry.protocol.map(|protocol| match protocol {
            Version::HTTP_2 => "HTTP/2",
            Version::HTTP_10 => "HTTP/1.0",
            _ => "HTTP/1.1",
        }),
        status: entry.status,
        end: entry.end,
        bytes_in: entry.bytes_in,
        bytes_out: entry.bytes_out,
        upstream_ms: entry.upstream.map(millis),
        service: entry.service.as_deref(),
        version: entry.version.as_deref(),
        endpoint: entry.endpoint.map(|addr| addr.to_string()),
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
