//! The emulator's mutable world: service accounts and their keys, issued
//! access tokens (principal, scopes, expiry), OAuth clients behind
//! authorized-user refresh tokens, the fault book, and the outbound HTTP
//! client STS uses for OIDC discovery. Also the wall clock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::Config;
use crate::faults::FaultBook;
use crate::keys::{SigningKey, random_digits, random_token};

/// Seconds since the Unix epoch.
pub(crate) fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A service account and its keys (the first key is the Google-managed one
/// `signJwt` uses; later ones come from "create key").
#[derive(Debug, Clone)]
pub(crate) struct Account {
    pub(crate) email: String,
    pub(crate) unique_id: String,
    pub(crate) keys: Vec<Arc<SigningKey>>,
}

impl Account {
    pub(crate) fn system_key(&self) -> Option<&Arc<SigningKey>> {
        self.keys.first()
    }
}

#[derive(Debug, Clone)]
pub(crate) struct TokenRecord {
    pub(crate) principal: String,
    pub(crate) scopes: Vec<String>,
    pub(crate) expires_at: i64,
}

#[derive(Debug, Clone)]
pub(crate) struct OAuthClient {
    pub(crate) client_id: String,
    pub(crate) client_secret: String,
    pub(crate) refresh_token: String,
    pub(crate) principal: String,
}

/// Temporary credentials STS handed out for `AssumeRoleWithWebIdentity`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsSession {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    /// Unix seconds.
    pub expiration: i64,
    pub role_arn: String,
    pub session_name: String,
    /// The web-identity token's `sub`.
    pub subject: String,
    /// The `aud` that matched the provider's client-ID list.
    pub audience: String,
}

#[derive(Debug, Default)]
struct World {
    accounts: Vec<Account>,
    tokens: HashMap<String, TokenRecord>,
    clients: Vec<OAuthClient>,
    aws_sessions: Vec<AwsSession>,
}

pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) base_url: String,
    pub(crate) faults: FaultBook,
    pub(crate) http: reqwest::Client,
    /// Signs the Entra access tokens (one key for every tenant).
    pub(crate) entra_key: Arc<SigningKey>,
    /// The STS's cache of issuers' discovery documents and JWK Sets.
    pub(crate) oidc_cache: crate::sts::cache::OidcCache,
    /// AWS STS's own cache of them.
    pub(crate) aws_oidc_cache: crate::sts::cache::OidcCache,
    /// Entra's own cache of them.
    pub(crate) entra_oidc_cache: crate::sts::cache::OidcCache,
    world: Mutex<World>,
}

pub(crate) type AppState = Arc<Shared>;

impl Shared {
    pub(crate) fn new(
        config: Config,
        base_url: String,
        accounts: Vec<Account>,
        entra_key: Arc<SigningKey>,
    ) -> anyhow::Result<Self> {
        let mut http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(5));
        for pem in &config.issuer_ca_pems {
            for cert in reqwest::Certificate::from_pem_bundle(pem.as_bytes())? {
                http = http.add_root_certificate(cert);
            }
        }
        let http = http.build()?;
        Ok(Shared {
            config,
            base_url,
            faults: FaultBook::default(),
            http,
            entra_key,
            oidc_cache: crate::sts::cache::OidcCache::default(),
            aws_oidc_cache: crate::sts::cache::OidcCache::default(),
            entra_oidc_cache: crate::sts::cache::OidcCache::default(),
            world: Mutex::new(World {
                accounts,
                ..World::default()
            }),
        })
    }

    fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The OAuth token endpoint URL that key files name as `token_uri`.
    pub(crate) fn token_uri(&self) -> String {
        format!("{}/token", self.base_url)
    }

    /// Find a service account by email (case-insensitive) or unique id.
    pub(crate) fn account(&self, email_or_id: &str) -> Option<Account> {
        self.world()
            .accounts
            .iter()
            .find(|a| a.email.eq_ignore_ascii_case(email_or_id) || a.unique_id == email_or_id)
            .cloned()
    }

    pub(crate) fn add_key(&self, email: &str, key: Arc<SigningKey>) -> Option<Account> {
        let mut world = self.world();
        let account = world
            .accounts
            .iter_mut()
            .find(|a| a.email.eq_ignore_ascii_case(email))?;
        account.keys.push(key);
        Some(account.clone())
    }

    /// Issue an opaque access token for `principal`, valid `lifetime_secs`.
    pub(crate) fn issue_token(
        &self,
        principal: &str,
        scopes: Vec<String>,
        lifetime_secs: i64,
    ) -> (String, i64) {
        let token = format!("ya29.emu-{}", random_token());
        let expires_at = now_unix().saturating_add(lifetime_secs);
        self.world().tokens.insert(
            token.clone(),
            TokenRecord {
                principal: principal.to_owned(),
                scopes,
                expires_at,
            },
        );
        (token, expires_at)
    }

    /// A token's record, whether or not it has expired.
    pub(crate) fn token(&self, token: &str) -> Option<TokenRecord> {
        self.world().tokens.get(token).cloned()
    }

    /// A token's record if it exists and has not expired.
    pub(crate) fn live_token(&self, token: &str) -> Option<TokenRecord> {
        self.token(token).filter(|t| t.expires_at > now_unix())
    }

    pub(crate) fn new_oauth_client(&self, principal: &str) -> OAuthClient {
        let client = OAuthClient {
            client_id: format!(
                "{}-emu{}.apps.googleusercontent.com",
                random_digits(12),
                crate::keys::random_hex(12)
            ),
            client_secret: format!("GOCSPX-emu{}", random_token()),
            refresh_token: format!("1//emu-{}", random_token()),
            principal: principal.to_owned(),
        };
        self.world().clients.push(client.clone());
        client
    }

    pub(crate) fn oauth_client(&self, client_id: &str) -> Option<OAuthClient> {
        self.world()
            .clients
            .iter()
            .find(|c| c.client_id == client_id)
            .cloned()
    }

    pub(crate) fn record_aws_session(&self, session: AwsSession) {
        self.world().aws_sessions.push(session);
    }

    /// Every `AssumeRoleWithWebIdentity` session handed out, oldest first.
    pub(crate) fn aws_sessions(&self) -> Vec<AwsSession> {
        self.world().aws_sessions.clone()
    }
}
