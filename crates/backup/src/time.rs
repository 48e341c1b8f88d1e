//! RFC 3339 timestamps in UTC for `--to-time` and listings: parse
//! `2026-11-26T10:59:00Z`, `2026-11-26T10:59:00.250+01:00`; print with
//! milliseconds and `Z`. Pure arithmetic (days-from-civil); never reads a
//! clock or a time zone database.

/// Parses an RFC 3339 date-time into unix milliseconds.
pub fn parse_rfc3339(text: &str) -> Result<u64, String> {
    let bad = |why: &str| format!("{text:?} is not an RFC 3339 time like 2026-11-26T10:59:00Z ({why})");
    let b = text.trim().as_bytes();
    if b.len() < 20 {
        return Err(bad("too short"));
    }
    let num = |from: usize, to: usize| -> Result<i64, String> {
        std::str::from_utf8(&b[from..to]).ok().and_then(|s| s.parse::<i64>().ok()).ok_or_else(|| bad("not a number"))
    };
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' || b[16] != b':' {
        return Err(bad("wrong separators"));
    }
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return Err(bad("field out of range"));
    }
    let mut pos = 19;
    let mut millis = 0i64;
    if b[pos] == b'.' {
        let start = pos + 1;
        pos = start;
        while pos < b.len() && b[pos].is_ascii_digit() {
            pos += 1;
        }
        if pos == start {
            return Err(bad("empty fraction"));
        }
        let digits = &text.trim()[start..pos.min(start + 3)];
        millis = digits.parse::<i64>().map_err(|_| bad("bad fraction"))? * 10i64.pow(3 - digits.len() as u32);
    }
    let offset_minutes = match b.get(pos) {
        Some(b'Z' | b'z') if pos + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if pos + 6 == b.len() && b[pos + 3] == b':' => {
            let m = num(pos + 1, pos + 3)? * 60 + num(pos + 4, pos + 6)?;
            if *sign == b'+' {
                m
            } else {
                -m
            }
        }
        _ => return Err(bad("missing or malformed zone: use Z or +hh:mm")),
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_minutes * 60;
    let ms = secs * 1000 + millis;
    u64::try_from(ms).map_err(|_| bad("before 1970"))
}

/// Prints unix milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format_rfc3339(unix_ms: u64) -> String {
    let secs = (unix_ms / 1000) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, rem % 3600 / 60, rem % 60, unix_ms % 1000)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { yoe + era * 400 + 1 } else { yoe + era * 400 }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_utc_offsets_and_fractions() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(parse_rfc3339("2026-11-26T10:59:00Z").unwrap(), 1_795_690_740_000);
        assert_eq!(parse_rfc3339("2026-11-26T11:59:00.25+01:00").unwrap(), 1_795_690_740_250);
        assert!(parse_rfc3339("2026-11-26 10:59").is_err());
        assert!(parse_rfc3339("2026-13-26T10:59:00Z").is_err());
        assert!(parse_rfc3339("2026-11-26T10:59:00").is_err());
    }

    #[test]
    fn format_is_the_inverse_of_parse() {
        for ms in [0u64, 1_795_690_740_250, 951_782_400_000, 4_102_444_799_999] {
            assert_eq!(parse_rfc3339(&format_rfc3339(ms)).unwrap(), ms, "{}", format_rfc3339(ms));
        }
    }
}
