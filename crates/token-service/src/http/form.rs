//! Strict `application/x-www-form-urlencoded` parsing: UTF-8 only, and every parameter at most
//! once (RFC 6749 §3.2: "Request and response parameters MUST NOT be included more than once").

use std::collections::BTreeMap;

use percent_encoding::percent_decode;

/// Why a form body was refused; each message says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    /// The body is not UTF-8.
    #[error("The request body is not valid UTF-8")]
    NotUtf8,
    /// A `&`-separated part has no name before its `=`.
    #[error("The request body has a parameter without a name")]
    Unnamed,
    /// A parameter appears twice (RFC 6749 §3.2); the name is cut to 64 characters.
    #[error("The parameter '{0}' is given more than once")]
    Repeated(String),
    /// A percent-escape decodes to bytes that are not UTF-8.
    #[error("A form parameter is not valid UTF-8 after percent-decoding")]
    EscapeNotUtf8,
}

/// Parses a form body into a map; fails with a [`FormError`] that says what to fix.
pub fn parse_form(body: &[u8]) -> Result<BTreeMap<String, String>, FormError> {
    let body = std::str::from_utf8(body).map_err(|_| FormError::NotUtf8)?;
    let mut params = BTreeMap::new();
    for pair in body.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = decode(name)?;
        let value = decode(value)?;
        if name.is_empty() {
            return Err(FormError::Unnamed);
        }
        if params.contains_key(&name) {
            return Err(FormError::Repeated(crate::model::truncate(&name, 64)));
        }
        params.insert(name, value);
    }
    Ok(params)
}

fn decode(text: &str) -> Result<String, FormError> {
    let plus = text.replace('+', " ");
    percent_decode(plus.as_bytes())
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| FormError::EscapeNotUtf8)
}

#[cfg(test)]
mod tests {
    use super::parse_form;

    #[test]
    fn form_decodes_plus_and_percent_escapes() {
        let p = parse_form(b"grant_type=client_credentials&scope=a+b%2Fc").unwrap();
        assert_eq!(p["grant_type"], "client_credentials");
        assert_eq!(p["scope"], "a b/c");
    }

    #[test]
    fn form_with_duplicate_parameter_is_refused() {
        let e = parse_form(b"grant_type=a&grant_type=b").unwrap_err();
        assert_eq!(
            e.to_string(),
            "The parameter 'grant_type' is given more than once"
        );
    }

    #[test]
    fn form_with_invalid_utf8_is_refused() {
        assert!(parse_form(b"a=\xff").is_err());
        assert!(parse_form(b"a=%ff").is_err());
    }

    #[test]
    fn form_with_empty_pairs_and_missing_values_parses() {
        let p = parse_form(b"&a&&b=").unwrap();
        assert_eq!(p["a"], "");
        assert_eq!(p["b"], "");
        assert!(parse_form(b"=x").is_err());
    }
}
