//! The drawing primitives the charts share: the page's geometry, each version's colour,
//! readable axis numbers and escaped text.

use switchyard_testkit::load::NO_VERSION;

pub const WIDTH: f64 = 960.0;
pub const LEFT: f64 = 70.0;
pub const RIGHT: f64 = 30.0;
pub const PANEL: f64 = 140.0;
pub const GAP: f64 = 46.0;

pub fn color(version: &str) -> &'static str {
    match version {
        "blue" => "#1f6fd1",
        "green" => "#2a9d3a",
        "canary" => "#e8a317",
        NO_VERSION => "#888888",
        other => ["#9467bd", "#8c564b", "#17becf", "#e377c2"][other.len() % 4],
    }
}

/// The smallest 1, 2 or 5 times a power of ten at or above `value` (1 for nothing).
pub fn nice_ceiling(value: f64) -> f64 {
    if value <= 0.0 {
        return 1.0;
    }
    let power = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * power)
        .find(|&candidate| candidate >= value)
        .unwrap_or(10.0 * power)
}

pub fn short(value: f64) -> String {
    if value >= 10_000.0 {
        format!("{:.0}k", value / 1000.0)
    } else if value.fract() == 0.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_round_up_to_readable_numbers() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(3.2), 5.0);
        assert_eq!(nice_ceiling(1800.0), 2000.0);
        assert_eq!(nice_ceiling(20.0), 20.0);
        assert_eq!(nice_ceiling(0.031), 0.05);
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(escape("a<b & \"c\""), "a&lt;b &amp; &quot;c&quot;");
    }
}
