//! The OCSP check of a verified client certificate (`TLS_CLIENT_OCSP`), for every flow that
//! verifies the certificate itself (`verify.rs` calls it once a chain verifies; the xlb flow
//! never sees the certificate). The leaf is asked about at the responder its AIA extension
//! names, or `TLS_CLIENT_OCSP_RESPONDER`; the answer must be signed by the CA that issued the
//! leaf, or by a responder certificate that CA issued for OCSP signing (`response.rs`).
//!
//! Answers are kept per certificate (issuer key, serial) until their nextUpdate, or the HTTP
//! `max-age` when shorter, or [`DEFAULT_TTL`] without either; having no answer is kept for
//! [`UNAVAILABLE_TTL`], so an unreachable responder costs one timeout per certificate per
//! period rather than one per request. At most [`MAX_ANSWERS`] answers are kept, one exchange per
//! certificate is in flight at a time (later requests wait for its answer), at most
//! [`MAX_EXCHANGES`] exchanges at once, each within `TLS_CLIENT_OCSP_TIMEOUT`, redirects
//! refused and answers capped at 64 KiB (`fetch.rs`). Exchanges run on tasks of their own,
//! so a request that gives up does not waste the answer. Logs nothing: the request's log
//! line carries the outcome (`ocsp`), and `client_ocsp_checks` counts them.

mod cache;
mod fetch;
mod request;
mod response;
pub(crate) mod settings;

use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{Semaphore, watch};
use x509_ocsp::OcspResponseStatus;

use super::Trust;
use crate::clock::{Clock, Deadline, Stopwatch};
use crate::error::{Failure, StartupError};
use crate::metrics::Metrics;
use crate::model::CertificateFacts;
pub use request::Subject;
pub use settings::{Mode, OcspSettings};

/// Answers kept at most.
pub const MAX_ANSWERS: usize = 10_000;
/// Seconds an answer without nextUpdate and max-age is reused.
pub const DEFAULT_TTL: i64 = 300;
/// Seconds "no answer" is reused (and `Retry-After` at most, in `required` mode).
pub const UNAVAILABLE_TTL: i64 = 30;
/// Exchanges with responders at once.
pub const MAX_EXCHANGES: usize = 32;

/// Why there is no usable answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Neither the certificate nor the settings name a responder.
    NoResponder,
    /// The responder could not be reached, or did not answer in time.
    Unreachable(String),
    /// The responder answered with this HTTP status (a redirect included: none is followed).
    Http(u16),
    /// The responder answered with this OCSP response status.
    Status(OcspResponseStatus),
    /// The answer cannot be used.
    Malformed(String),
    /// The answer's signature cannot be trusted.
    BadSignature(String),
    /// The answer is not current.
    Stale(String),
    /// The responder does not know the certificate.
    Unknown,
}

impl Problem {
    /// Whether the same request may succeed later with nothing changed at the client or its
    /// CA (the responder's trouble): `required` answers 503 then, else 403.
    pub fn transient(&self) -> bool {
        matches!(
            self,
            Self::Unreachable(_)
                | Self::Http(_)
                | Self::Status(OcspResponseStatus::TryLater | OcspResponseStatus::InternalError)
        )
    }

    /// What went wrong, as a phrase, naming the responder.
    pub fn describe(&self, responder: &str) -> String {
        match self {
            Self::NoResponder => "the certificate names no OCSP responder (no OCSP URL in its Authority Information Access extension) and TLS_CLIENT_OCSP_RESPONDER is not set".into(),
            Self::Unreachable(why) => format!("the OCSP responder {responder} could not be reached ({why})"),
            Self::Http(status) => format!("the OCSP responder {responder} answered HTTP {status}"),
            Self::Status(status) => format!("the OCSP responder {responder} answered {status:?} instead of a status"),
            Self::Malformed(why) => format!("the answer of the OCSP responder {responder} cannot be used: {why}"),
            Self::BadSignature(why) => format!("the answer of the OCSP responder {responder} is not trusted: {why}"),
            Self::Stale(why) => format!("the answer of the OCSP responder {responder} is not current: {why}"),
            Self::Unknown => format!("the OCSP responder {responder} does not know the certificate (status unknown)"),
        }
    }
}

/// What the check found about a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// A verified good answer.
    Good,
    /// A verified revoked answer: since when, and why if said.
    Revoked {
        /// Revocation time, seconds since the epoch.
        at: i64,
        /// The reason code's name.
        reason: Option<String>,
    },
    /// No usable answer.
    Unavailable(Problem),
}

/// A status, the responder it came from, and until when (seconds since the epoch) it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The status.
    pub status: Status,
    /// The responder asked, if any.
    pub responder: Option<String>,
    /// Until when the answer may be reused.
    pub until: i64,
}

impl Answer {
    /// No usable answer at `now`, kept [`UNAVAILABLE_TTL`].
    fn unavailable(problem: Problem, responder: Option<String>, now: i64) -> Self {
        Self {
            status: Status::Unavailable(problem),
            responder,
            until: now.saturating_add(UNAVAILABLE_TTL),
        }
    }

    /// The answer of an exchange with `responder` that ended at `now`.
    fn of(
        result: Result<(response::Checked, Option<i64>), Problem>,
        responder: String,
        now: i64,
    ) -> Self {
        let (checked, max_age) = match result {
            Ok(found) => found,
            Err(problem) => return Self::unavailable(problem, Some(responder), now),
        };
        let status = match checked.said {
            response::Said::Good => Status::Good,
            response::Said::Revoked { at, reason } => Status::Revoked { at, reason },
            response::Said::Unknown => {
                return Self::unavailable(Problem::Unknown, Some(responder), now);
            }
        };
        let mut until = checked
            .next_update
            .unwrap_or_else(|| now.saturating_add(DEFAULT_TTL));
        if let Some(max_age) = max_age {
            until = until.min(now.saturating_add(max_age));
        }
        Self {
            status,
            responder: Some(responder),
            until: until.max(now),
        }
    }
}

/// The OCSP check: its settings, HTTP client, answers and bounds.
pub struct Ocsp {
    settings: OcspSettings,
    http: reqwest::Client,
    metrics: Arc<Metrics>,
    cache: Mutex<cache::Cache>,
    exchanges: Semaphore,
}

impl std::fmt::Debug for Ocsp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ocsp({:?})", self.settings)
    }
}

impl Ocsp {
    /// The check `settings` ask for; `None` when `TLS_CLIENT_OCSP=off`.
    pub fn new(
        settings: &OcspSettings,
        metrics: Arc<Metrics>,
    ) -> Result<Option<Arc<Self>>, StartupError> {
        if settings.mode == Mode::Off {
            return Ok(None);
        }
        let http = fetch::client(settings.timeout).map_err(|e| {
            StartupError::other(format!(
                "cannot build the HTTP client of OCSP requests: {e}"
            ))
        })?;
        Ok(Some(Arc::new(Self {
            settings: settings.clone(),
            http,
            metrics,
            cache: Mutex::new(cache::Cache::new(MAX_ANSWERS)),
            exchanges: Semaphore::new(MAX_EXCHANGES),
        })))
    }

    /// Checks the verified leaf `subject` describes (or why it could not be described), and
    /// decides by `TLS_CLIENT_OCSP`: until when the acceptance holds, with the outcome in
    /// `facts.ocsp` for the log line, or the refusal (labelled `ocsp`).
    pub async fn check(
        self: &Arc<Self>,
        subject: Result<Subject, Problem>,
        facts: &mut CertificateFacts,
        clock: Clock,
    ) -> Result<i64, Failure> {
        let serial = facts.serial_number.clone().unwrap_or_default();
        let answer = match subject {
            Ok(subject) => self.answer(subject, clock).await,
            Err(problem) => Answer::unavailable(problem, None, clock.now()),
        };
        let decided = self.decide(&answer, &serial, clock.now());
        if let Ok(label) = &decided {
            facts.ocsp = Some(label.clone());
        }
        decided.map(|_| answer.until)
    }

    /// The answer for `subject`: kept, or awaited from the exchange in flight, or asked for.
    async fn answer(self: &Arc<Self>, subject: Subject, clock: Clock) -> Answer {
        let key = subject.key();
        let mut receiver = {
            let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(answer) = cache.get(&key, clock.now()) {
                return answer;
            }
            if let Some(receiver) = cache.in_flight.get(&key) {
                receiver.clone()
            } else {
                let (sender, receiver) = watch::channel(None);
                cache.in_flight.insert(key, receiver.clone());
                let this = Arc::clone(self);
                tokio::spawn(async move {
                    let answer = this.ask(&subject, clock).await;
                    let mut cache = this.cache.lock().unwrap_or_else(PoisonError::into_inner);
                    cache.insert(key, answer.clone());
                    cache.in_flight.remove(&key);
                    drop(cache);
                    let _ = sender.send(Some(answer));
                });
                receiver
            }
        };
        let answered = receiver
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|a| a.clone());
        answered.unwrap_or_else(|| {
            // The exchange ended without an answer (its task was stopped): forget it.
            let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            if cache
                .in_flight
                .get(&key)
                .is_some_and(|r| r.same_channel(&receiver))
            {
                cache.in_flight.remove(&key);
            }
            let problem = Problem::Unreachable("the exchange was interrupted".into());
            Answer::unavailable(problem, None, clock.now())
        })
    }

    /// One exchange with the responder about `subject`, and its answer checked.
    async fn ask(&self, subject: &Subject, clock: Clock) -> Answer {
        let configured = self.settings.responder.clone();
        let Some(responder) = configured.or_else(|| subject.aia.clone()) else {
            return Answer::unavailable(Problem::NoResponder, None, clock.now());
        };
        let mut nonce = [0u8; 16];
        if aws_lc_rs::rand::fill(&mut nonce).is_err() {
            let problem = Problem::Malformed("no random nonce could be made".into());
            return Answer::unavailable(problem, Some(responder), clock.now());
        }
        let Ok(request) = request::encode(subject, &nonce) else {
            let problem =
                Problem::Malformed("the certificate's serial does not fit a request".into());
            return Answer::unavailable(problem, Some(responder), clock.now());
        };
        let end = Deadline::after(self.settings.timeout);
        let started = Stopwatch::start();
        let fetched = match tokio::time::timeout(end.remaining(), self.exchanges.acquire()).await {
            Ok(Ok(_slot)) => fetch::post(&self.http, &responder, request, end.remaining()).await,
            _ => Err(Problem::Unreachable(format!(
                "all {MAX_EXCHANGES} OCSP exchanges stayed busy"
            ))),
        };
        let status = match &fetched {
            Ok(_) => "200".to_owned(),
            Err(Problem::Http(status)) => status.to_string(),
            Err(Problem::Unreachable(_)) => "unreachable".to_owned(),
            Err(_) => "malformed".to_owned(),
        };
        self.metrics.upstream("ocsp", &status, started.elapsed());
        let now = clock.now();
        let checked = fetched.and_then(|f| {
            response::check(&f.body, subject, &nonce, now).map(|checked| (checked, f.max_age))
        });
        Answer::of(checked, responder, now)
    }

    /// The decision on `answer` for the certificate with `serial` at `now`: the label of an
    /// accepted one, or the refusal.
    fn decide(&self, answer: &Answer, serial: &str, now: i64) -> Result<String, Failure> {
        let responder = answer.responder.as_deref().unwrap_or("(none)");
        match &answer.status {
            Status::Good => {
                self.metrics.client_ocsp("good");
                Ok("good".into())
            }
            Status::Revoked { at, reason } => {
                self.metrics.client_ocsp("revoked");
                let since = time::OffsetDateTime::from_unix_timestamp(*at)
                    .ok()
                    .and_then(|t| {
                        t.format(&time::format_description::well_known::Rfc3339)
                            .ok()
                    })
                    .unwrap_or_else(|| at.to_string());
                let why = reason
                    .as_ref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default();
                Err(Failure::access_denied(format!(
                    "The client certificate (serial {serial}) is revoked (OCSP): the responder {responder} reports it revoked since {since}{why}"
                ))
                .with_label("ocsp", "revoked"))
            }
            Status::Unavailable(problem) => {
                let what = problem.describe(responder);
                let label = format!("unavailable: {what}");
                if self.settings.mode != Mode::Required {
                    self.metrics.client_ocsp("unavailable_accepted");
                    return Ok(label);
                }
                self.metrics.client_ocsp("unavailable_refused");
                let failure = if problem.transient() {
                    let retry_after = answer.until.saturating_sub(now).clamp(1, UNAVAILABLE_TTL);
                    Failure::unavailable(
                        format!(
                            "The client certificate (serial {serial}) cannot be checked for revocation now: {what}; TLS_CLIENT_OCSP=required needs a good OCSP answer, retry later"
                        ),
                        u64::try_from(retry_after).unwrap_or(1),
                    )
                } else {
                    Failure::access_denied(format!(
                        "The client certificate (serial {serial}) cannot be checked for revocation: {what}; TLS_CLIENT_OCSP=required accepts only a verified good OCSP answer"
                    ))
                };
                Err(failure.with_label("ocsp", label))
            }
        }
    }
}

impl Trust {
    /// The same trust material with the OCSP check `ocsp` after each verified chain.
    #[must_use]
    pub fn with_ocsp(mut self, ocsp: Option<Arc<Ocsp>>) -> Self {
        self.ocsp = ocsp;
        self
    }

    /// The OCSP check, when `TLS_CLIENT_OCSP` is not `off`.
    pub fn ocsp(&self) -> Option<&Arc<Ocsp>> {
        self.ocsp.as_ref()
    }
}

#[cfg(test)]
mod tests;
