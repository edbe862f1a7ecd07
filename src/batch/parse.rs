//! Reading typed values out of text as people write them in French
//! workbooks: `1 234,56`, `12,50 €`, `15/03/2026`, Excel serial dates,
//! `oui`/`non`.

use chrono::{NaiveDate, NaiveDateTime, NaiveTime};

use crate::config::mapping::NumberFormat;

/// Why a text could not be read as a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumberError {
    NotANumber,
    NotAnInteger,
    TooLarge,
}

/// Characters used as thousands separators: space, NBSP, narrow NBSP,
/// thin space, figure space, apostrophes.
fn is_group_sep(c: char) -> bool {
    matches!(
        c,
        ' ' | '\u{a0}' | '\u{202f}' | '\u{2009}' | '\u{2007}' | '\'' | '\u{2019}'
    )
}

/// Read a decimal number. Currency signs and thousands separators are
/// dropped; `(12,50)` and a trailing `-` are negative.
pub fn parse_number(s: &str, fmt: NumberFormat) -> Result<f64, NumberError> {
    // the common case, plain digits (codes, barcodes, quantities), without
    // the allocations below: an integer below 10^18 converts to the f64
    // nearest it, as parsing its text does
    if (1..=18).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<u64>()
            .map(|v| v as f64)
            .map_err(|_| NumberError::NotANumber);
    }
    let mut t = s.trim_matches(|c: char| c.is_whitespace() || c == '\u{a0}' || c == '\u{202f}');
    // cheap rejection of most text ("HYD-2040", "n/a") before any allocation
    match t.chars().next() {
        None => return Err(NumberError::NotANumber),
        Some(c)
            if !(c.is_ascii_digit()
                || matches!(c, '-' | '+' | '.' | ',' | '(' | '€' | '$' | '£')) =>
        {
            return Err(NumberError::NotANumber);
        }
        _ => {}
    }
    let mut negative = false;
    if t.starts_with('(') && t.ends_with(')') {
        negative = true;
        t = &t[1..t.len() - 1];
    }
    // currency and unit markers
    let mut cleaned = String::with_capacity(t.len());
    let trimmed = t
        .trim_end_matches(|c: char| c.is_whitespace() || is_group_sep(c))
        .trim_end_matches("EUR")
        .trim_end_matches("eur");
    for c in trimmed.chars() {
        match c {
            '€' | '$' | '£' => {}
            c if is_group_sep(c) => cleaned.push('_'),
            c => cleaned.push(c),
        }
    }
    let mut body = cleaned.trim_matches('_').to_string();
    if let Some(rest) = body.strip_suffix('-') {
        negative = !negative;
        body = rest.trim_end_matches('_').to_string();
    }
    if let Some(rest) = body.strip_prefix('-') {
        negative = !negative;
        body = rest.trim_start_matches('_').to_string();
    } else if let Some(rest) = body.strip_prefix('+') {
        body = rest.trim_start_matches('_').to_string();
    }
    if body.is_empty() {
        return Err(NumberError::NotANumber);
    }
    // decide the decimal separator
    let commas = body.matches(',').count();
    let dots = body.matches('.').count();
    let decimal = match (commas, dots) {
        (0, 0) => None,
        (c, d) if c > 0 && d > 0 => {
            // the last one is the decimal separator
            let lc = body.rfind(',').unwrap_or(0);
            let ld = body.rfind('.').unwrap_or(0);
            if lc > ld { Some(',') } else { Some('.') }
        }
        (1, 0) => match fmt {
            NumberFormat::En => {
                if comma_groups_thousands(&body) {
                    None
                } else {
                    Some(',')
                }
            }
            _ => Some(','),
        },
        (_, 0) => None, // 1,234,567
        (0, 1) => match fmt {
            NumberFormat::Fr => {
                if dot_groups_thousands(&body) {
                    None
                } else {
                    Some('.')
                }
            }
            _ => Some('.'),
        },
        (0, _) => None, // 1.234.567
        _ => None,
    };
    if body.contains(['e', 'E']) && !body.contains(['_', ',']) {
        // scientific notation as Excel writes it: 1.5E+3
        let v: f64 = body.parse().map_err(|_| NumberError::NotANumber)?;
        return finite(if negative { -v } else { v });
    }
    let (int_part, frac_part) = match decimal {
        Some(d) => match body.rsplit_once(d) {
            Some((a, b)) if !a.contains(d) => (a, Some(b)),
            _ => return Err(NumberError::NotANumber),
        },
        None => (body.as_str(), None),
    };
    let segs: Vec<&str> = int_part.split(['_', ',', '.']).collect();
    if segs.len() > 1
        && (!(1..=3).contains(&segs[0].len()) || segs[1..].iter().any(|s| s.len() != 3))
    {
        return Err(NumberError::NotANumber);
    }
    let mut digits: String = segs.concat();
    if !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(NumberError::NotANumber);
    }
    if let Some(f) = frac_part {
        if !f.chars().all(|c| c.is_ascii_digit()) || (f.is_empty() && digits.is_empty()) {
            return Err(NumberError::NotANumber);
        }
        digits.push('.');
        digits.push_str(f);
    }
    if digits.is_empty() {
        return Err(NumberError::NotANumber);
    }
    let v: f64 = digits.parse().map_err(|_| NumberError::NotANumber)?;
    finite(if negative { -v } else { v })
}

fn finite(v: f64) -> Result<f64, NumberError> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(NumberError::TooLarge)
    }
}

/// `1,234` and `12,345,678` group thousands with commas.
fn comma_groups_thousands(body: &str) -> bool {
    let parts: Vec<&str> = body.split(',').collect();
    parts.len() > 1
        && parts[1..]
            .iter()
            .all(|p| p.len() == 3 && p.chars().all(|c| c.is_ascii_digit()))
}

fn dot_groups_thousands(body: &str) -> bool {
    let parts: Vec<&str> = body.split('.').collect();
    parts.len() > 1
        && parts[1..]
            .iter()
            .all(|p| p.len() == 3 && p.chars().all(|c| c.is_ascii_digit()))
}

/// Read a whole number; `12,0` is 12, `12,5` is not an integer.
pub fn parse_integer(s: &str, fmt: NumberFormat) -> Result<i64, NumberError> {
    to_integer(parse_number(s, fmt)?)
}

/// A number that must be whole and fit an i64 exactly.
pub fn to_integer(v: f64) -> Result<i64, NumberError> {
    if v.fract() != 0.0 {
        return Err(NumberError::NotAnInteger);
    }
    if v.abs() > 9.007_199_254_740_992e15 {
        return Err(NumberError::TooLarge);
    }
    Ok(v as i64)
}

/// Whether a text reads as a number (for profiling "numbers stored as text").
pub fn looks_numeric(s: &str) -> bool {
    parse_number(s, NumberFormat::Auto).is_ok()
}

/// 10^n as f64 (a table up to 10^22, exact; `powi` above).
#[inline]
pub fn pow10(n: u8) -> f64 {
    const P: [f64; 23] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
        1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
    ];
    P.get(n as usize)
        .copied()
        .unwrap_or_else(|| 10f64.powi(n as i32))
}

/// Round to `scale` decimal places, half away from zero.
pub fn round_to(v: f64, scale: u8) -> f64 {
    let p = pow10(scale);
    let r = round_half_away(v * p) / p;
    if r == 0.0 { 0.0 } else { r }
}

/// `f64::round` without the libm call: below 2^52 the integer part and the
/// fraction are exact, so the comparison with 0.5 is too.
#[inline]
pub fn round_half_away(x: f64) -> f64 {
    if x.abs() < 4.0e15 {
        let i = x as i64;
        let frac = x - i as f64;
        if frac >= 0.5 {
            (i + 1) as f64
        } else if frac <= -0.5 {
            (i - 1) as f64
        } else {
            i as f64
        }
    } else {
        x.round()
    }
}

const FRENCH_MONTHS: [(&str, u32); 16] = [
    ("janvier", 1),
    ("fevrier", 2),
    ("février", 2),
    ("mars", 3),
    ("avril", 4),
    ("mai", 5),
    ("juin", 6),
    ("juillet", 7),
    ("aout", 8),
    ("août", 8),
    ("septembre", 9),
    ("octobre", 10),
    ("novembre", 11),
    ("decembre", 12),
    ("décembre", 12),
    ("dec", 12),
];

/// Why an Excel serial number is not a date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SerialError {
    /// NaN or an infinity.
    NotFinite,
    /// 60 in the 1900 date system: 29/02/1900, a day that never was.
    Feb29Of1900,
    /// Before the year 1 or after 9999.
    OutOfRange,
}

impl SerialError {
    /// What is wrong with `serial`, said for people.
    pub fn describe(self, serial: f64) -> String {
        match self {
            SerialError::NotFinite => {
                format!("the date cell holds {serial:?}, which is not a number")
            }
            SerialError::Feb29Of1900 => format!(
                "Excel serial {serial} stands for 29/02/1900, a day that does not exist (Excel's 1900 leap-year bug, kept from Lotus 1-2-3); enter the intended date"
            ),
            SerialError::OutOfRange => {
                format!("serial {serial:?} is not a date of the years 1 to 9999")
            }
        }
    }
}

/// An Excel serial number as a date-time.
///
/// 1900 date system (Excel's default): 1 is 1900-01-01 and 59 is
/// 1900-02-28; 60 is the 29/02/1900 Excel invented (refused); from 61
/// (1900-03-01) on, days count from 1899-12-30. A fraction below 1 is a
/// time of that day 0 (1899-12-31, as calamine reads it); a negative
/// serial (LibreOffice) counts back from 1899-12-30. 1904 date system: days
/// from 1904-01-01. All arithmetic is checked: NaN, infinities and values
/// outside the years 1–9999 are errors, never a panic nor a made-up date.
pub fn excel_datetime(serial: f64, is_1904: bool) -> Result<NaiveDateTime, SerialError> {
    use chrono::Datelike;
    if !serial.is_finite() {
        return Err(SerialError::NotFinite);
    }
    // the years 1 to 9999 lie within 3,000,000 days of 1900: this bound
    // keeps the millisecond count far inside an i64
    if serial.abs() >= 3.0e6 {
        return Err(SerialError::OutOfRange);
    }
    let epoch = if is_1904 {
        (1904, 1, 1)
    } else if (60.0..61.0).contains(&serial) {
        return Err(SerialError::Feb29Of1900);
    } else if (0.0..60.0).contains(&serial) {
        (1899, 12, 31)
    } else {
        (1899, 12, 30)
    };
    let ms = (serial * 86_400_000.0).round() as i64;
    let dt = NaiveDate::from_ymd_opt(epoch.0, epoch.1, epoch.2)
        .map(|d| d.and_time(NaiveTime::MIN))
        .zip(chrono::TimeDelta::try_milliseconds(ms))
        .and_then(|(d, delta)| d.checked_add_signed(delta))
        .ok_or(SerialError::OutOfRange)?;
    if !(1..=9999).contains(&dt.year()) {
        return Err(SerialError::OutOfRange);
    }
    Ok(dt)
}

/// An Excel serial number written as text (`46096`, `46096,5`) as a
/// date-time (1900 date system, from 1 = 1900-01-01); `None` for anything
/// else, the nonexistent 29/02/1900 (60) included.
pub fn excel_serial(v: f64) -> Option<NaiveDateTime> {
    if !(1.0..2_958_466.0).contains(&v) {
        return None;
    }
    excel_datetime(v, false).ok()
}

/// Why a text that is not a date may look like one, for a reject's
/// detail: the serial 60 of Excel's invented 29/02/1900.
pub fn not_a_date_note(s: &str) -> Option<String> {
    let v: f64 = s.trim().replace(',', ".").parse().ok()?;
    match excel_datetime(v, false) {
        Err(e @ SerialError::Feb29Of1900) => Some(e.describe(v)),
        _ => None,
    }
}

fn two_digit_year(y: i32) -> i32 {
    if y < 70 { 2000 + y } else { 1900 + y }
}

/// Read a date: custom formats first, then ISO (`2026-03-15`, time part
/// ignored), `dd/mm/yyyy` (also `-` and `.`, two-digit years), French month
/// names (`15 mars 2026`, `1er mai 2026`), and Excel serial numbers.
pub fn parse_date(s: &str, formats: &[String]) -> Option<NaiveDate> {
    let t = s.trim();
    for f in formats {
        if let Ok(d) = NaiveDate::parse_from_str(t, f) {
            return Some(d);
        }
        if let Ok(dt) = NaiveDateTime::parse_from_str(t, f) {
            return Some(dt.date());
        }
    }
    parse_datetime(t, &[]).map(|dt| dt.date())
}

/// Read a date-time; a date alone is at midnight.
pub fn parse_datetime(s: &str, formats: &[String]) -> Option<NaiveDateTime> {
    let t = s.trim();
    if t.is_empty() {
        return None;
    }
    if formats.is_empty()
        && let Some(dt) = iso_datetime(t.as_bytes())
    {
        return Some(dt);
    }
    for f in formats {
        if let Ok(dt) = NaiveDateTime::parse_from_str(t, f) {
            return Some(dt);
        }
        if let Ok(d) = NaiveDate::parse_from_str(t, f) {
            return Some(d.and_time(NaiveTime::MIN));
        }
    }
    // ISO 8601 date with an optional time
    let (date_part, time_part) = match t.find(['T', ' ']) {
        Some(p) if t.as_bytes().get(4) == Some(&b'-') => (&t[..p], Some(t[p + 1..].trim())),
        _ => (t, None),
    };
    if date_part.len() == 10 && date_part.as_bytes()[4] == b'-' {
        let d = iso_date(date_part)?;
        let Some(tp) = time_part else {
            return Some(d.and_time(NaiveTime::MIN));
        };
        // an offset (`+00`, `+01:00`, `-0530`, as PostgreSQL writes a
        // timestamptz): the value is brought to UTC
        let (tp, offset) = split_offset(tp)?;
        let dt = d.and_time(parse_time(tp)?);
        return dt.checked_sub_signed(chrono::TimeDelta::try_seconds(offset)?);
    }
    // dd/mm/yyyy [HH:MM[:SS]]
    let (date_part, time_part) = match t.split_once(' ') {
        Some((d, rest)) if rest.contains(':') => (d, Some(rest.trim())),
        _ => (t, None),
    };
    for sep in ['/', '-', '.'] {
        let parts: Vec<&str> = date_part.split(sep).collect();
        if parts.len() == 3
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
        {
            let d: u32 = parts[0].parse().ok()?;
            let m: u32 = parts[1].parse().ok()?;
            let mut y: i32 = parts[2].parse().ok()?;
            if parts[2].len() == 2 {
                y = two_digit_year(y);
            } else if parts[2].len() != 4 {
                return None;
            }
            let date = NaiveDate::from_ymd_opt(y, m, d)?;
            let time = match time_part {
                Some(tp) => parse_time(tp)?,
                None => NaiveTime::MIN,
            };
            return Some(date.and_time(time));
        }
    }
    // 15 mars 2026, 1er mai 2026
    let words: Vec<String> = t
        .split_whitespace()
        .map(|w| w.trim_end_matches([',', '.']).to_lowercase())
        .collect();
    if words.len() == 3 {
        let day = words[0].trim_end_matches("er");
        if let (Ok(d), Some((_, m)), Ok(y)) = (
            day.parse::<u32>(),
            FRENCH_MONTHS.iter().find(|(n, _)| *n == words[1]),
            words[2].parse::<i32>(),
        ) {
            return NaiveDate::from_ymd_opt(y, *m, d).map(|d| d.and_time(NaiveTime::MIN));
        }
    }
    // Excel serial number
    if let Ok(v) = t.replace(',', ".").parse::<f64>() {
        return excel_serial(v);
    }
    None
}

/// `YYYY-MM-DD`, read without a format string.
/// The exact form databases write, `YYYY-MM-DD HH:MM:SS[.f…][Z|±HH[:MM]]`
/// (or with `T`), read without the general parser; `None` for anything else.
fn iso_datetime(b: &[u8]) -> Option<NaiveDateTime> {
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !(b[10] == b' ' || b[10] == b'T') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        b[r].iter().try_fold(0u32, |acc, c| {
            c.is_ascii_digit().then(|| acc * 10 + (c - b'0') as u32)
        })
    };
    let date = NaiveDate::from_ymd_opt(num(0..4)? as i32, num(5..7)?, num(8..10)?)?;
    let (h, m, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut i = 19;
    let mut nanos = 0u32;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let mut digits = 0;
        while let Some(c) = b.get(i).filter(|c| c.is_ascii_digit()) {
            if digits < 9 {
                nanos = nanos * 10 + (c - b'0') as u32;
                digits += 1;
            }
            i += 1;
        }
        if digits == 0 {
            return None;
        }
        nanos *= 10u32.pow(9 - digits);
    }
    let offset: i64 = match b.get(i) {
        None => 0,
        Some(b'Z') if i + 1 == b.len() => 0,
        Some(&sign @ (b'+' | b'-')) => {
            let rest = &b[i + 1..];
            let (oh, om) = match rest.len() {
                2 => (num(i + 1..i + 3)?, 0),
                4 => (num(i + 1..i + 3)?, num(i + 3..i + 5)?),
                5 if rest[2] == b':' => (num(i + 1..i + 3)?, num(i + 4..i + 6)?),
                _ => return None,
            };
            let secs = (oh * 3600 + om * 60) as i64;
            if sign == b'-' { -secs } else { secs }
        }
        _ => return None,
    };
    let dt = date.and_time(NaiveTime::from_hms_nano_opt(h, m, sec, nanos)?);
    dt.checked_sub_signed(chrono::TimeDelta::try_seconds(offset)?)
}

fn iso_date(s: &str) -> Option<NaiveDate> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        b[r].iter().try_fold(0u32, |acc, c| {
            c.is_ascii_digit().then(|| acc * 10 + (c - b'0') as u32)
        })
    };
    NaiveDate::from_ymd_opt(num(0..4)? as i32, num(5..7)?, num(8..10)?)
}

/// Split a time into its clock part and a UTC offset in seconds (0 when
/// there is none, or `Z`).
fn split_offset(t: &str) -> Option<(&str, i64)> {
    let Some(p) = t.rfind(['+', '-']) else {
        return Some((t.trim_end_matches('Z'), 0));
    };
    let (clock, off) = (&t[..p], &t[p + 1..]);
    let digits: String = off.chars().filter(|c| *c != ':').collect();
    if !(digits.len() == 2 || digits.len() == 4) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let h: i64 = digits[..2].parse().ok()?;
    let m: i64 = if digits.len() == 4 {
        digits[2..].parse().ok()?
    } else {
        0
    };
    let secs = h * 3600 + m * 60;
    Some((clock, if t.as_bytes()[p] == b'-' { -secs } else { secs }))
}

fn parse_time(s: &str) -> Option<NaiveTime> {
    let s = s.trim_end_matches('Z');
    // HH:MM:SS and HH:MM, the forms sources write, without a format string
    let b = s.as_bytes();
    let two = |i: usize| -> Option<u32> {
        let (x, y) = (*b.get(i)?, *b.get(i + 1)?);
        (x.is_ascii_digit() && y.is_ascii_digit()).then(|| ((x - b'0') * 10 + (y - b'0')) as u32)
    };
    if (b.len() == 8 && b[2] == b':' && b[5] == b':') || (b.len() == 5 && b[2] == b':') {
        let sec = if b.len() == 8 { two(6)? } else { 0 };
        return NaiveTime::from_hms_opt(two(0)?, two(3)?, sec);
    }
    for f in ["%H:%M:%S%.f", "%H:%M:%S", "%H:%M", "%Hh%M"] {
        if let Ok(t) = NaiveTime::parse_from_str(s, f) {
            return Some(t);
        }
    }
    None
}

/// Read a time of day: `08:30`, `08:30:15`, `8h30`, the time part of a
/// date-time (`1899-12-30T08:30:00`, as Access stores times), or an Excel
/// day fraction (`0.5` is noon). Nanoseconds since midnight.
pub fn parse_time_of_day(s: &str) -> Option<i64> {
    let t = s.trim();
    if let Some(time) = parse_time(t) {
        return Some(time_ns(time));
    }
    if t.len() > 10 && t.as_bytes().get(4) == Some(&b'-') {
        return parse_datetime(t, &[]).map(|dt| time_ns(dt.time()));
    }
    match t.replace(',', ".").parse::<f64>() {
        // 0.99999999 rounds to 24:00:00, which is no time of day
        Ok(f) if (0.0..1.0).contains(&f) => {
            Some(((f * 86_400_000.0).round() as i64).min(86_399_999) * 1_000_000)
        }
        _ => None,
    }
}

fn time_ns(t: NaiveTime) -> i64 {
    use chrono::Timelike;
    t.num_seconds_from_midnight() as i64 * 1_000_000_000 + t.nanosecond() as i64
}

/// Read a yes/no value in French or English.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_lowercase().as_str() {
        "1" | "true" | "vrai" | "oui" | "o" | "yes" | "y" | "x" | "t" | "✓" | "✔" => Some(true),
        "0" | "false" | "faux" | "non" | "n" | "no" | "f" => Some(false),
        _ => None,
    }
}

/// Days since the Unix epoch.
pub fn epoch_days(d: NaiveDate) -> i32 {
    (d.signed_duration_since(NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default())).num_days()
        as i32
}

/// Milliseconds since the Unix epoch.
pub fn epoch_millis(dt: NaiveDateTime) -> i64 {
    dt.and_utc().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;
    use NumberFormat::*;

    #[test]
    fn plain_digits_read_as_their_text_parses() {
        for s in [
            "0",
            "7",
            "0042",
            "3760123456789",
            "9007199254740993",
            "123456789012345678",
            "000000000000000001",
            "999999999999999999",
            "1234567890123456789",
            "99999999999999999999999",
        ] {
            let want: f64 = s.parse().unwrap();
            for fmt in [Auto, Fr, En] {
                assert_eq!(parse_number(s, fmt), Ok(want), "{s} {fmt:?}");
            }
            assert!(looks_numeric(s));
        }
        // 2^53 + 1 has no f64: both ways give the even neighbour
        assert_eq!(
            parse_number("9007199254740993", Auto),
            Ok(9007199254740992.0)
        );
        assert_eq!(
            parse_number(&"9".repeat(400), Auto),
            Err(NumberError::TooLarge)
        );
        assert!(!looks_numeric("") && !looks_numeric("12a") && !looks_numeric("١٢"));
    }

    #[test]
    fn french_numbers() {
        assert_eq!(parse_number("1 234,56", Auto), Ok(1234.56));
        assert_eq!(parse_number("1\u{a0}234,56", Auto), Ok(1234.56));
        assert_eq!(parse_number("1\u{202f}234,56 €", Auto), Ok(1234.56));
        assert_eq!(parse_number("12,50 €", Fr), Ok(12.5));
        assert_eq!(parse_number("12,50€", Fr), Ok(12.5));
        assert_eq!(parse_number("1.234,5", Auto), Ok(1234.5));
        assert_eq!(parse_number("-3", Auto), Ok(-3.0));
        assert_eq!(parse_number("(12,00)", Auto), Ok(-12.0));
        assert_eq!(parse_number("45 EUR", Auto), Ok(45.0));
        assert_eq!(parse_number("1 234", Auto), Ok(1234.0));
    }

    #[test]
    fn english_and_ambiguous_numbers() {
        assert_eq!(parse_number("1,234.56", Auto), Ok(1234.56));
        assert_eq!(parse_number("1,234", En), Ok(1234.0));
        assert_eq!(parse_number("1,234", Fr), Ok(1.234));
        assert_eq!(parse_number("1,234,567", Auto), Ok(1_234_567.0));
        assert_eq!(parse_number("12.5", Auto), Ok(12.5));
        assert_eq!(parse_number("1.234", Fr), Ok(1234.0));
        assert_eq!(parse_number("1.5E+3", Auto), Ok(1500.0));
        assert_eq!(parse_number(",5", Auto), Ok(0.5));
    }

    #[test]
    fn not_numbers() {
        for s in [
            "n/a",
            "",
            "  ",
            "12abc",
            "€",
            "1,2,3.4.5",
            "--",
            "1 2,3 4",
            "1 2",
            "12 34,5",
            "1e",
        ] {
            assert!(
                parse_number(s, Auto).is_err(),
                "{s:?} should not be a number"
            );
        }
        assert_eq!(parse_integer("12,5", Auto), Err(NumberError::NotAnInteger));
        assert_eq!(parse_integer("12,0", Auto), Ok(12));
        assert_eq!(parse_integer("n/a", Auto), Err(NumberError::NotANumber));
    }

    #[test]
    fn dates() {
        let d = |y, m, dd| NaiveDate::from_ymd_opt(y, m, dd);
        assert_eq!(parse_date("15/03/2026", &[]), d(2026, 3, 15));
        assert_eq!(parse_date("5/3/26", &[]), d(2026, 3, 5));
        assert_eq!(parse_date("2026-03-15", &[]), d(2026, 3, 15));
        assert_eq!(parse_date("2026-03-15T10:30:00", &[]), d(2026, 3, 15));
        assert_eq!(parse_date("15.03.2026", &[]), d(2026, 3, 15));
        assert_eq!(parse_date("46096", &[]), d(2026, 3, 15));
        assert_eq!(parse_date("15 mars 2026", &[]), d(2026, 3, 15));
        assert_eq!(parse_date("1er mai 2026", &[]), d(2026, 5, 1));
        assert_eq!(parse_date("31/02/2026", &[]), None);
        assert_eq!(parse_date("bientôt", &[]), None);
        assert_eq!(
            parse_date("03-15-2026", &["%m-%d-%Y".to_string()]),
            d(2026, 3, 15)
        );
    }

    #[test]
    fn excel_serials_of_1900_and_1904() {
        let d = |s: f64, is_1904: bool| excel_datetime(s, is_1904).map(|d| d.to_string());
        assert_eq!(d(1.0, false).as_deref(), Ok("1900-01-01 00:00:00"));
        assert_eq!(d(59.0, false).as_deref(), Ok("1900-02-28 00:00:00"));
        assert_eq!(d(60.0, false), Err(SerialError::Feb29Of1900));
        assert_eq!(d(60.5, false), Err(SerialError::Feb29Of1900));
        assert_eq!(d(61.0, false).as_deref(), Ok("1900-03-01 00:00:00"));
        assert_eq!(d(46096.5, false).as_deref(), Ok("2026-03-15 12:00:00"));
        assert_eq!(d(0.375, false).as_deref(), Ok("1899-12-31 09:00:00"));
        assert_eq!(d(-1.25, false).as_deref(), Ok("1899-12-28 18:00:00"));
        assert_eq!(d(60.0, true).as_deref(), Ok("1904-03-01 00:00:00"));
        assert_eq!(d(44634.0, true).as_deref(), Ok("2026-03-15 00:00:00"));
        assert_eq!(d(2_958_465.0, false).as_deref(), Ok("9999-12-31 00:00:00"));
        assert_eq!(d(2_958_466.0, false), Err(SerialError::OutOfRange));
        assert_eq!(d(-700_000.0, false), Err(SerialError::OutOfRange));
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert_eq!(d(bad, false), Err(SerialError::NotFinite), "{bad}");
        }
        assert_eq!(d(1e308, false), Err(SerialError::OutOfRange));
        assert_eq!(d(-1e308, true), Err(SerialError::OutOfRange));
    }

    #[test]
    fn excel_serials_written_as_text() {
        let d = |y, m, dd| NaiveDate::from_ymd_opt(y, m, dd);
        assert_eq!(parse_date("1", &[]), d(1900, 1, 1));
        assert_eq!(parse_date("59", &[]), d(1900, 2, 28));
        assert_eq!(parse_date("60", &[]), None, "29/02/1900 never was");
        assert_eq!(parse_date("61", &[]), d(1900, 3, 1));
        assert_eq!(parse_date("NaN", &[]), None);
        assert_eq!(parse_date("-inf", &[]), None);
        assert_eq!(parse_date("1e308", &[]), None);
        assert!(not_a_date_note("60").is_some_and(|n| n.contains("29/02/1900")));
        assert_eq!(not_a_date_note("59"), None);
        assert_eq!(not_a_date_note("bientôt"), None);
    }

    #[test]
    fn datetimes_with_offsets_are_brought_to_utc() {
        let utc = |s: &str| parse_datetime(s, &[]).map(|d| d.to_string());
        assert_eq!(
            utc("2026-11-29 10:15:00.25+00").as_deref(),
            Some("2026-11-29 10:15:00.250")
        );
        assert_eq!(
            utc("2026-11-29 10:15:00+01").as_deref(),
            Some("2026-11-29 09:15:00")
        );
        assert_eq!(
            utc("2026-11-29T00:30:00-05:30").as_deref(),
            Some("2026-11-29 06:00:00")
        );
        assert_eq!(
            utc("2026-11-29T10:15:00Z").as_deref(),
            Some("2026-11-29 10:15:00")
        );
        assert_eq!(utc("2026-11-29 10:15:00+1"), None);
        assert_eq!(
            utc("2026-11-29 10:15:00.123456789-0130").as_deref(),
            Some("2026-11-29 11:45:00.123456789")
        );
        assert_eq!(utc("2026-02-30 10:15:00"), None);
        assert_eq!(utc("2026-11-29 25:15:00"), None);
    }

    #[test]
    fn datetimes() {
        let dt = parse_datetime("15/03/2026 14:05", &[]).unwrap();
        assert_eq!(dt.to_string(), "2026-03-15 14:05:00");
        let dt = parse_datetime("46096.5", &[]).unwrap();
        assert_eq!(dt.to_string(), "2026-03-15 12:00:00");
        let dt = parse_datetime("2026-03-15 08:00:01", &[]).unwrap();
        assert_eq!(dt.to_string(), "2026-03-15 08:00:01");
    }

    #[test]
    fn times_of_day() {
        let h = |h: i64, m: i64, s: i64| Some(((h * 60 + m) * 60 + s) * 1_000_000_000);
        assert_eq!(parse_time_of_day("08:30"), h(8, 30, 0));
        assert_eq!(parse_time_of_day("18:00:05"), h(18, 0, 5));
        assert_eq!(parse_time_of_day("8h30"), h(8, 30, 0));
        assert_eq!(parse_time_of_day("1899-12-30T22:00:00"), h(22, 0, 0));
        assert_eq!(parse_time_of_day("0.5"), h(12, 0, 0));
        assert_eq!(
            parse_time_of_day("0.999999999"),
            Some(86_399_999_000_000),
            "not 24:00:00"
        );
        assert_eq!(parse_time_of_day("25:00"), None);
        assert_eq!(parse_time_of_day("midi"), None);
    }

    #[test]
    fn booleans_and_rounding() {
        assert_eq!(parse_bool("Oui"), Some(true));
        assert_eq!(parse_bool("non"), Some(false));
        assert_eq!(parse_bool("peut-être"), None);
        // PostgreSQL's text form of a boolean
        assert_eq!(parse_bool("t"), Some(true));
        assert_eq!(parse_bool("f"), Some(false));
        assert_eq!(round_to(12.345, 2), 12.35);
        assert_eq!(round_to(-0.001, 2), 0.0);
        for x in [
            0.5,
            1.5,
            2.5,
            -0.5,
            -2.5,
            0.49999999999999994,
            123.4449,
            -7.0,
            1e16 + 2.0,
        ] {
            assert_eq!(round_half_away(x), x.round(), "{x}");
        }
        assert_eq!(epoch_days(NaiveDate::from_ymd_opt(1970, 1, 2).unwrap()), 1);
    }
}
