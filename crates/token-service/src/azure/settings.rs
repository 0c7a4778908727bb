//! Settings of the Microsoft Entra exchange: the audience of the ID tokens the broker presents
//! to Entra as client assertions and the authority host of Entra's token endpoint. The
//! declarations and [`AzureConfig`], which they fill. Read through `config::reader`; reads no
//! environment.

use crate::config::reader::{Reader, Setting};

/// `AZURE_AUDIENCE`.
pub const AUDIENCE: Setting = Setting::text(
    "AZURE_AUDIENCE",
    Some("api://AzureADTokenExchange"),
    "Audience (aud) of the ID token presented to Microsoft Entra as client assertion for a request with 'azure_client_id'; allowed like any requested audience (TOKEN_AUDIENCE or TOKEN_AUDIENCES, and the policy's 'audiences'); the federated credential's audience",
);
/// `AZURE_AUTHORITY_HOST`.
pub const AUTHORITY_HOST: Setting = Setting::url(
    "AZURE_AUTHORITY_HOST",
    Some("https://login.microsoftonline.com"),
    "Microsoft Entra authority host; tokens come from {host}/{tenant}/oauth2/v2.0/token (a national cloud, or an emulator)",
);

/// Every setting of the Entra exchange, in help order.
pub const SETTINGS: &[Setting] = &[AUDIENCE, AUTHORITY_HOST];

/// How Token Service reaches Microsoft Entra.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureConfig {
    /// `AZURE_AUDIENCE`.
    pub audience: String,
    /// `AZURE_AUTHORITY_HOST`, without a trailing `/`.
    pub authority_host: String,
}

impl AzureConfig {
    /// Reads the audience and the authority host.
    pub fn read(r: &mut Reader<'_>) -> Self {
        let audience = r.text(&AUDIENCE).unwrap_or_default();
        if audience.trim().is_empty() {
            r.fail(
                AUDIENCE.name,
                "the audience is empty; leave AZURE_AUDIENCE unset for api://AzureADTokenExchange, or name the audience of the app's federated credential",
            );
        }
        let authority_host = r.url(&AUTHORITY_HOST).unwrap_or_default();
        Self {
            audience,
            authority_host: authority_host.trim_end_matches('/').to_owned(),
        }
    }
}
