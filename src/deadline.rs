//! The caller's deadline, read from the `grpc-timeout` header.
//!
//! tonic enforces that header itself and answers CANCELLED when it expires;
//! callers expect DEADLINE_EXCEEDED. So the gateway works to a deadline a
//! little *earlier* than tonic's and answers DEADLINE_EXCEEDED itself, before
//! tonic's timer fires. The margin also leaves time for the answer to travel.

use std::time::Duration;

use tokio::time::Instant;

/// How much earlier than the caller's deadline the gateway gives up.
pub const DEADLINE_MARGIN: Duration = Duration::from_millis(20);

/// Parses a `grpc-timeout` value: up to 8 digits and a unit (H, M, S, m, u, n).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.checked_mul(3600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// The instant by which the gateway must answer: the caller's deadline less
/// [`DEADLINE_MARGIN`], or `default` from now when the caller set none.
pub fn deadline_for(grpc_timeout: Option<&str>, default: Duration, arrived: Instant) -> Instant {
    match grpc_timeout.and_then(parse_grpc_timeout) {
        Some(timeout) => arrived + timeout.saturating_sub(DEADLINE_MARGIN),
        None => arrived + default,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_grpc_timeout("10S"), Some(Duration::from_secs(10)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(
            parse_grpc_timeout("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
    }

    #[test]
    fn rejects_malformed_values() {
        for bad in ["", "S", "10", "10x", "-1S", "123456789S", "1.5S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn deadline_is_a_margin_before_the_callers() {
        let now = Instant::now();
        let default = Duration::from_secs(30);
        assert_eq!(
            deadline_for(Some("1S"), default, now),
            now + Duration::from_secs(1) - DEADLINE_MARGIN
        );
        assert_eq!(deadline_for(Some("5m"), default, now), now);
        assert_eq!(deadline_for(None, default, now), now + default);
        assert_eq!(deadline_for(Some("junk"), default, now), now + default);
    }
}
