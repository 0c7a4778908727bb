//! The rules about a sample token: algorithm, `kid` and signature against the published
//! keys, `iss` byte-equal to the issuer, `sub`, `iat` and `exp`, lifetime, size and clock skew.

use serde_json::Value;

use super::jwt::Jwt;
use super::rules::{
    AWS_MAX_TOKEN_CHARS, AZURE_REREAD, CLOUDS, Cloud, MAX_LIFETIME, MAX_SKEW, Observed, Report,
    Status, TokenOrigin,
};

/// Every rule of this module, with its clouds, for skipping them all at once.
fn skip_all(report: &mut Report, why: &str) {
    for rule in [
        "token-kid",
        "token-signature",
        "token-iss-matches",
        "token-sub",
        "token-iat",
    ] {
        report.skip(rule, Cloud::All, why);
    }
    for rule in ["token-exp", "token-not-expired", "clock-skew-token"] {
        report.skip(rule, Cloud::All, why);
    }
    for cloud in CLOUDS {
        report.skip("token-algorithm", cloud, why);
        report.skip("token-lifetime", cloud, why);
    }
    report.skip("token-size", Cloud::Aws, why);
}

/// The token's rules; `keys` is the JWK Set when it was fetched.
pub fn check(report: &mut Report, observed: &Observed, keys: Option<&[Value]>, now: i64) {
    let Some((origin, token)) = &observed.token else {
        report.skip(
            "token-obtained",
            Cloud::All,
            "no sample token: pass --cert and --key (or --token FILE)",
        );
        skip_all(report, "no sample token");
        return;
    };
    let parsed = token
        .clone()
        .and_then(|t| Jwt::parse(&t).map_err(|e| e.to_string()));
    let jwt = match parsed {
        Ok(jwt) => {
            let how = match origin {
                TokenOrigin::Requested => "requested from the service",
                TokenOrigin::File => "read from --token",
            };
            report.check("token-obtained", Cloud::All, true, how.into(), "");
            jwt
        }
        Err(e) => {
            report.check(
                "token-obtained",
                Cloud::All,
                false,
                e,
                "pass --ca when the service's certificate is from a private CA, and a client certificate the service accepts (see `token-service policy explain`)",
            );
            skip_all(report, "no sample token");
            return;
        }
    };
    header(report, &jwt, keys);
    claims(report, &jwt, &observed.issuer);
    times(report, &jwt, *origin, now);
}

fn header(report: &mut Report, jwt: &Jwt, keys: Option<&[Value]>) {
    let alg = jwt.header_str("alg").unwrap_or("(none)");
    for cloud in CLOUDS {
        report.check(
            "token-algorithm",
            cloud,
            cloud.algorithms().contains(&alg),
            format!("alg {alg}; accepted: {}", cloud.algorithms().join(", ")),
            "sign with an algorithm the cloud accepts: an RSA key (RS256) works with every cloud (SIGNING_KEY_FILE)",
        );
    }
    let kid = jwt.header_str("kid");
    let key = kid.and_then(|kid| {
        keys?
            .iter()
            .find(|k| k.get("kid").and_then(Value::as_str) == Some(kid))
    });
    let (ok, detail) = match (kid, keys, key) {
        (None, _, _) => (false, "the token's header has no kid".to_owned()),
        (Some(kid), None, _) => (true, format!("kid {kid} (the JWK Set was not fetched)")),
        (Some(kid), Some(_), None) => (false, format!("kid {kid} is not in the JWK Set")),
        (Some(kid), Some(_), Some(_)) => (true, format!("kid {kid} is in the JWK Set")),
    };
    report.check(
        "token-kid",
        Cloud::All,
        ok,
        detail,
        "sign with a key that is published in jwks_uri, and name it in the header's kid",
    );
    match key {
        Some(key) => report.check(
            "token-signature",
            Cloud::All,
            jwt.verifies_with(key),
            format!("verified with the published key {}", kid.unwrap_or("")),
            "sign with the private key of the published key",
        ),
        None => report.skip(
            "token-signature",
            Cloud::All,
            "no published key for the token's kid",
        ),
    }
}

fn claims(report: &mut Report, jwt: &Jwt, issuer: &str) {
    let iss = jwt.claims.get("iss").and_then(Value::as_str);
    report.check(
        "token-iss-matches",
        Cloud::All,
        iss == Some(issuer),
        format!(
            "iss is {}, the clouds are told {issuer:?}",
            iss.map_or_else(|| "(none)".to_owned(), |i| format!("{i:?}"))
        ),
        "set TOKEN_ISSUER to exactly the URL registered with the cloud",
    );
    let sub = jwt.claims.get("sub").and_then(Value::as_str);
    report.check(
        "token-sub",
        Cloud::All,
        sub.is_some_and(|s| !s.is_empty()),
        match sub {
            Some(sub) if !sub.is_empty() => format!("sub is {sub:?}"),
            _ => "the token has no sub".into(),
        },
        "issue tokens with a sub claim (the client ID)",
    );
    report.check(
        "token-size",
        Cloud::Aws,
        jwt.chars <= AWS_MAX_TOKEN_CHARS,
        format!("{} characters (at most {AWS_MAX_TOKEN_CHARS})", jwt.chars),
        "issue smaller tokens (fewer or shorter claims)",
    );
}

fn times(report: &mut Report, jwt: &Jwt, origin: TokenOrigin, now: i64) {
    let int = |name: &str| jwt.claims.get(name).and_then(Value::as_i64);
    let (iat, exp) = (int("iat"), int("exp"));
    report.check(
        "token-iat",
        Cloud::All,
        iat.is_some(),
        iat.map_or_else(
            || "the token has no integer iat".into(),
            |t| format!("iat is {t}"),
        ),
        "issue tokens with iat in whole seconds",
    );
    report.check(
        "token-exp",
        Cloud::All,
        exp.is_some_and(|exp| iat.is_none_or(|iat| exp > iat)),
        exp.map_or_else(
            || "the token has no integer exp".into(),
            |t| format!("exp is {t}"),
        ),
        "issue tokens with exp in whole seconds, after iat",
    );
    match exp {
        Some(exp) => report.check(
            "token-not-expired",
            Cloud::All,
            exp > now,
            format!("expires in {} s", exp - now),
            "use a token that has not expired",
        ),
        None => report.skip("token-not-expired", Cloud::All, "no exp"),
    }
    let (Some(iat), Some(exp)) = (iat, exp) else {
        for cloud in CLOUDS {
            report.skip("token-lifetime", cloud, "no iat or exp");
        }
        report.skip("clock-skew-token", Cloud::All, "no iat");
        return;
    };
    lifetime(report, exp - iat);
    let (ok, detail) = match origin {
        TokenOrigin::Requested => (
            (iat - now).abs() <= MAX_SKEW,
            format!(
                "iat is {} s from this machine's clock (at most {MAX_SKEW} s)",
                iat - now
            ),
        ),
        TokenOrigin::File => (
            iat - now <= MAX_SKEW,
            format!(
                "iat is {} s from now (at most {MAX_SKEW} s in the future)",
                iat - now
            ),
        ),
    };
    report.check(
        "clock-skew-token",
        Cloud::All,
        ok,
        detail,
        "synchronize the clocks of the service and of this machine (NTP)",
    );
}

fn lifetime(report: &mut Report, seconds: i64) {
    let fix = "shorten TOKEN_VALIDITY (or the policy's lifetime for this client)";
    for cloud in CLOUDS {
        let detail = format!("the token lives {seconds} s (at most {MAX_LIFETIME} s)");
        if seconds > MAX_LIFETIME {
            report.check("token-lifetime", cloud, false, detail, fix);
        } else if cloud == Cloud::Entra && seconds <= AZURE_REREAD {
            report.add(
                "token-lifetime",
                cloud,
                Status::Warn,
                format!("{detail}; Azure's SDK re-reads a federated token file only every {AZURE_REREAD} s"),
                "for a token file read by azure-identity, issue tokens that live longer than 10 minutes",
            );
        } else {
            report.check("token-lifetime", cloud, true, detail, fix);
        }
    }
}
