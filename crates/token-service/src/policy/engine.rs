//! The rule-based client policy (`POLICY_FILE`): decides with the policy loaded last, logs every
//! decision with its rule and facts, and swaps in a new version of the files atomically when they
//! change and compile; a broken version is refused with an error log naming the line. Counts
//! its decisions and reloads into the metrics it is given.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use super::rules::{Outcome, Policy};
use super::{ClientPolicy, Requested, client_denied, describe_rule};
use crate::error::{Failure, StartupError};
use crate::metrics::Metrics;
use crate::model::{AuthenticatedClient, Client};

/// The policy in force, reloadable.
pub struct RulesPolicy {
    path: PathBuf,
    /// The flows a `match.flow` condition may name.
    flows: Vec<String>,
    current: ArcSwap<Policy>,
    metrics: Arc<Metrics>,
}

impl RulesPolicy {
    /// Loads the policy file, whose flow conditions may name `flows`; the error names
    /// `POLICY_FILE`, the file, line and problem. Decisions and reloads count into `metrics`.
    pub fn load(path: &Path, flows: &[&str], metrics: Arc<Metrics>) -> Result<Self, StartupError> {
        let policy = Policy::load_for(path, flows)?;
        Ok(Self {
            path: path.to_owned(),
            flows: flows.iter().map(|f| (*f).to_owned()).collect(),
            current: ArcSwap::from_pointee(policy),
            metrics,
        })
    }

    /// The policy in force now.
    pub fn current(&self) -> Arc<Policy> {
        self.current.load_full()
    }

    /// Re-reads the files: swaps the new version in if it compiles, else keeps the old one.
    /// Returns the new policy's summary.
    pub fn reload(&self) -> Result<String, StartupError> {
        let flows: Vec<&str> = self.flows.iter().map(String::as_str).collect();
        let policy = Policy::load_for(&self.path, &flows)?;
        let summary = policy.summary();
        self.current.store(Arc::new(policy));
        Ok(summary)
    }

    /// Keeps the rules in force but re-reads their deny lists, so that a revocation still takes
    /// effect while the policy file itself is broken.
    fn refresh_deny_lists(&self) {
        let current = self.current();
        if !current.has_deny_lists() {
            return;
        }
        match current.with_reloaded_deny_lists() {
            Ok(policy) => {
                let summary = policy.summary();
                self.current.store(Arc::new(policy));
                tracing::warn!(
                    event = "policy_deny_lists_reloaded",
                    "re-read the deny lists under the previous rules (the policy file is refused until fixed): {summary}"
                );
            }
            Err(e) => {
                tracing::error!(event = "policy_deny_lists_reload_failed", reason = %e, "kept the previous deny lists too: {e}");
            }
        }
    }

    /// Re-reads the policy and its deny lists whenever one of them changes.
    pub fn watch(self: &Arc<Self>, interval: Duration, background: &crate::tasks::Background) {
        let (files, policy) = (self.clone(), self.clone());
        crate::watch::spawn(
            background,
            interval,
            move || files.current().files(),
            move || match policy.reload() {
                Ok(summary) => {
                    policy.metrics.reload("policy", true);
                    tracing::info!(event = "policy_reloaded", "reloaded the policy: {summary}")
                }
                Err(e) => {
                    policy.metrics.reload("policy", false);
                    let e = &e.problem;
                    tracing::error!(event = "policy_reload_failed", reason = %e, "refused the new policy, keeping the old one: {e}");
                    policy.refresh_deny_lists();
                }
            },
        );
    }
}

impl ClientPolicy for RulesPolicy {
    fn authorize(
        &self,
        client: &AuthenticatedClient,
        requested: Requested<'_>,
    ) -> Result<Client, Failure> {
        let policy = self.current.load();
        let verdict = policy.decide(client, requested);
        let matched = verdict.matched.join("; ");
        match verdict.outcome {
            Outcome::Allow(admitted) => {
                self.metrics.policy_decision("allow");
                tracing::info!(
                    event = "policy_decision",
                    decision = "allow",
                    rule = %verdict.rule,
                    flow = %client.flow,
                    client_id = %admitted.client_id,
                    matched = %matched,
                    "rule '{}' allowed client '{}' ({matched})",
                    verdict.rule,
                    admitted.client_id
                );
                Ok(*admitted)
            }
            Outcome::DenyClient(reason) => {
                let what = format!("denied client '{}'", client.client_id);
                self.log_denial("deny", &verdict.rule, client, &matched, &reason, &what);
                Err(client_denied(reason))
            }
            Outcome::DenyAccess { log, message } => {
                let what = format!("refused what client '{}' asked for", client.client_id);
                self.log_denial("deny_access", &verdict.rule, client, &matched, &log, &what);
                Err(Failure::access_denied(message))
            }
        }
    }
}

impl RulesPolicy {
    /// Counts and logs a denial: `decision` is `deny` (the client) or `deny_access` (a service
    /// account or scope it asked for).
    fn log_denial(
        &self,
        decision: &'static str,
        rule: &str,
        client: &AuthenticatedClient,
        matched: &str,
        reason: &str,
        what: &str,
    ) {
        self.metrics.policy_decision(decision);
        tracing::warn!(
            event = "policy_decision",
            decision,
            rule = %rule,
            flow = %client.flow,
            client_id = %client.client_id,
            matched = %matched,
            reason = %reason,
            "{} {what}: {reason}",
            describe_rule(rule),
        );
    }
}
