//! Human durations for the command line and scenario files: `250us`, `5ms`, `60s`, `1.5m`,
//! `2min`, `2h`, or plain seconds.

use std::time::Duration;

/// Parses a duration; `None` for anything else (negative, unknown unit, not a number).
pub fn parse(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v >= 0.0)?;
    let seconds = match unit.trim() {
        "us" => value / 1e6,
        "ms" => value / 1e3,
        "" | "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(seconds).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse("60s"), Some(Duration::from_secs(60)));
        assert_eq!(parse("1m"), Some(Duration::from_secs(60)));
        assert_eq!(parse("2min"), Some(Duration::from_secs(120)));
        assert_eq!(parse("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse("250us"), Some(Duration::from_micros(250)));
        assert_eq!(parse(" 30 "), Some(Duration::from_secs(30)));
        assert_eq!(parse("x"), None);
        assert_eq!(parse("5parsecs"), None);
    }
}
