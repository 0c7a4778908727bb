//! The rule-based client policy (`POLICY_FILE`): decides with the policy loaded last and
//! returns each decision with its rule and facts (the request's one log line shows them; this
//! module logs no request), and swaps in a new version of the files atomically when they change
//! and compile; a broken version is refused with an error log naming the line. Counts its
//! decisions and reloads into the metrics it is given.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use super::rules::{Outcome, Policy};
use super::{ClientPolicy, Requested, client_denied, with_decision};
use crate::error::{Failure, StartupError};
use crate::metrics::Metrics;
use crate::model::{AuthenticatedClient, Client, PolicyDecision};

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
    /// Decides with the policy in force and counts the decision; logs nothing: the decision
    /// (rule and matched facts) travels with the answer to the request's one log line, on the
    /// admitted client or as labels of the refusal.
    fn authorize(
        &self,
        client: &AuthenticatedClient,
        requested: Requested<'_>,
    ) -> Result<Client, Failure> {
        let policy = self.current.load();
        let verdict = policy.decide(client, requested);
        let decision = |decision| PolicyDecision {
            decision,
            rule: verdict.rule.clone(),
            matched: verdict.matched.join("; "),
        };
        let (decision, refusal) = match verdict.outcome {
            Outcome::Allow(mut admitted) => {
                self.metrics.policy_decision("allow");
                admitted.decision = Some(decision("allow"));
                return Ok(*admitted);
            }
            Outcome::DenyClient(reason) => (decision("deny"), client_denied(reason)),
            Outcome::DenyAccess { log, message } => (
                decision("deny_access"),
                Failure::access_denied(message).with_detail(log),
            ),
        };
        self.metrics.policy_decision(decision.decision);
        Err(with_decision(refusal, &decision))
    }
}
