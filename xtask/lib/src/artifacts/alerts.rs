//! Prometheus alerting rules on the app's own metrics, and a `promtool
//! test rules` file that fires each alert on synthetic series and checks
//! that it stays quiet on healthy ones. Every metric named here is one the
//! app exports; a test scrapes the running app to keep it so.
//!
//! Beside the alerts: the recording rule of each pod's request rate, which
//! the Prometheus Adapter serves to the HorizontalPodAutoscaler as a Pods
//! metric (`adapter_config` is its rule), tested in the same file.

use anyhow::{Result, bail};
use serde_json::{Value, json};

use crate::project::K8sSettings;

/// The name of the rules file, beside which the tests are written.
pub const RULES_FILE: &str = "alerts.rules.yml";
pub const TESTS_FILE: &str = "alerts.test.yml";
/// The Prometheus Adapter's configuration (its `rules:`), beside them.
pub const ADAPTER_FILE: &str = "prometheus-adapter.yaml";

/// The per-pod request rate, recorded (the `level:metric:operations`
/// naming of Prometheus' recording-rule convention).
pub const RECORDED_RATE: &str = "namespace_pod:http_requests:rate1m";
/// The name the adapter serves it under, which the HPA asks for.
pub const PODS_METRIC: &str = "http_requests_per_second";
/// The adapter's query over the recorded series; `<<...>>` are its template
/// fields.
const ADAPTER_QUERY: &str = "sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)";

/// One alert: its rule, and series on which it must stay quiet before
/// minute 20 and fire afterwards.
struct Alert {
    name: &'static str,
    expr: String,
    wait: &'static str,
    severity: &'static str,
    summary: String,
    /// Series (name and labels, the selector's included) with their
    /// promtool values.
    series: Vec<(String, &'static str)>,
    /// The labels the firing alert carries besides `severity` and the
    /// selector's.
    per_pod: bool,
    /// When to look for it firing.
    fires_at: &'static str,
}

/// `key="value"` pairs of the setting `alert-selector`.
fn selector_labels(selector: &str) -> Result<Vec<(String, String)>> {
    let mut labels = Vec::new();
    for matcher in selector.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        let Some((key, value)) = matcher.split_once('=') else {
            bail!("alert-selector `{selector}`: `{matcher}` is not key=\"value\"");
        };
        let value = value.trim();
        let Some(value) = value
            .strip_prefix('"')
            .and_then(|value| value.strip_suffix('"'))
        else {
            bail!("alert-selector `{selector}`: quote the value of `{matcher}`, e.g. job=\"app\"");
        };
        if key.ends_with(['!', '=', '~']) || value.contains('"') {
            bail!("alert-selector `{selector}`: only key=\"value\" matchers are supported");
        }
        labels.push((key.trim().to_owned(), value.to_owned()));
    }
    Ok(labels)
}

/// `{selector,extra}` for a series selector in a rule.
fn matchers(selector: &[(String, String)], extra: &str) -> String {
    let mut all: Vec<String> = selector
        .iter()
        .map(|(key, value)| format!("{key}=\"{value}\""))
        .collect();
    if !extra.is_empty() {
        all.push(extra.to_owned());
    }
    format!("{{{}}}", all.join(","))
}

fn alerts(settings: &K8sSettings, binary: &str, selector: &[(String, String)]) -> Vec<Alert> {
    let on = |extra: &str| matchers(selector, extra);
    // A test series of pod p1, carrying the selector's labels too.
    let pod = |extra: &str| {
        let labels = if extra.is_empty() {
            "pod=\"p1\"".to_owned()
        } else {
            format!("pod=\"p1\",{extra}")
        };
        matchers(selector, &labels)
    };
    vec![
        Alert {
            name: "AppHighErrorRatio",
            expr: format!(
                "sum(rate(http_requests_total{}[5m])) / sum(rate(http_requests_total{}[5m])) > {}",
                on("status=~\"5..\""),
                on(""),
                settings.alert_error_ratio
            ),
            wait: "5m",
            severity: "page",
            summary: format!(
                "{binary}: more than {}% of requests fail with 5xx",
                settings.alert_error_ratio * 100.0
            ),
            series: vec![
                (
                    format!("http_requests_total{}", pod("status=\"200\"")),
                    "0+100x60",
                ),
                (
                    format!("http_requests_total{}", pod("status=\"500\"")),
                    "0x20 0+20x40",
                ),
            ],
            per_pod: false,
            fires_at: "40m",
        },
        Alert {
            name: "AppHighLatencyP99",
            expr: format!(
                "histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{}[5m]))) > {}",
                on(""),
                settings.alert_p99_seconds
            ),
            wait: "10m",
            severity: "page",
            summary: format!(
                "{binary}: the 99th percentile latency is above {}s",
                settings.alert_p99_seconds
            ),
            // Healthy: every request within a tenth of the threshold;
            // then all of them between that and four times the threshold.
            series: vec![
                (
                    format!(
                        "http_request_duration_seconds_bucket{}",
                        pod(&format!("le=\"{}\"", settings.alert_p99_seconds / 10.0))
                    ),
                    "0+100x20 2000x40",
                ),
                (
                    format!(
                        "http_request_duration_seconds_bucket{}",
                        pod(&format!("le=\"{}\"", settings.alert_p99_seconds * 4.0))
                    ),
                    "0+100x60",
                ),
                (
                    format!("http_request_duration_seconds_bucket{}", pod("le=\"+Inf\"")),
                    "0+100x60",
                ),
            ],
            per_pod: false,
            fires_at: "40m",
        },
        Alert {
            name: "AppNotReady",
            expr: format!("app_ready{} == 0", on("")),
            wait: "5m",
            severity: "page",
            summary: format!("{binary}: a pod has not been ready for 5 minutes"),
            series: vec![(format!("app_ready{}", pod("")), "1x20 0x40")],
            per_pod: true,
            fires_at: "40m",
        },
        Alert {
            name: "AppUpgradeFailed",
            expr: format!("increase(app_upgrades_failed_total{}[15m]) > 0", on("")),
            wait: "0m",
            severity: "ticket",
            summary: format!(
                "{binary}: an upgrade (SIGHUP) failed and the old process kept serving"
            ),
            series: vec![(format!("app_upgrades_failed_total{}", pod("")), "0x20 1x40")],
            per_pod: true,
            fires_at: "25m",
        },
        Alert {
            name: "AppLogLinesDropped",
            expr: format!("increase(app_log_lines_dropped_total{}[10m]) > 0", on("")),
            wait: "0m",
            severity: "ticket",
            summary: format!("{binary}: log lines were dropped because stdout could not keep up"),
            series: vec![(
                format!("app_log_lines_dropped_total{}", pod("")),
                "0x20 5x40",
            )],
            per_pod: true,
            fires_at: "25m",
        },
    ]
}

/// The rule groups, as both the rules file and the PrometheusRule hold
/// them.
pub fn groups(settings: &K8sSettings, binary: &str) -> Result<Value> {
    let selector = selector_labels(&alert_selector(settings, binary))?;
    let rules: Vec<Value> = alerts(settings, binary, &selector)
        .into_iter()
        .map(|alert| {
            json!({
                "alert": alert.name,
                "expr": alert.expr,
                "for": alert.wait,
                "labels": {"severity": alert.severity},
                "annotations": {"summary": alert.summary},
            })
        })
        .collect();
    let recording = json!({
        "record": RECORDED_RATE,
        "expr": format!(
            "sum by (namespace, pod) (rate(http_requests_total{}[1m]))",
            matchers(&selector, "")
        ),
    });
    Ok(json!([
        {"name": binary, "rules": rules},
        {"name": format!("{binary}-autoscaling"), "rules": [recording]},
    ]))
}

/// The Prometheus Adapter rule that serves `RECORDED_RATE` as the Pods
/// metric `PODS_METRIC` (add it to the adapter's `rules.custom`).
pub fn adapter_config() -> Value {
    json!({"rules": [{
        "seriesQuery": format!("{RECORDED_RATE}{{namespace!=\"\",pod!=\"\"}}"),
        "resources": {"overrides": {
            "namespace": {"resource": "namespace"},
            "pod": {"resource": "pod"},
        }},
        "name": {"matches": format!("^{RECORDED_RATE}$"), "as": PODS_METRIC},
        "metricsQuery": ADAPTER_QUERY,
    }]})
}

/// A `promtool` test of the autoscaling metric: two pods at 50 and 100
/// requests per second, recorded per pod, and the adapter's query (its
/// template filled as the adapter fills it for the HPA) giving each pod
/// its own rate.
fn autoscaling_test(selector: &[(String, String)]) -> Value {
    let pod = |pod: &str, status: &str| {
        matchers(
            selector,
            &format!("namespace=\"shop\",pod=\"{pod}\",status=\"{status}\""),
        )
    };
    let labels = |pod: &str| format!("{{namespace=\"shop\",pod=\"{pod}\"}}");
    let query = ADAPTER_QUERY
        .replace("<<.Series>>", RECORDED_RATE)
        .replace("<<.LabelMatchers>>", "namespace=\"shop\",pod=~\"p1|p2\"")
        .replace("<<.GroupBy>>", "pod");
    json!({
        "interval": "1m",
        "input_series": [
            // 3,000 and 6,000 requests a minute, the second pod's split
            // over two statuses.
            {"series": format!("http_requests_total{}", pod("p1", "200")), "values": "0+3000x20"},
            {"series": format!("http_requests_total{}", pod("p2", "200")), "values": "0+5000x20"},
            {"series": format!("http_requests_total{}", pod("p2", "500")), "values": "0+1000x20"},
        ],
        "promql_expr_test": [
            {"expr": RECORDED_RATE, "eval_time": "10m", "exp_samples": [
                {"labels": format!("{RECORDED_RATE}{}", labels("p1")), "value": 50},
                {"labels": format!("{RECORDED_RATE}{}", labels("p2")), "value": 100},
            ]},
            {"expr": query, "eval_time": "10m", "exp_samples": [
                {"labels": "{pod=\"p1\"}", "value": 50},
                {"labels": "{pod=\"p2\"}", "value": 100},
            ]},
        ],
    })
}

/// The selector the rules put on every series.
pub fn alert_selector(settings: &K8sSettings, binary: &str) -> String {
    settings
        .alert_selector
        .clone()
        .unwrap_or_else(|| format!("job=\"{binary}\""))
}

pub fn rules_file(groups: &Value) -> Value {
    json!({"groups": groups})
}

/// The `promtool test rules` file: per alert, quiet at minute 10, firing
/// at `fires_at`.
pub fn tests_file(settings: &K8sSettings, binary: &str) -> Result<Value> {
    let selector = selector_labels(&alert_selector(settings, binary))?;
    let mut tests: Vec<Value> = alerts(settings, binary, &selector)
        .into_iter()
        .map(|alert| {
            let mut labels = serde_json::Map::new();
            labels.insert("severity".into(), alert.severity.into());
            if alert.per_pod {
                for (key, value) in &selector {
                    labels.insert(key.clone(), value.clone().into());
                }
                labels.insert("pod".into(), "p1".into());
            }
            json!({
                "interval": "1m",
                "input_series": alert.series.iter().map(|(series, values)| {
                    json!({"series": series, "values": values})
                }).collect::<Vec<_>>(),
                "alert_rule_test": [
                    {"eval_time": "10m", "alertname": alert.name, "exp_alerts": []},
                    {"eval_time": alert.fires_at, "alertname": alert.name, "exp_alerts": [{
                        "exp_labels": labels,
                        "exp_annotations": {"summary": alert.summary},
                    }]},
                ],
            })
        })
        .collect();
    tests.push(autoscaling_test(&selector));
    Ok(json!({"rule_files": [RULES_FILE], "evaluation_interval": "1m", "tests": tests}))
}

/// The metric names the rules use.
/// Each alert `k8s` renders with the metrics it reads, for the metrics
/// reference.
pub fn alerts_and_their_metrics(
    settings: &crate::project::Settings,
) -> Result<Vec<(String, Vec<String>)>> {
    let groups = groups(&settings.k8s, &settings.binary)?;
    Ok(metrics_read(&groups))
}

#[cfg(test)]
pub fn metric_names(groups: &Value) -> Vec<String> {
    let mut names = Vec::new();
    for (_, read) in metrics_read(groups) {
        for name in read {
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names
}

/// Each alert with the metric names its expression reads (a word followed
/// by a selector), in rule order.
pub fn metrics_read(groups: &Value) -> Vec<(String, Vec<String>)> {
    let mut alerts = Vec::new();
    for rule in groups[0]["rules"].as_array().into_iter().flatten() {
        let expr = rule["expr"].as_str().unwrap_or_default();
        let mut names: Vec<String> = Vec::new();
        for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.contains('_')
                && expr.contains(&format!("{word}{{"))
                && !names.iter().any(|name| name == word)
            {
                names.push(word.to_owned());
            }
        }
        let alert = rule["alert"].as_str().unwrap_or_default().to_owned();
        alerts.push((alert, names));
    }
    alerts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_are_equality_matchers_only() {
        assert_eq!(
            selector_labels("job=\"app\", namespace=\"web\"").unwrap(),
            [
                ("job".to_owned(), "app".to_owned()),
                ("namespace".to_owned(), "web".to_owned())
            ]
        );
        assert_eq!(selector_labels("").unwrap(), []);
        for bad in ["job", "job=app", "job=~\"a.*\"", "job!=\"x\""] {
            assert!(selector_labels(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_rules_name_the_metrics_the_app_exports() {
        let groups = groups(&K8sSettings::default(), "app").unwrap();
        assert_eq!(
            metric_names(&groups),
            [
                "http_requests_total",
                "http_request_duration_seconds_bucket",
                "app_ready",
                "app_upgrades_failed_total",
                "app_log_lines_dropped_total"
            ]
        );
    }
}
