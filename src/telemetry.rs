//! Logs and metrics. Logs are structured `tracing` events with entity ids as
//! fields; phone numbers only ever appear masked (see `domain::Msisdn`).
//! Metrics are recorded with the `metrics` facade and rendered for
//! Prometheus at `/metrics`.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Histogram buckets for job start latency, in seconds: from a millisecond
/// (a NOTIFY wake-up) to ten minutes (a deep backlog).
const LATENCY_BUCKETS_S: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0,
];

/// Installs the global log subscriber. Safe to call more than once.
pub fn init_logs(config: &LogConfig) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS_S)
                .expect("bucket list is not empty")
                .install_recorder()
                .expect("no other metrics recorder is installed")
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    /// The Grafana dashboard shipped in `config/grafana/`.
    const DASHBOARD: &str = include_str!("../config/grafana/tuma.json");

    /// Every `tuma_…` name in `text`.
    fn names_in(text: &str) -> Vec<String> {
        let mut names = Vec::new();
        let mut rest = text;
        while let Some(at) = rest.find("tuma_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            names.push(name);
        }
        names
    }

    /// The metric names the code records: every `"tuma_…"` string literal
    /// under `src/`.
    fn recorded() -> BTreeSet<String> {
        fn walk(dir: &Path, found: &mut BTreeSet<String>) {
            for entry in std::fs::read_dir(dir).expect("src is readable") {
                let path = entry.expect("a directory entry").path();
                if path.is_dir() {
                    walk(&path, found);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let text = std::fs::read_to_string(&path).expect("a source file is readable");
                    for literal in text.split('"').skip(1).step_by(2) {
                        if literal.starts_with("tuma_") && names_in(literal) == [literal] {
                            found.insert(literal.to_owned());
                        }
                    }
                }
            }
        }
        let mut found = BTreeSet::new();
        walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut found);
        found
    }

    #[test]
    fn the_dashboard_asks_only_for_metrics_tuma_records_in_the_form_it_renders_them() {
        let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
        let panels = dashboard["panels"].as_array().expect("the dashboard has panels");
        let recorded = recorded();
        let mut ids = BTreeSet::new();
        let mut asked = 0;
        for panel in panels {
            let title = panel["title"].as_str().expect("every panel has a title");
            assert!(
                ids.insert(panel["id"].as_u64().expect("every panel has an id")),
                "{title}: id used twice"
            );
            let grid = &panel["gridPos"];
            let (x, w) = (grid["x"].as_u64().unwrap(), grid["w"].as_u64().unwrap());
            assert!(x + w <= 24, "{title}: wider than the dashboard");
            if panel["type"] == "row" {
                continue;
            }
            assert_eq!(
                panel["datasource"]["uid"], "${datasource}",
                "{title}: the chosen data source"
            );
            let targets = panel["targets"].as_array().expect("a panel has queries");
            assert!(!targets.is_empty(), "{title}: no query");
            for target in targets {
                let expr = target["expr"].as_str().expect("a query has an expression");
                asked += check_expression(title, expr, &recorded);
            }
        }
        assert!(asked >= 20, "the dashboard reads Tuma's metrics ({asked} uses)");
    }

    #[test]
    fn the_alerting_rules_read_only_metrics_tuma_records() {
        let rules = include_str!("../config/prometheus/tuma-alerts.yml");
        let recorded = recorded();
        let mut alert = "";
        let mut checked = 0;
        for line in rules.lines().map(str::trim) {
            if let Some(name) = line.strip_prefix("- alert:") {
                alert = name.trim();
            } else if let Some(expr) = line.strip_prefix("expr:") {
                assert!(!alert.is_empty(), "an expression outside a rule: {expr}");
                assert!(
                    check_expression(alert, expr, &recorded) > 0,
                    "{alert}: reads no Tuma metric"
                );
                checked += 1;
            }
        }
        let alerts = rules.lines().filter(|l| l.trim().starts_with("- alert:")).count();
        assert!(alerts >= 10, "the rules are read ({alerts} found)");
        assert_eq!(checked, alerts, "every rule has its expression on one line");
    }

    /// Asserts that every metric `expr` (in `what`) asks for is recorded,
    /// in the form the recorder renders it; returns how many it names.
    fn check_expression(what: &str, expr: &str, recorded: &BTreeSet<String>) -> usize {
        let names = names_in(expr);
        for name in &names {
            // Only `_seconds` histograms have buckets; the others are
            // rendered as summaries, with `_sum` and `_count`.
            let base = if let Some(base) = name.strip_suffix("_bucket") {
                assert!(base.ends_with("_seconds"), "{what}: {name} has no buckets");
                base
            } else {
                name.strip_suffix("_sum")
                    .or(name.strip_suffix("_count"))
                    .unwrap_or(name)
            };
            assert!(recorded.contains(base), "{what}: nothing records {base}");
        }
        names.len()
    }
}
