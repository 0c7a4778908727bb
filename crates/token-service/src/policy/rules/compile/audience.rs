//! The audience keys of a rule as written: `audiences` (globs over the audiences a client may
//! name with the `/token` parameter `audience`; absent: any of `TOKEN_AUDIENCES`, `[]`: none
//! but the default) and `[rule.audience."AUD"]` tables (`sub`, a template like `client_id`'s,
//! and `token_lifetime` for tokens of that one audience). Both belong to allow rules; a table
//! whose audience the rule's globs refuse could never apply and is refused too.

use super::*;

/// `[rule.audience."AUD"]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAudience {
    sub: Option<Spanned<String>>,
    token_lifetime: Option<Spanned<i64>>,
}

/// The tables of `[rule.audience."AUD"]`, by audience.
pub(super) type RawAudiences = BTreeMap<String, Spanned<RawAudience>>;

/// A deny rule may have neither key: where the first one is, and the message.
pub(super) fn refuse_in_deny(
    rule: &str,
    audiences: Option<&Spanned<OneOrMany>>,
    each: Option<&RawAudiences>,
) -> Result<(), Located> {
    let at = audiences
        .map(|a| (a.span().start, "audiences"))
        .or_else(|| {
            each.and_then(|e| e.values().next())
                .map(|e| (e.span().start, "audience"))
        });
    match at {
        Some((at, field)) => Err((
            at,
            format!("rule '{rule}': '{field}' applies to allow rules only; this rule denies"),
        )),
        None => Ok(()),
    }
}

/// Compiles an allow rule's `audiences` and `audience` tables.
pub(super) fn compile(
    rule: &str,
    audiences: Option<Spanned<OneOrMany>>,
    each: Option<RawAudiences>,
) -> Result<AudienceRules, Located> {
    let allowed = audiences
        .map(|list| {
            let at = list.span().start;
            list.into_inner()
                .0
                .iter()
                .map(|p| {
                    Pattern::new(p, GlobKind::Plain)
                        .map_err(|e| (at, format!("rule '{rule}': audiences: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    let mut compiled = BTreeMap::new();
    for (audience, raw) in each.unwrap_or_default() {
        let at = raw.span().start;
        let what = format!("rule '{rule}': audience.\"{audience}\"");
        if audience.trim().is_empty() {
            return Err((
                at,
                format!(
                    "rule '{rule}': an audience table needs an audience: [rule.audience.\"api://AzureADTokenExchange\"]"
                ),
            ));
        }
        if let Some(allowed) = &allowed
            && first_match(allowed, &audience).is_none()
        {
            let listed = if allowed.is_empty() {
                "(none allowed)".to_owned()
            } else {
                sources(allowed)
            };
            return Err((
                at,
                format!(
                    "{what}: the audience matches none of the rule's audiences {listed}, so the table could never apply; add it to 'audiences'"
                ),
            ));
        }
        let raw = raw.into_inner();
        let sub = raw
            .sub
            .map(|s| {
                Template::parse(s.get_ref())
                    .map_err(|e| (s.span().start, format!("{what}: sub: {e}")))
            })
            .transpose()?;
        let lifetime = match raw.token_lifetime {
            None => None,
            Some(l) if LIFETIME_BOUNDS.contains(l.get_ref()) => Some(*l.get_ref()),
            Some(l) => {
                return Err((
                    l.span().start,
                    format!(
                        "{what}: token_lifetime {} is out of bounds; expected seconds from {} to {} (TOKEN_VALIDITY's bounds)",
                        l.get_ref(),
                        LIFETIME_BOUNDS.start(),
                        LIFETIME_BOUNDS.end()
                    ),
                ));
            }
        };
        compiled.insert(audience, AudienceRule { sub, lifetime });
    }
    Ok(AudienceRules {
        allowed,
        each: compiled,
    })
}
