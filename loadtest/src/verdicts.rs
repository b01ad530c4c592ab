//! `loadtest verdicts`: how fast the guard's judge reaches a verdict, measured with its
//! own seeded simulator (`switchyard_testkit::simulate`) and the default guard settings
//! over many seeds. 1,000 requests/s with the canary at 10%, 1% errors and 20 ms median
//! latency on both sides; a bad canary turns bad 20 s in, so the judge has a healthy
//! baseline first, and is timed from that moment.

use std::fmt::Write as _;
use std::time::Duration;
use switchyard::config::GuardSettings;
use switchyard::guard::judge::Rule;
use switchyard_testkit::simulate::{run, RunResult, Scenario};

/// When a bad canary turns bad.
const ONSET: Duration = Duration::from_secs(20);
/// How long after the onset (or, for a healthy canary, after the start) a run lasts.
const HORIZON: Duration = Duration::from_secs(60);

/// One kind of canary and the verdict it should get.
pub struct Case {
    pub name: &'static str,
    pub scenario: Scenario,
    /// True when the right verdict is "bad".
    pub bad: bool,
}

pub fn cases() -> Vec<Case> {
    let healthy = Scenario {
        horizon: HORIZON,
        ..Scenario::healthy()
    };
    let turning = Scenario {
        onset: ONSET,
        horizon: ONSET + HORIZON,
        ..healthy
    };
    let bad = |name, scenario| Case {
        name,
        scenario,
        bad: true,
    };
    vec![
        Case {
            name: "healthy (same as stable)",
            scenario: healthy,
            bad: false,
        },
        bad(
            "errors +2 points (3%)",
            Scenario {
                canary_error_rate: 0.03,
                ..turning
            },
        ),
        bad(
            "errors +5 points (6%)",
            Scenario {
                canary_error_rate: 0.06,
                ..turning
            },
        ),
        bad(
            "p99 doubled",
            Scenario {
                canary_latency_factor: 2.0,
                ..turning
            },
        ),
        bad(
            "20% errors",
            Scenario {
                canary_error_rate: 0.20,
                ..turning
            },
        ),
    ]
}

/// What the runs of one case came to.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub name: &'static str,
    pub runs: usize,
    /// Healthy canaries cut back (for a bad case: cut back before it turned bad).
    pub false_cutbacks: usize,
    /// Runs that reached the right verdict within the horizon.
    pub reached: usize,
    /// Times to the right verdict (from the onset for bad cases, from the start for the
    /// healthy one), sorted.
    pub times: Vec<Duration>,
    /// Which rules made the bad verdicts.
    pub rules: Vec<(Rule, usize)>,
    pub expected: &'static str,
}

impl Row {
    pub fn median(&self) -> Option<Duration> {
        self.times
            .get(self.times.len().saturating_sub(1) / 2)
            .copied()
    }

    pub fn worst(&self) -> Option<Duration> {
        self.times.last().copied()
    }
}

/// Runs one case over seeds `0..seeds`, spread over the machine's cores.
pub fn measure(case: &Case, settings: &GuardSettings, seeds: u64) -> Row {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    let results: Vec<RunResult> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|first| {
                scope.spawn(move || {
                    (first..seeds)
                        .step_by(threads as usize)
                        .map(|seed| run(&case.scenario, settings, seed))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| {
                worker
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    // A bad verdict timed at zero came at or before the onset, when the canary was
    // still as good as stable: a false cutback.
    let bad_times: Vec<(Duration, Rule)> = results.iter().filter_map(|r| r.bad_at).collect();
    let false_cutbacks = bad_times
        .iter()
        .filter(|(at, _)| !case.bad || at.is_zero())
        .count();
    let mut times: Vec<Duration> = if case.bad {
        bad_times
            .iter()
            .map(|&(at, _)| at)
            .filter(|at| !at.is_zero())
            .collect()
    } else {
        results
            .iter()
            .filter(|r| r.bad_at.is_none())
            .filter_map(|r| r.healthy_at)
            .collect()
    };
    times.sort();
    let mut rules: Vec<(Rule, usize)> = Vec::new();
    for &(at, rule) in &bad_times {
        if case.bad && at.is_zero() {
            continue;
        }
        match rules.iter_mut().find(|(r, _)| *r == rule) {
            Some((_, count)) => *count += 1,
            None => rules.push((rule, 1)),
        }
    }
    Row {
        name: case.name,
        runs: results.len(),
        false_cutbacks,
        reached: times.len(),
        times,
        rules,
        expected: if case.bad { "bad" } else { "healthy" },
    }
}

/// The markdown table.
pub fn render(rows: &[Row], settings: &GuardSettings) -> String {
    let mut out = format!(
        "Guard time-to-verdict (simulated, default guard settings: error_margin {}, \
         false_abort {}, latency_ratio {}, window {:?}, interval {:?}).\n\
         1,000 req/s, canary at 10%, stable at 1% errors and 20 ms median. A bad canary \
         turns bad {} s in and is timed from then; every run lasts {} s past that \
         (a healthy one: {} s from the start).\n\n\
         | canary | runs | right verdict | reached | median | worst | false cutbacks | rule |\n\
         | --- | ---: | --- | ---: | ---: | ---: | ---: | --- |\n",
        settings.error_margin,
        settings.false_abort,
        settings.latency_ratio,
        settings.window,
        settings.interval,
        ONSET.as_secs(),
        HORIZON.as_secs(),
        HORIZON.as_secs(),
    );
    for row in rows {
        let rules: Vec<String> = row
            .rules
            .iter()
            .map(|(rule, count)| format!("{} {count}", rule_name(*rule)))
            .collect();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {}/{} | {} | {} | {} | {} |",
            row.name,
            row.runs,
            row.expected,
            row.reached,
            row.runs,
            row.median().map_or("-".into(), show),
            row.worst().map_or("-".into(), show),
            row.false_cutbacks,
            if rules.is_empty() {
                "-".into()
            } else {
                rules.join(", ")
            },
        );
    }
    out
}

/// Every case over `seeds` seeds, as the markdown table.
pub fn report(seeds: u64) -> String {
    let settings = GuardSettings::default();
    let rows: Vec<Row> = cases()
        .iter()
        .map(|case| measure(case, &settings, seeds))
        .collect();
    render(&rows, &settings)
}

fn rule_name(rule: Rule) -> &'static str {
    match rule {
        Rule::ErrorRate => "error rate",
        Rule::Latency => "latency",
        Rule::Unreachable => "unreachable",
    }
}

fn show(time: Duration) -> String {
    if time < Duration::from_secs(1) {
        format!("{} ms", time.as_millis())
    } else {
        format!("{:.1} s", time.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_few_seeds_give_a_full_table_with_the_right_verdicts() {
        let settings = GuardSettings::default();
        let seeds = 4;
        let rows: Vec<Row> = cases()
            .iter()
            .map(|case| measure(case, &settings, seeds))
            .collect();
        let by_name = |name: &str| rows.iter().find(|r| r.name.starts_with(name)).unwrap();
        for row in &rows {
            assert_eq!(row.runs, seeds as usize, "{}", row.name);
            assert_eq!(row.false_cutbacks, 0, "{row:?}");
            assert!(row.times.windows(2).all(|w| w[0] <= w[1]), "{row:?}");
        }
        let gross = by_name("20% errors");
        assert_eq!(gross.reached, 4);
        assert!(
            gross.worst().unwrap() <= Duration::from_secs(1),
            "{gross:?}"
        );
        assert_eq!(gross.rules, vec![(Rule::ErrorRate, 4)]);
        let slow = by_name("p99 doubled");
        assert_eq!(slow.rules, vec![(Rule::Latency, slow.reached)]);
        assert!(slow.reached > 0, "{slow:?}");

        let table = render(&rows, &settings);
        // The header, its rule line, and a line per case.
        let lines = table.lines().filter(|l| l.starts_with("| ")).count();
        assert_eq!(lines, 2 + rows.len(), "{table}");
        assert!(table.contains("| 20% errors | 4 | bad | 4/4 |"), "{table}");
    }

    #[test]
    fn times_read_well() {
        assert_eq!(show(Duration::from_millis(300)), "300 ms");
        assert_eq!(show(Duration::from_millis(2345)), "2.3 s");
    }
}
