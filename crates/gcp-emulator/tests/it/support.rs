//! Helpers shared by the integration tests: starting emulators on loopback,
//! a reqwest client, and a tiny OIDC issuer (discovery + JWKS) whose tokens
//! are signed with aws-lc-rs keys.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair, RSA_PKCS1_SHA256, RsaKeyPair,
};
use axum::extract::State;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gcp_emulator::{Config, Emulator, Provider};
use serde_json::{Value, json};

pub const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";
pub const PROJECT_NUMBER: &str = "123456789012";
pub const DEFAULT_SA: &str = "token-service@demo-project.iam.gserviceaccount.com";
pub const DEPLOYER: &str = "deployer@demo-project.iam.gserviceaccount.com";
pub const POOL: &str = "ci-pool";
pub const PROVIDER: &str = "ci-oidc";
pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
pub const JWT_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

pub fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

pub async fn start(config: Config) -> Emulator {
    Emulator::start(config, loopback()).await.unwrap()
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder().build().unwrap()
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decode a JWT's header and claims without checking anything.
pub fn jwt_parts(jwt: &str) -> (Value, Value) {
    let mut parts = jwt.split('.');
    let mut next =
        || serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap()).unwrap();
    let header = next();
    let claims = next();
    (header, claims)
}

/// A metadata-server access token for the default service account.
pub async fn metadata_token(emu: &Emulator) -> String {
    let body: Value = http()
        .get(format!(
            "{}/computeMetadata/v1/instance/service-accounts/default/token",
            emu.base_url()
        ))
        .header("Metadata-Flavor", "Google")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

/// An asymmetric test key that signs compact JWS.
pub enum TestKey {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

impl TestKey {
    pub fn rsa() -> TestKey {
        TestKey::Rsa(RsaKeyPair::generate(KeySize::Rsa2048).unwrap())
    }

    pub fn ec() -> TestKey {
        TestKey::Ec(EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap())
    }

    pub fn alg(&self) -> &'static str {
        match self {
            TestKey::Rsa(_) => "RS256",
            TestKey::Ec(_) => "ES256",
        }
    }

    /// Sign `claims` with header `{"alg", "kid", "typ":"JWT"}`.
    pub fn sign(&self, kid: &str, claims: &Value) -> String {
        let header = json!({"alg": self.alg(), "kid": kid, "typ": "JWT"});
        self.sign_with_header(&header, claims)
    }

    pub fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            b64(serde_json::to_vec(header).unwrap()),
            b64(serde_json::to_vec(claims).unwrap())
        );
        let rng = SystemRandom::new();
        let sig = match self {
            TestKey::Rsa(pair) => {
                let mut sig = vec![0; pair.public_modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut sig)
                    .unwrap();
                sig
            }
            TestKey::Ec(pair) => pair.sign(&rng, input.as_bytes()).unwrap().as_ref().to_vec(),
        };
        format!("{input}.{}", b64(sig))
    }

    pub fn jwk(&self, kid: &str) -> Value {
        match self {
            TestKey::Rsa(pair) => {
                let c = PublicKeyComponents::<Vec<u8>>::from(pair.public_key());
                json!({"kty": "RSA", "alg": "RS256", "use": "sig", "kid": kid, "n": b64(c.n), "e": b64(c.e)})
            }
            TestKey::Ec(pair) => {
                let point = pair.public_key().as_ref();
                json!({"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
                       "x": b64(&point[1..33]), "y": b64(&point[33..65])})
            }
        }
    }
}

/// The issuer's main RSA key, generated once per test binary.
pub fn issuer_key() -> &'static TestKey {
    static KEY: OnceLock<TestKey> = OnceLock::new();
    KEY.get_or_init(TestKey::rsa)
}

/// A second RSA key (signs tokens the issuer never published).
pub fn rogue_key() -> &'static TestKey {
    static KEY: OnceLock<TestKey> = OnceLock::new();
    KEY.get_or_init(TestKey::rsa)
}

pub const ISSUER_KID: &str = "issuer-key-1";

#[derive(Default)]
struct IssuerState {
    url: String,
    discovery_issuer: Option<String>,
    jwks: Vec<Value>,
    /// The `Cache-Control` of both responses, when set.
    cache_control: Option<String>,
    /// How often discovery and the JWK Set were fetched.
    fetches: (usize, usize),
}

/// A tiny OIDC issuer: `/.well-known/openid-configuration` and `/jwks`.
#[derive(Clone)]
pub struct Issuer {
    pub url: String,
    state: Arc<Mutex<IssuerState>>,
}

impl Issuer {
    pub async fn start() -> Issuer {
        let listener = tokio::net::TcpListener::bind(loopback()).await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(IssuerState {
            url: url.clone(),
            discovery_issuer: None,
            jwks: vec![issuer_key().jwk(ISSUER_KID)],
            cache_control: None,
            fetches: (0, 0),
        }));
        let app = axum::Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Issuer { url, state }
    }

    /// Publish a different `issuer` in the discovery document.
    pub fn set_discovery_issuer(&self, issuer: &str) {
        self.state.lock().unwrap().discovery_issuer = Some(issuer.to_owned());
    }

    /// Replace the published JWKS.
    pub fn set_jwks(&self, keys: Vec<Value>) {
        self.state.lock().unwrap().jwks = keys;
    }

    /// Send `Cache-Control: value` with discovery and the JWK Set.
    pub fn set_cache_control(&self, value: &str) {
        self.state.lock().unwrap().cache_control = Some(value.to_owned());
    }

    /// How often discovery and the JWK Set were fetched.
    pub fn fetches(&self) -> (usize, usize) {
        self.state.lock().unwrap().fetches
    }

    /// A valid token for subject `sub`, audience the provider's default.
    pub fn claims(&self, sub: &str) -> Value {
        let now = now();
        json!({
            "iss": self.url,
            "sub": sub,
            "aud": default_audience(),
            "iat": now,
            "exp": now + 600,
        })
    }

    pub fn sign(&self, claims: &Value) -> String {
        issuer_key().sign(ISSUER_KID, claims)
    }

    pub fn provider(&self) -> Provider {
        Provider::new(PROJECT_NUMBER, POOL, PROVIDER, self.url.clone())
    }
}

/// `body` as JSON with the issuer's `Cache-Control`, when set.
fn cached(s: &IssuerState, body: Value) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let mut response = axum::Json(body).into_response();
    if let Some(value) = &s.cache_control {
        response.headers_mut().insert(
            axum::http::header::CACHE_CONTROL,
            axum::http::HeaderValue::from_str(value).unwrap(),
        );
    }
    response
}

async fn discovery(State(state): State<Arc<Mutex<IssuerState>>>) -> axum::response::Response {
    let mut s = state.lock().unwrap();
    s.fetches.0 += 1;
    let issuer = s.discovery_issuer.clone().unwrap_or_else(|| s.url.clone());
    let body = json!({
        "issuer": issuer,
        "jwks_uri": format!("{}/jwks", s.url),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
    });
    cached(&s, body)
}

async fn jwks(State(state): State<Arc<Mutex<IssuerState>>>) -> axum::response::Response {
    let mut s = state.lock().unwrap();
    s.fetches.1 += 1;
    let body = json!({"keys": s.jwks.clone()});
    cached(&s, body)
}

pub fn provider_resource() -> String {
    format!(
        "projects/{PROJECT_NUMBER}/locations/global/workloadIdentityPools/{POOL}/providers/{PROVIDER}"
    )
}

pub fn default_audience() -> String {
    format!("https://iam.googleapis.com/{}", provider_resource())
}

pub fn sts_audience() -> String {
    format!("//iam.googleapis.com/{}", provider_resource())
}

pub fn pool_principal_set() -> String {
    format!(
        "principalSet://iam.googleapis.com/projects/{PROJECT_NUMBER}/locations/global/workloadIdentityPools/{POOL}/*"
    )
}

pub fn principal(sub: &str) -> String {
    format!(
        "principal://iam.googleapis.com/projects/{PROJECT_NUMBER}/locations/global/workloadIdentityPools/{POOL}/subject/{sub}"
    )
}

/// A form-encoded STS token-exchange request for `subject_token`.
pub fn sts_form(subject_token: &str) -> Vec<(&'static str, String)> {
    vec![
        ("grant_type", TOKEN_EXCHANGE.to_owned()),
        ("audience", sts_audience()),
        ("scope", CLOUD_PLATFORM.to_owned()),
        ("requested_token_type", ACCESS_TOKEN_TYPE.to_owned()),
        ("subject_token", subject_token.to_owned()),
        ("subject_token_type", JWT_TYPE.to_owned()),
    ]
}

/// POST a form to STS; returns (status, JSON body).
pub async fn sts_post(emu: &Emulator, form: &[(&str, String)]) -> (u16, Value) {
    let resp = http()
        .post(format!("{}/v1/token", emu.base_url()))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}
