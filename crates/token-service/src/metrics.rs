//! Prometheus metrics, served at `/metrics` in the text exposition format. The composition root
//! (`app`) makes one [`Metrics`] per application and hands an `Arc` of it to what counts, so two
//! applications in one process (tests, embedders) count apart; labels are low-cardinality (flow,
//! outcome, API, status), never client IDs. Depends on nothing else of ours.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Latency buckets in seconds, from 0.25 ms to 10 s.
const BUCKETS: [f64; 14] = [
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FlowOutcome {
    flow: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FlowLabel {
    flow: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiStatus {
    api: &'static str,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabel {
    api: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reload {
    material: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SigningKey {
    kid: String,
    algorithm: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Scope {
    scope: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Decision {
    decision: &'static str,
}

/// Every metric of the service.
pub struct Metrics {
    registry: Registry,
    token_requests: Family<FlowOutcome, Counter>,
    token_duration: Family<FlowLabel, Histogram, fn() -> Histogram>,
    upstream_requests: Family<ApiStatus, Counter>,
    upstream_duration: Family<ApiLabel, Histogram, fn() -> Histogram>,
    access_token_cache: Family<ResultLabel, Counter>,
    reloads: Family<Reload, Counter>,
    signing_key: Family<SigningKey, Gauge>,
    rate_limited: Family<Scope, Counter>,
    policy_decisions: Family<Decision, Counter>,
    connections_open: Gauge,
    connections_rejected: Counter,
    requests_in_flight: Gauge,
    requests_rejected: Family<ResultLabel, Counter>,
    client_crls_expired: Gauge,
    connections_timed_out: Family<ResultLabel, Counter>,
    client_ocsp_checks: Family<ResultLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A new, empty set of metrics; the composition root makes one and hands it to what counts.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("token_service");
        let m = Self {
            token_requests: Family::default(),
            token_duration: Family::new_with_constructor(histogram),
            upstream_requests: Family::default(),
            upstream_duration: Family::new_with_constructor(histogram),
            access_token_cache: Family::default(),
            reloads: Family::default(),
            signing_key: Family::default(),
            rate_limited: Family::default(),
            policy_decisions: Family::default(),
            connections_open: Gauge::default(),
            connections_rejected: Counter::default(),
            requests_in_flight: Gauge::default(),
            requests_rejected: Family::default(),
            client_crls_expired: Gauge::default(),
            connections_timed_out: Family::default(),
            client_ocsp_checks: Family::default(),
            registry: Registry::default(),
        };
        m.register_requests(&mut registry);
        m.register_connections(&mut registry);
        Self { registry, ..m }
    }

    /// Registers what token requests and the calls behind them count.
    fn register_requests(&self, registry: &mut Registry) {
        let m = self;
        registry.register(
            "token_requests",
            "Token requests by flow and outcome (issued, or the OAuth error code)",
            m.token_requests.clone(),
        );
        registry.register(
            "token_request_duration_seconds",
            "Time to answer a token request, by flow",
            m.token_duration.clone(),
        );
        registry.register(
            "upstream_requests",
            "Google API calls by API and HTTP status (or error kind), retries included",
            m.upstream_requests.clone(),
        );
        registry.register(
            "upstream_request_duration_seconds",
            "Duration of one Google API call, by API",
            m.upstream_duration.clone(),
        );
        registry.register(
            "access_token_cache",
            "Access-token cache lookups: hit or miss",
            m.access_token_cache.clone(),
        );
        registry.register(
            "reloads",
            "Reloads of TLS material, client CAs/CRLs and the policy, by result",
            m.reloads.clone(),
        );
        registry.register(
            "signing_key_info",
            "The key that signs ID tokens (1 for the current key id)",
            m.signing_key.clone(),
        );
        registry.register(
            "rate_limited",
            "Requests refused with 429, by limit (global, client or auth_failures)",
            m.rate_limited.clone(),
        );
        registry.register(
            "policy_decisions",
            "Client policy decisions",
            m.policy_decisions.clone(),
        );
        registry.register(
            "client_ocsp_checks",
            "OCSP decisions on verified client certificates: good, revoked, unavailable_accepted (TLS_CLIENT_OCSP=when-available) or unavailable_refused (required)",
            m.client_ocsp_checks.clone(),
        );
    }

    /// Registers what connections, the request limits and the client CRLs count.
    fn register_connections(&self, registry: &mut Registry) {
        let m = self;
        registry.register(
            "connections_open",
            "Client connections open now",
            m.connections_open.clone(),
        );
        registry.register(
            "connections_rejected",
            "Connections closed at once because MAX_CONNECTIONS were open",
            m.connections_rejected.clone(),
        );
        registry.register(
            "requests_in_flight",
            "Requests being answered now",
            m.requests_in_flight.clone(),
        );
        registry.register(
            "requests_rejected",
            "Requests refused by a limit: concurrency, timeout, body_timeout",
            m.requests_rejected.clone(),
        );
        registry.register(
            "client_crls_expired",
            "CRLs in force (TLS_CLIENT_CRL_FILE) past their nextUpdate",
            m.client_crls_expired.clone(),
        );
        registry.register(
            "connections_timed_out",
            "Connections closed for lack of requests: header_read (no complete request within HEADER_READ_TIMEOUT of accept), idle (IDLE_TIMEOUT)",
            m.connections_timed_out.clone(),
        );
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Counts an answered token request.
    pub fn token_request(&self, flow: &str, outcome: &'static str, elapsed: Duration) {
        self.token_requests
            .get_or_create(&FlowOutcome {
                flow: flow.to_owned(),
                outcome,
            })
            .inc();
        self.token_duration
            .get_or_create(&FlowLabel {
                flow: flow.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts one Google API call; `status` is the HTTP status, `unreachable`, or
    /// `no_connection` (no free connection under `UPSTREAM_MAX_CONNECTIONS` before the deadline).
    pub fn upstream(&self, api: &'static str, status: &str, elapsed: Duration) {
        self.upstream_requests
            .get_or_create(&ApiStatus {
                api,
                status: status.to_owned(),
            })
            .inc();
        self.upstream_duration
            .get_or_create(&ApiLabel { api })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts an access-token cache lookup.
    pub fn cache(&self, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        self.access_token_cache
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// Counts a reload of `material` (`tls`, `client_ca`, `policy`).
    pub fn reload(&self, material: &'static str, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.reloads
            .get_or_create(&Reload { material, result })
            .inc();
    }

    /// Counts an OCSP decision on a verified client certificate (`good`, `revoked`,
    /// `unavailable_accepted`, `unavailable_refused`).
    pub fn client_ocsp(&self, result: &'static str) {
        self.client_ocsp_checks
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// Sets how many CRLs in force are past their nextUpdate.
    pub fn client_crls_expired(&self, count: usize) {
        self.client_crls_expired
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Publishes the current signing key.
    pub fn signing_key(&self, kid: &str, algorithm: &str) {
        self.signing_key.clear();
        self.signing_key
            .get_or_create(&SigningKey {
                kid: kid.to_owned(),
                algorithm: algorithm.to_owned(),
            })
            .set(1);
    }

    /// Counts a request refused by a rate limit (`global` or `client`).
    pub fn rate_limited(&self, scope: &'static str) {
        self.rate_limited.get_or_create(&Scope { scope }).inc();
    }

    /// Counts a policy decision (`allow`, `deny`, `deny_access`).
    pub fn policy_decision(&self, decision: &'static str) {
        self.policy_decisions
            .get_or_create(&Decision { decision })
            .inc();
    }

    /// Open connections gauge.
    pub fn connections_open(&self) -> &Gauge {
        &self.connections_open
    }

    /// Counts a connection refused at the connection limit.
    pub fn connection_rejected(&self) {
        self.connections_rejected.inc();
    }

    /// In-flight requests gauge.
    pub fn requests_in_flight(&self) -> &Gauge {
        &self.requests_in_flight
    }

    /// Counts a request refused by `limit` (`concurrency`, `timeout`).
    pub fn request_rejected(&self, limit: &'static str) {
        self.requests_rejected
            .get_or_create(&ResultLabel { result: limit })
            .inc();
    }

    /// Counts a connection closed for lack of requests (`header_read`, `idle`).
    pub fn connection_timed_out(&self, reason: &'static str) {
        self.connections_timed_out
            .get_or_create(&ResultLabel { result: reason })
            .inc();
    }
}
