//! `GET /aws/credentials`: the endpoint of the AWS container credential provider, so an
//! unmodified AWS SDK gets the credentials of `--aws-role-arn` with
//! `AWS_CONTAINER_CREDENTIALS_FULL_URI=http://127.0.0.1:PORT/aws/credentials` and
//! `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=FILE` (the `--aws-authorization-token-file`).
//!
//! - A request's `Authorization` header must equal the token file's contents (compared in
//!   constant time), else 401 (missing) or 403 (another value). `serve` writes a random
//!   token into the file (mode 0600) when it does not exist, else reads the file's.
//! - The answer is `{"AccessKeyId", "SecretAccessKey", "Token", "Expiration"}`. The
//!   credentials are kept in a [`Slot`] (refreshed ahead of expiry by its keeper, one refresh
//!   in flight), never handed out with less than 5 minutes left: without usable ones the
//!   answer is 503 (403 when the broker refused) with the reason.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use hyper::body::Incoming;
use hyper::header::AUTHORIZATION;
use hyper::{Request, StatusCode};

use super::App;
use super::http::{Answer, json_answer, text, unavailable};
use super::slot::{Kind, Slot};
use crate::aws::{AwsRole, constant_time_eq};
use crate::broker::{Broker, Query};

/// The endpoint's path.
pub const PATH: &str = "/aws/credentials";

/// Why the authorization token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AwsEndpointError {
    #[error(
        "--aws-role-arn needs --aws-authorization-token-file FILE (or TOKEN_CLIENT_AWS_AUTHORIZATION_TOKEN_FILE): the token AWS SDKs send from AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"
    )]
    NoTokenFile,
    #[error(
        "--aws-authorization-token-file {path} could not be read or created ({detail}); check that its folder exists and is writable"
    )]
    TokenFile { path: String, detail: String },
    #[error(
        "--aws-authorization-token-file {0} holds no token (or not one line of visible ASCII); delete it to have serve write a new one"
    )]
    BadToken(String),
}

/// The endpoint's state: the credentials' slot and the token callers must send.
pub struct AwsEndpoint {
    pub slot: Arc<Slot>,
    pub file: PathBuf,
    authorization: String,
}

impl AwsEndpoint {
    /// The endpoint for `role`, its token read from `file` or generated into it.
    pub fn new(broker: Arc<Broker>, role: AwsRole, file: &Path) -> Result<Self, AwsEndpointError> {
        let query = Query {
            aws: Some(role),
            ..Query::default()
        };
        Ok(Self {
            slot: Slot::new(Kind::AwsCredentials, query, broker),
            file: file.to_path_buf(),
            authorization: token_of(file)?,
        })
    }
}

/// The file's token, or a new random one written into it (mode 0600, never overwriting).
fn token_of(file: &Path) -> Result<String, AwsEndpointError> {
    let error = |e: std::io::Error| AwsEndpointError::TokenFile {
        path: file.display().to_string(),
        detail: e.to_string(),
    };
    match std::fs::read(file) {
        Ok(bytes) => {
            let token = String::from_utf8(bytes).unwrap_or_default();
            let token = token.trim();
            let visible = token.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
            if token.is_empty() || !visible {
                return Err(AwsEndpointError::BadToken(file.display().to_string()));
            }
            Ok(token.to_owned())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let token = random_token().map_err(error)?;
            create_new(file, token.as_bytes()).map_err(error)?;
            Ok(token)
        }
        Err(e) => Err(error(e)),
    }
}

/// 32 random bytes (the system's generator), base64url.
fn random_token() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

fn create_new(file: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut f = options.open(file)?;
    f.write_all(contents)?;
    f.sync_all()
}

/// `GET /aws/credentials`.
pub async fn answer(app: &App, request: &Request<Incoming>) -> Answer {
    let Some(endpoint) = &app.aws else {
        return text(
            StatusCode::NOT_FOUND,
            "token-client serve has no AWS role: start it with --aws-role-arn ARN and --aws-authorization-token-file FILE\n",
        );
    };
    let Some(sent) = request.headers().get(AUTHORIZATION) else {
        return text(
            StatusCode::UNAUTHORIZED,
            "The Authorization header is missing: send the contents of the --aws-authorization-token-file (AWS SDKs do with AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE)\n",
        );
    };
    if !constant_time_eq(sent.as_bytes(), endpoint.authorization.as_bytes()) {
        return text(
            StatusCode::FORBIDDEN,
            "The Authorization header is not the token of the --aws-authorization-token-file; point AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE at that file\n",
        );
    }
    match endpoint.slot.get().await {
        Ok(current) => match current.aws {
            Some(credentials) => json_answer(StatusCode::OK, &credentials.container()),
            None => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "token-client serve has no AWS credentials\n",
            ),
        },
        Err(e) => unavailable(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_file_is_created_once_with_mode_0600() {
        let dir = std::env::temp_dir().join(format!("aws-token-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        let first = token_of(&file).unwrap();
        assert!(first.len() >= 40, "{first}");
        assert_eq!(token_of(&file).unwrap(), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&file, "given-token\n").unwrap();
        assert_eq!(token_of(&file).unwrap(), "given-token");
        std::fs::write(&file, "\n").unwrap();
        assert!(token_of(&file).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
