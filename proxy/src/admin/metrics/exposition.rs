//! The Prometheus text format: a family's `HELP` and `TYPE` lines, then its samples, label
//! values escaped once, here.

use std::fmt::{Display, Write};

#[derive(Clone, Copy)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

#[derive(Default)]
pub struct Exposition {
    text: String,
}

impl Exposition {
    /// Starts a family; its samples follow through the returned `Family`.
    pub fn family(&mut self, name: &'static str, kind: Kind, help: &str) -> Family<'_> {
        let kind = kind.as_str();
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
        Family {
            text: &mut self.text,
            name,
        }
    }

    /// A family with one unlabelled sample.
    pub fn single(&mut self, name: &'static str, kind: Kind, help: &str, value: impl Display) {
        self.family(name, kind, help).sample(&Labels::none(), value);
    }

    pub fn into_text(self) -> String {
        self.text
    }
}

pub struct Family<'a> {
    text: &'a mut String,
    name: &'static str,
}

impl Family<'_> {
    pub fn sample(&mut self, labels: &Labels, value: impl Display) {
        self.suffixed("", labels, value);
    }

    /// A sample named `NAME{suffix}`, as a histogram's `_bucket`, `_sum` and `_count`.
    pub fn suffixed(&mut self, suffix: &str, labels: &Labels, value: impl Display) {
        let name = self.name;
        let _ = if labels.0.is_empty() {
            writeln!(self.text, "{name}{suffix} {value}")
        } else {
            writeln!(self.text, "{name}{suffix}{{{}}} {value}", labels.0)
        };
    }
}

/// `key="value",...`, values escaped (backslash, quote, newline).
#[derive(Clone, Default)]
pub struct Labels(String);

impl Labels {
    pub fn none() -> Labels {
        Labels::default()
    }

    pub fn of(key: &str, value: &str) -> Labels {
        Labels::none().and(key, value)
    }

    pub fn and(mut self, key: &str, value: &str) -> Labels {
        if !self.0.is_empty() {
            self.0.push(',');
        }
        let escaped = value
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        let _ = write!(self.0, "{key}=\"{escaped}\"");
        self
    }

    pub fn version(service: &str, version: &str) -> Labels {
        Labels::of("service", service).and("version", version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_family_with_escaped_labels() {
        let mut out = Exposition::default();
        let mut family = out.family("x_total", Kind::Counter, "Things.");
        family.sample(&Labels::of("service", "a\"b\\c\nd"), 3);
        family.suffixed("_sum", &Labels::version("s", "v"), 1.5);
        out.single("y", Kind::Gauge, "One.", 0);
        assert_eq!(
            out.into_text(),
            "# HELP x_total Things.\n# TYPE x_total counter\n\
             x_total{service=\"a\\\"b\\\\c\\nd\"} 3\n\
             x_total_sum{service=\"s\",version=\"v\"} 1.5\n\
             # HELP y One.\n# TYPE y gauge\ny 0\n"
        );
    }
}
