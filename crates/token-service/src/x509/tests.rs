use super::*;

#[test]
fn client_id_attribute_parses_its_four_names() {
    for (text, attribute) in [
        ("spiffe", ClientIdAttribute::Spiffe),
        ("DNS_SAN", ClientIdAttribute::DnsSan),
        ("uri_san", ClientIdAttribute::UriSan),
        (" sha256 ", ClientIdAttribute::Sha256),
    ] {
        assert_eq!(ClientIdAttribute::parse(text), Some(attribute));
        assert_eq!(ClientIdAttribute::parse(attribute.name()), Some(attribute));
    }
    assert_eq!(ClientIdAttribute::parse("cn"), None);
}

#[test]
fn facts_refuse_garbage() {
    assert!(facts(b"not a certificate").is_err());
    assert!(facts(&[]).is_err());
}
