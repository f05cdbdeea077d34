//! Prometheus metrics of the gateway, registered once per process and kept across reloads.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
    pub upstream_duration: HistogramVec,
    pub in_flight: IntGauge,
    pub upstream_errors: IntCounterVec,
    /// Per target of a pool: tries, failed tries by kind, latency, in rotation, ejections.
    pub target_requests: IntCounterVec,
    pub target_errors: IntCounterVec,
    pub target_duration: HistogramVec,
    pub target_healthy: IntGaugeVec,
    pub target_ejections: IntCounterVec,
    /// Failed tries tried again elsewhere, and those the retry budget refused, by target.
    pub retries: IntCounterVec,
    pub retries_refused: IntCounterVec,
    pub limit_decisions: IntCounterVec,
    pub policy_generation: IntGauge,
    pub policy_info: IntGaugeVec,
    pub reloads: IntCounterVec,
    pub connections: IntGauge,
    /// Client connections closed, by reason (`server::CloseReason`).
    pub connections_closed: IntCounterVec,
    pub audit_dropped: IntCounter,
    pub tokens: IntCounterVec,
    /// Requests on routes with a `cache`, by route and result (hit, miss, bypass).
    pub cache: IntCounterVec,
    /// Answers stored in a route's cache, and entries evicted to keep its size bound.
    pub cache_stored: IntCounterVec,
    pub cache_evicted: IntCounterVec,
    /// The Redis limit store's metrics (registered even when the policy uses `state local`).
    pub redis: crate::store::RedisMetrics,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        macro_rules! reg {
            ($m:expr) => {{
                let m = $m.expect("metric definitions are static and valid");
                registry.register(Box::new(m.clone())).expect("each metric is registered once");
                m
            }};
        }
        let hist = |name: &str, help: &str| HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
        Metrics {
            requests: reg!(IntCounterVec::new(
                Opts::new("gw_requests_total", "Requests, by route and status (499: ended before an answer began)"),
                &["route", "status"]
            )),
            duration: reg!(HistogramVec::new(
                hist("gw_request_duration_seconds", "Time from request head to response head, by route"),
                &["route"]
            )),
            upstream_duration: reg!(HistogramVec::new(
                hist("gw_upstream_duration_seconds", "Time the upstream took to answer with a response head"),
                &["upstream"]
            )),
            in_flight: reg!(IntGauge::new("gw_requests_in_flight", "Requests being handled, streams included")),
            upstream_errors: reg!(IntCounterVec::new(
                Opts::new("gw_upstream_errors_total", "Upstream failures, by upstream and kind"),
                &["upstream", "kind"]
            )),
            target_requests: reg!(IntCounterVec::new(
                Opts::new("gw_target_requests_total", "Tries sent to a target, by upstream and target"),
                &["upstream", "target"]
            )),
            target_errors: reg!(IntCounterVec::new(
                Opts::new(
                    "gw_target_errors_total",
                    "Failed tries, by upstream, target and kind (connect, timeout, protocol, status_5xx)"
                ),
                &["upstream", "target", "kind"]
            )),
            target_duration: reg!(HistogramVec::new(
                hist("gw_target_duration_seconds", "Time a target took to answer a try with a response head"),
                &["upstream", "target"]
            )),
            target_healthy: reg!(IntGaugeVec::new(
                Opts::new(
                    "gw_target_healthy",
                    "1 while a target takes new requests, 0 while it is down (health checks) or ejected"
                ),
                &["upstream", "target"]
            )),
            target_ejections: reg!(IntCounterVec::new(
                Opts::new("gw_target_ejections_total", "Passive ejections of a target after consecutive failures"),
                &["upstream", "target"]
            )),
            retries: reg!(IntCounterVec::new(
                Opts::new(
                    "gw_target_retries_total",
                    "Failed tries of a target tried again on another target, by upstream and target"
                ),
                &["upstream", "target"]
            )),
            retries_refused: reg!(IntCounterVec::new(
                Opts::new(
                    "gw_target_retries_refused_total",
                    "Failed tries of a target the retry budget refused to try again, by upstream and target"
                ),
                &["upstream", "target"]
            )),
            limit_decisions: reg!(IntCounterVec::new(
                Opts::new("gw_limit_decisions_total", "Limit checks, by limit and result"),
                &["limit", "result"]
            )),
            policy_generation: reg!(IntGauge::new("gw_policy_generation", "Generation of the policy being served")),
            policy_info: reg!(IntGaugeVec::new(
                Opts::new("gw_policy_info", "The policy being served (value 1), by generation and content hash"),
                &["generation", "hash"]
            )),
            reloads: reg!(IntCounterVec::new(
                Opts::new("gw_policy_reloads_total", "Policy reload attempts, by result"),
                &["result"]
            )),
            connections: reg!(IntGauge::new("gw_connections_open", "Client connections open")),
            connections_closed: reg!(IntCounterVec::new(
                Opts::new(
                    "gw_connections_closed_total",
                    "Client connections closed, by reason (done, idle, header_timeout, client_reset, protocol_error, shutdown)"
                ),
                &["reason"]
            )),
            audit_dropped: reg!(IntCounter::new(
                "gw_audit_dropped_total",
                "Audit records dropped because the writer could not keep up (never blocks a request)"
            )),
            tokens: reg!(IntCounterVec::new(
                Opts::new("gw_tokens_total", "LLM tokens used, by tenant, model and direction (prompt, completion)"),
                &["tenant", "model", "direction"]
            )),
            cache: reg!(IntCounterVec::new(
                Opts::new("gw_cache_requests_total", "Requests on routes with a cache, by route and result (hit, miss, bypass)"),
                &["route", "result"]
            )),
            cache_stored: reg!(IntCounterVec::new(
                Opts::new("gw_cache_stored_total", "Answers stored in a route's cache"),
                &["route"]
            )),
            cache_evicted: reg!(IntCounterVec::new(
                Opts::new("gw_cache_evicted_total", "Entries evicted from a route's in-memory cache to keep its size bound"),
                &["route"]
            )),
            redis: {
                let m = crate::store::RedisMetrics::new();
                m.register(&registry).expect("the Redis metrics are registered once");
                m
            },
            registry,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = vec![];
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }

    pub fn count_tokens(&self, tenant: &str, model: &str, prompt: u64, completion: u64) {
        let model = crate::budget::model_label(model);
        self.tokens.with_label_values(&[tenant, model, "prompt"]).inc_by(prompt);
        self.tokens.with_label_values(&[tenant, model, "completion"]).inc_by(completion);
    }

    pub fn set_policy(&self, generation: u64, hash: &str) {
        self.policy_info.reset();
        self.policy_info.with_label_values(&[&generation.to_string(), hash]).set(1);
        self.policy_generation.set(generation as i64);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// One target's per-try series, looked up once per policy generation instead of per try
/// (a label lookup hashes the labels and takes a lock).
pub struct TargetMetrics {
    pub requests: prometheus::IntCounter,
    pub duration: prometheus::Histogram,
    pub upstream_duration: prometheus::Histogram,
}

impl TargetMetrics {
    pub fn new(m: &Metrics, upstream: &str, target: &str) -> TargetMetrics {
        TargetMetrics {
            requests: m.target_requests.with_label_values(&[upstream, target]),
            duration: m.target_duration.with_label_values(&[upstream, target]),
            upstream_duration: m.upstream_duration.with_label_values(&[upstream]),
        }
    }
}
