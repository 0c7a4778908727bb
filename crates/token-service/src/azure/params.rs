//! The `/token` parameters of the Microsoft Entra exchange, checked before any token is
//! issued: `azure_client_id` (the app's client ID, a GUID), `azure_tenant_id` (a GUID or a
//! domain name such as `contoso.onmicrosoft.com`) and `scope` (required; Entra's client
//! credentials want `<resource>/.default`).

use std::collections::BTreeMap;

use crate::error::Failure;
use crate::model::truncate;

/// `azure_client_id`.
pub const CLIENT_ID: &str = "azure_client_id";
/// `azure_tenant_id`.
pub const TENANT_ID: &str = "azure_tenant_id";

/// What a request asks of Entra.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AzureRequest<'r> {
    /// The app registration's application (client) ID.
    pub client_id: &'r str,
    /// The tenant: its ID or one of its domain names.
    pub tenant_id: &'r str,
    /// The scope asked of Entra, e.g. `https://graph.microsoft.com/.default`.
    pub scope: &'r str,
}

/// The Entra parameters of a request: `None` without `azure_client_id` and `azure_tenant_id`
/// (one without the other is refused); each one checked, refused with 400 naming it. `scope`
/// is the request's own parameter.
pub fn azure_request<'r>(
    params: &'r BTreeMap<String, String>,
    scope: Option<&'r str>,
) -> Result<Option<AzureRequest<'r>>, Failure> {
    let given = |name: &str| {
        params
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    };
    let (client_id, tenant_id) = match (given(CLIENT_ID), given(TENANT_ID)) {
        (None, None) => return Ok(None),
        (Some(c), Some(t)) => (c, t),
        (Some(_), None) => {
            return Err(Failure::invalid_request(
                "The parameter 'azure_client_id' needs 'azure_tenant_id': name the Entra tenant (its ID or domain) of the app, or remove 'azure_client_id'",
            ));
        }
        (None, Some(_)) => {
            return Err(Failure::invalid_request(
                "The parameter 'azure_tenant_id' needs 'azure_client_id': name the Entra app's client ID, or remove 'azure_tenant_id'",
            ));
        }
    };
    if !is_guid(client_id) {
        return Err(Failure::invalid_request(format!(
            "The parameter 'azure_client_id' ('{}') is not an Entra client ID: use the app registration's application (client) ID, a GUID such as 00000000-0000-0000-0000-000000000000",
            truncate(client_id, 80)
        )));
    }
    if !is_guid(tenant_id) && !is_domain(tenant_id) {
        return Err(Failure::invalid_request(format!(
            "The parameter 'azure_tenant_id' ('{}') is not an Entra tenant: use the tenant ID (a GUID) or one of its domain names (letters, digits, dots and dashes, e.g. contoso.onmicrosoft.com)",
            truncate(tenant_id, 80)
        )));
    }
    let Some(scope) = scope.filter(|s| !s.trim().is_empty()) else {
        return Err(Failure::invalid_request(
            "The parameter 'scope' is required with 'azure_client_id': name the resource to get an access token for, e.g. scope=https://graph.microsoft.com/.default",
        ));
    };
    Ok(Some(AzureRequest {
        client_id,
        tenant_id,
        scope,
    }))
}

/// Whether `text` is a GUID in its 8-4-4-4-12 hex form.
pub fn is_guid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Whether `text` is a domain name: labels of letters, digits and dashes (not at a label's
/// ends) separated by dots, at least two labels, at most 253 characters.
pub fn is_domain(text: &str) -> bool {
    let labels: Vec<&str> = text.split('.').collect();
    text.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            (1..=63).contains(&l.len())
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP: &str = "11111111-2222-3333-4444-555555555555";
    const TENANT: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
    const SCOPE: &str = "https://graph.microsoft.com/.default";

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[track_caller]
    fn refused(pairs: &[(&str, &str)], scope: Option<&str>, parameter: &str) {
        let given = params(pairs);
        let e = azure_request(&given, scope).unwrap_err();
        assert_eq!(e.kind(), crate::error::Kind::InvalidRequest);
        assert!(e.message().contains(parameter), "{pairs:?}: {e}");
    }

    #[test]
    fn guids_and_domains_are_told_apart() {
        assert!(is_guid(APP));
        assert!(is_guid("AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE"));
        for bad in [
            "",
            "1111111-2222-3333-4444-555555555555",
            "g1111111-2222-3333-4444-555555555555",
            "11111111222233334444555555555555",
            "11111111-2222-3333-4444-555555555555-",
        ] {
            assert!(!is_guid(bad), "{bad}");
        }
        assert!(is_domain("contoso.onmicrosoft.com"));
        assert!(is_domain("my-org.example"));
        for bad in [
            "", "contoso", "-a.com", "a-.com", "a..com", "a b.com", "a/b.com", "common/x",
        ] {
            assert!(!is_domain(bad), "{bad}");
        }
    }

    #[test]
    fn the_parameters_are_checked_each_refusal_naming_its_parameter() {
        assert_eq!(azure_request(&params(&[]), Some(SCOPE)).unwrap(), None);
        let app = (CLIENT_ID, APP);
        let tenant = (TENANT_ID, TENANT);
        let given = params(&[app, tenant]);
        let asked = azure_request(&given, Some(SCOPE)).unwrap().unwrap();
        assert_eq!(
            (asked.client_id, asked.tenant_id, asked.scope),
            (APP, TENANT, SCOPE)
        );
        let by_domain = params(&[app, (TENANT_ID, "contoso.onmicrosoft.com")]);
        assert!(azure_request(&by_domain, Some(SCOPE)).unwrap().is_some());
        refused(&[app], Some(SCOPE), "needs 'azure_tenant_id'");
        refused(&[tenant], Some(SCOPE), "needs 'azure_client_id'");
        refused(
            &[(CLIENT_ID, "my-app"), tenant],
            Some(SCOPE),
            "'azure_client_id' ('my-app')",
        );
        refused(
            &[app, (TENANT_ID, "not a tenant")],
            Some(SCOPE),
            "'azure_tenant_id'",
        );
        refused(
            &[app, (TENANT_ID, "../x")],
            Some(SCOPE),
            "'azure_tenant_id'",
        );
        refused(&[app, tenant], None, "'scope' is required");
        refused(&[app, tenant], Some(" "), "'scope' is required");
    }
}
