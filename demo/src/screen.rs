//! Drawing the demo: a live screen redrawn in place on a terminal, plain appended lines
//! anywhere else (CI logs, pipes), so the output always reads top to bottom.

use super::timeline::{percent, Event, Story};
use super::view::{Row, View};
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;

/// Lines of "what happened" kept on the live screen.
const STORY_LINES: usize = 8;
/// An error rate above this is drawn in red.
const ALARM: f64 = 0.005;

pub struct Screen {
    live: bool,
    proxy: SocketAddr,
}

impl Screen {
    /// Live when stdout is a terminal that understands cursor movement.
    pub fn new(proxy: SocketAddr) -> Screen {
        let dumb = std::env::var("TERM").is_ok_and(|term| term == "dumb");
        Screen {
            live: std::io::stdout().is_terminal() && !dumb,
            proxy,
        }
    }

    pub fn show(&self, view: &View, story: &Story) {
        let text = if self.live {
            format!("\x1b[H\x1b[2J{}", frame(view, story, self.proxy, true))
        } else {
            line(view)
        };
        print_flushed(&text);
    }

    /// An event as it happens; the live screen shows it with the next frame instead.
    pub fn event(&self, event: &Event) {
        if !self.live {
            print_flushed(&format!("[{:5.1}s] {}\n", event.at_secs, event.text));
        }
    }
}

fn print_flushed(text: &str) {
    let mut out = std::io::stdout().lock();
    // A closed stdout (say, piped into `head`) must not stop the demo.
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// The full live screen.
pub fn frame(view: &View, story: &Story, proxy: SocketAddr, color: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "switchyard demo   {:>2}s of {}s   revision {}   try: curl -i http://{proxy}/\n",
        view.elapsed.as_secs(),
        view.duration.as_secs(),
        view.revision,
    );
    let _ = writeln!(
        out,
        "{:<10}{:>8} | {:<46}| client view, last 1 s",
        "", "routing", "proxy telemetry, last 2 s"
    );
    let _ = writeln!(
        out,
        "{:<10}{:>8} | {:>8} {:>8} {:>9} {:>9} {:>5} | {:>6} {:>7} {:>7}",
        "version", "weight", "req/s", "errors", "p50", "p99", "saved", "req/s", "errors", "share"
    );
    for row in &view.rows {
        out.push_str(&table_row(row, color));
    }
    out.push_str("\nWhat happened\n");
    let skip = story.events.len().saturating_sub(STORY_LINES);
    for event in &story.events[skip..] {
        let _ = writeln!(out, "  {:5.1}s  {}", event.at_secs, event.text);
    }
    out
}

fn table_row(row: &Row, color: bool) -> String {
    let errors = format!("{:>7.2}%", row.proxy_error_rate * 100.0);
    let errors = if color && row.proxy_error_rate > ALARM {
        format!("\x1b[31m{errors}\x1b[0m")
    } else {
        errors
    };
    format!(
        "{:<10}{:>8} | {:>8.1} {} {:>6.1} ms {:>6.1} ms {:>5} | {:>6} {:>7} {:>7}\n",
        row.name,
        percent(row.weight),
        row.proxy_rps,
        errors,
        row.p50_ms,
        row.p99_ms,
        row.saved,
        row.client_rps,
        row.client_errors,
        percent(row.client_share),
    )
}

/// One appended line per second, for output that is not a terminal.
pub fn line(view: &View) -> String {
    let mut out = format!("[{:3}s] rev {}", view.elapsed.as_secs(), view.revision);
    for row in &view.rows {
        let _ = write!(
            out,
            " | {} w={} {:.0}/s err {:.1}% saved {} p50 {:.1}ms p99 {:.1}ms client errors {}",
            row.name,
            percent(row.weight),
            row.proxy_rps,
            row.proxy_error_rate * 100.0,
            row.saved,
            row.p50_ms,
            row.p99_ms,
            row.client_errors,
        );
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn view() -> View {
        View {
            elapsed: Duration::from_secs(9),
            duration: Duration::from_secs(20),
            revision: 1,
            rows: vec![
                Row {
                    name: "blue".into(),
                    weight: 0.9,
                    proxy_rps: 270.0,
                    client_rps: 271,
                    client_share: 0.9,
                    ..Row::default()
                },
                Row {
                    name: "canary".into(),
                    weight: 0.1,
                    proxy_rps: 30.0,
                    proxy_error_rate: 0.3,
                    client_rps: 29,
                    client_errors: 9,
                    client_share: 0.1,
                    ..Row::default()
                },
            ],
        }
    }

    #[test]
    fn the_plain_line_names_every_version_once() {
        let text = line(&view());
        assert_eq!(text.lines().count(), 1);
        assert!(text.contains("blue w=90% 270/s"));
        assert!(text.contains("canary w=10% 30/s err 30.0%"));
    }

    #[test]
    fn the_frame_marks_a_failing_version_in_red_only_with_color() {
        let mut story = Story::default();
        story.tell(Duration::from_secs(8), "canary turns bad".into());
        let addr = SocketAddr::from(([127, 0, 0, 1], 8080));
        let colored = frame(&view(), &story, addr, true);
        assert!(colored.contains("\x1b[31m  30.00%\x1b[0m"));
        assert!(colored.contains("  8.0s  canary turns bad"));
        let plain = frame(&view(), &story, addr, false);
        assert!(!plain.contains('\x1b'));
    }
}
