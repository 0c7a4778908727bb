//! When a URL is fetched next. A CRL in force is refreshed before its nextUpdate: after a
//! random 50 to 80 % of the time it has left (jitter, so many replicas do not ask at once),
//! never sooner than [`MIN_REFRESH`] and never later than [`MAX_REFRESH`] (a CA may publish
//! early); one without nextUpdate every [`MAX_REFRESH`]. A failed fetch (or a CRL past its
//! nextUpdate already) is retried with exponential backoff from [`FIRST_RETRY`] up to
//! [`MAX_RETRY`], with the same jitter. Times are seconds since the epoch.

/// The soonest refresh after a successful fetch.
pub const MIN_REFRESH: i64 = 5;
/// The latest refresh after a successful fetch.
pub const MAX_REFRESH: i64 = 6 * 3600;
/// The first retry after a failure.
pub const FIRST_RETRY: i64 = 5;
/// The longest pause between retries.
pub const MAX_RETRY: i64 = 15 * 60;

/// A random fraction from `low` to `high` (per mille).
fn jitter(low: i64, high: i64) -> i64 {
    let mut bytes = [0u8; 2];
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    low + i64::from(u16::from_le_bytes(bytes)) % (high - low + 1)
}

/// When to refresh a CRL fetched at `now` whose nextUpdate is `next_update`.
pub fn refresh_at(now: i64, next_update: Option<i64>) -> i64 {
    let Some(next) = next_update else {
        return now + MAX_REFRESH;
    };
    let left = next.saturating_sub(now);
    let wait = left.saturating_mul(jitter(500, 800)) / 1000;
    now + wait.clamp(MIN_REFRESH, MAX_REFRESH)
}

/// When to retry after the `failures`-th failure in a row (from 1) at `now`.
pub fn retry_at(now: i64, failures: u32) -> i64 {
    let doubled = FIRST_RETRY.saturating_mul(1_i64 << failures.saturating_sub(1).min(20));
    let wait = doubled.min(MAX_RETRY).saturating_mul(jitter(800, 1200)) / 1000;
    now + wait.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_comes_before_next_update_within_bounds() {
        for _ in 0..100 {
            let at = refresh_at(1000, Some(1000 + 3600));
            assert!((1000 + 1800..=1000 + 2880).contains(&at), "{at}");
        }
        assert_eq!(refresh_at(1000, Some(1001)), 1000 + MIN_REFRESH);
        assert_eq!(
            refresh_at(1000, Some(1000 + 100 * 86400)),
            1000 + MAX_REFRESH
        );
        assert_eq!(refresh_at(1000, None), 1000 + MAX_REFRESH);
    }

    #[test]
    fn retries_back_off_exponentially_up_to_the_cap() {
        let waits: Vec<i64> = (1..=12).map(|n| retry_at(0, n)).collect();
        assert!((4..=6).contains(&waits[0]), "{waits:?}");
        assert!((8..=12).contains(&waits[1]), "{waits:?}");
        assert!(waits.iter().all(|w| *w <= MAX_RETRY * 12 / 10), "{waits:?}");
        assert!(waits[11] >= MAX_RETRY * 8 / 10, "{waits:?}");
    }
}
