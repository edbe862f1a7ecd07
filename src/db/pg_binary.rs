//! PostgreSQL's binary COPY (`COPY … TO STDOUT (FORMAT binary)`): its
//! tuples, whatever the chunks they arrive in, and the values of the types
//! read without a text round-trip. Where text is still needed (a column a
//! text rule reads, a rejected row's record, the watermark), the text is
//! the one the server writes with `DateStyle = ISO, YMD` and `TimeZone =
//! 'UTC'`, as the text COPY gave it.

use tokio_postgres::types::Type;

/// The header's fixed signature.
pub const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";
/// 2000-01-01T00:00:00 in microseconds since the Unix epoch.
pub const PG_EPOCH_US: i64 = 946_684_800_000_000;
/// 2000-01-01 in days since the Unix epoch.
pub const PG_EPOCH_DAYS: i32 = 10_957;

/// How a column's binary values are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// text, varchar, char(n), name: the bytes of the text.
    Text,
    Bool,
    Int2,
    Int4,
    Int8,
    Numeric,
    Timestamp,
    Timestamptz,
    Date,
}

impl Wire {
    /// The binary reading of a type, if repaero has one; a table with a
    /// column of another type is read with the text COPY.
    pub fn of(t: &Type) -> Option<Wire> {
        Some(match *t {
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => Wire::Text,
            Type::BOOL => Wire::Bool,
            Type::INT2 => Wire::Int2,
            Type::INT4 => Wire::Int4,
            Type::INT8 => Wire::Int8,
            Type::NUMERIC => Wire::Numeric,
            Type::TIMESTAMP => Wire::Timestamp,
            Type::TIMESTAMPTZ => Wire::Timestamptz,
            Type::DATE => Wire::Date,
            _ => return None,
        })
    }
}

/// What one step through the COPY's bytes found.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// A tuple of this many bytes; its fields are in `fields`.
    Row(usize),
    /// The trailer (-1 fields): the end of the data.
    End,
    /// Not a whole tuple yet: wait for more bytes.
    More,
}

/// The length of the header at the start of `b`, `None` if incomplete.
pub fn header(b: &[u8]) -> Result<Option<usize>, String> {
    if b.len() < 19 {
        return Ok(None);
    }
    if &b[..11] != SIGNATURE {
        return Err("the binary COPY does not start with its signature".into());
    }
    let ext = i32::from_be_bytes([b[15], b[16], b[17], b[18]]);
    if ext < 0 {
        return Err("the binary COPY's header is malformed".into());
    }
    let len = 19 + ext as usize;
    Ok((b.len() >= len).then_some(len))
}

/// Read one tuple at the start of `b`: each field's byte range in `b`
/// (`None`: NULL).
pub fn tuple(b: &[u8], fields: &mut Vec<Option<(usize, usize)>>) -> Result<Step, String> {
    fields.clear();
    if b.len() < 2 {
        return Ok(Step::More);
    }
    let n = i16::from_be_bytes([b[0], b[1]]);
    if n == -1 {
        return Ok(Step::End);
    }
    if n < 0 {
        return Err(format!("the binary COPY has a tuple of {n} fields"));
    }
    let mut at = 2;
    for _ in 0..n {
        let Some(len) = b.get(at..at + 4) else {
            return Ok(Step::More);
        };
        let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        at += 4;
        if len < 0 {
            fields.push(None);
            continue;
        }
        let end = at + len as usize;
        if end > b.len() {
            return Ok(Step::More);
        }
        fields.push(Some((at, end)));
        at = end;
    }
    Ok(Step::Row(at))
}

fn be_i16(b: &[u8], at: usize) -> Option<i16> {
    b.get(at..at + 2).map(|s| i16::from_be_bytes([s[0], s[1]]))
}

/// An integer of any width (2, 4 or 8 bytes).
pub fn int(b: &[u8]) -> Option<i64> {
    Some(match b.len() {
        2 => i16::from_be_bytes([b[0], b[1]]) as i64,
        4 => i32::from_be_bytes([b[0], b[1], b[2], b[3]]) as i64,
        8 => i64::from_be_bytes(b.try_into().ok()?),
        _ => return None,
    })
}

/// A timestamp (microseconds since 2000-01-01) or a date (days since then).
pub fn i64_of(b: &[u8]) -> Option<i64> {
    Some(i64::from_be_bytes(b.try_into().ok()?))
}

pub fn i32_of(b: &[u8]) -> Option<i32> {
    Some(i32::from_be_bytes(b.try_into().ok()?))
}

const NUMERIC_NEG: u16 = 0x4000;
const NUMERIC_NAN: u16 = 0xC000;
const NUMERIC_PINF: u16 = 0xD000;
const NUMERIC_NINF: u16 = 0xF000;

/// A numeric's fields: digits (base 10,000), weight, sign, display scale.
struct Numeric<'a> {
    ndigits: usize,
    weight: i16,
    sign: u16,
    dscale: u16,
    digits: &'a [u8],
}

fn numeric_parts(b: &[u8]) -> Option<Numeric<'_>> {
    let ndigits = be_i16(b, 0)?;
    let weight = be_i16(b, 2)?;
    let sign = be_i16(b, 4)? as u16;
    let dscale = be_i16(b, 6)? as u16;
    let ndigits = usize::try_from(ndigits).ok()?;
    let digits = b.get(8..8 + 2 * ndigits)?;
    Some(Numeric {
        ndigits,
        weight,
        sign,
        dscale,
        digits,
    })
}

impl Numeric<'_> {
    fn digit(&self, k: i32) -> u16 {
        if k < 0 || k as usize >= self.ndigits {
            return 0;
        }
        let at = 2 * k as usize;
        u16::from_be_bytes([self.digits[at], self.digits[at + 1]])
    }
}

/// A numeric's text as the server writes it (`numeric_out`): `-12.3400`,
/// `0.05`, `NaN`, `Infinity`.
pub fn numeric_text(b: &[u8], out: &mut String) -> bool {
    let Some(n) = numeric_parts(b) else {
        return false;
    };
    match n.sign {
        NUMERIC_NAN => {
            out.push_str("NaN");
            return true;
        }
        NUMERIC_PINF => {
            out.push_str("Infinity");
            return true;
        }
        NUMERIC_NINF => {
            out.push_str("-Infinity");
            return true;
        }
        _ => {}
    }
    if n.sign == NUMERIC_NEG {
        out.push('-');
    }
    // the integer part: digit groups 0..=weight
    if n.weight < 0 {
        out.push('0');
    } else {
        for k in 0..=n.weight as i32 {
            let d = n.digit(k);
            if k == 0 {
                out.push_str(itoa::Buffer::new().format(d));
            } else {
                push_4(out, d);
            }
        }
    }
    if n.dscale > 0 {
        out.push('.');
        let mut left = n.dscale as usize;
        let mut k = n.weight as i32 + 1;
        while left > 0 {
            let d = n.digit(k);
            let group = [
                b'0' + (d / 1000) as u8,
                b'0' + (d / 100 % 10) as u8,
                b'0' + (d / 10 % 10) as u8,
                b'0' + (d % 10) as u8,
            ];
            for c in group.iter().take(left.min(4)) {
                out.push(*c as char);
            }
            left = left.saturating_sub(4);
            k += 1;
        }
    }
    true
}

fn push_4(out: &mut String, d: u16) {
    for c in [d / 1000, d / 100 % 10, d / 10 % 10, d % 10] {
        out.push((b'0' + c as u8) as char);
    }
}

/// A finite numeric's digits as an integer at its display scale (`14.8000`
/// → 148000), when they hold nothing past that scale and fit 2^53.
fn scaled_digits(n: &Numeric<'_>) -> Option<u64> {
    if !(n.sign == 0 || n.sign == NUMERIC_NEG) || n.dscale > 22 {
        return None;
    }
    let dscale = n.dscale as i32;
    // the group holding the last digit of the display scale
    let last = n.weight as i32 + (dscale + 3) / 4;
    if n.ndigits as i32 > last + 1 {
        return None;
    }
    let mut m: u64 = 0;
    for k in (n.weight.min(0) as i32)..=last {
        m = m.checked_mul(10_000).filter(|v| *v < 1 << 53)? + n.digit(k) as u64;
    }
    // m has 4·⌈dscale/4⌉ decimals
    let p = 10u64.pow((4 * ((dscale + 3) / 4) - dscale) as u32);
    (m.is_multiple_of(p) && m / p < 1 << 53).then_some(m / p)
}

/// The f64 of digits at a display scale: both exact below 2^53 and 10^22,
/// one IEEE division rounds correctly, as `str::parse` of the text does.
fn scaled_f64(n: &Numeric<'_>, m: u64) -> f64 {
    let v = m as f64 / crate::batch::parse::pow10(n.dscale as u8);
    if n.sign == NUMERIC_NEG { -v } else { v }
}

/// A numeric as the f64 its text reads as (`str::parse`, correctly
/// rounded): directly when its digits fit 2^53, through its text otherwise.
pub fn numeric_f64(b: &[u8], scratch: &mut String) -> Option<f64> {
    let n = numeric_parts(b)?;
    if let Some(m) = scaled_digits(&n) {
        return Some(scaled_f64(&n, m));
    }
    scratch.clear();
    numeric_text(b, scratch).then_some(())?;
    scratch.parse().ok()
}

/// A numeric to carry typed: the f64 its text reads as, and its display
/// scale when that f64 shows its text back exactly (`{:.scale$}`: below
/// 10^15 at that scale); otherwise `None`, and its text is left in
/// `scratch`.
pub fn numeric_carried(b: &[u8], scratch: &mut String) -> Option<(f64, Option<u8>)> {
    let n = numeric_parts(b)?;
    let m = scaled_digits(&n);
    if let Some(m) = m.filter(|m| *m < 1_000_000_000_000_000) {
        return Some((scaled_f64(&n, m), Some(n.dscale as u8)));
    }
    scratch.clear();
    numeric_text(b, scratch).then_some(())?;
    let v = match m {
        Some(m) => scaled_f64(&n, m),
        None => scratch.parse().ok()?,
    };
    Some((v, None))
}

/// `YYYY-MM-DD` (` BC` for years before 1, as the server writes them).
fn push_date(out: &mut String, date: chrono::NaiveDate) -> bool {
    use chrono::Datelike;
    let y = date.year();
    let shown = if y <= 0 { 1 - y } else { y };
    use std::fmt::Write as _;
    let _ = write!(out, "{shown:04}-{:02}-{:02}", date.month(), date.day());
    y <= 0
}

/// A timestamp's text as the server writes it (ISO, in UTC for a
/// timestamptz): `2026-07-03 10:01:00.5+00`, `infinity`.
pub fn timestamp_text(us: i64, tz: bool, out: &mut String) {
    use chrono::Timelike;
    match us {
        i64::MAX => return out.push_str("infinity"),
        i64::MIN => return out.push_str("-infinity"),
        _ => {}
    }
    let Some(dt) = us
        .checked_add(PG_EPOCH_US)
        .and_then(chrono::DateTime::from_timestamp_micros)
    else {
        out.push('?');
        return;
    };
    let n = dt.naive_utc();
    let bc = push_date(out, n.date());
    use std::fmt::Write as _;
    let _ = write!(out, " {:02}:{:02}:{:02}", n.hour(), n.minute(), n.second());
    let frac = us.rem_euclid(1_000_000);
    if frac != 0 {
        let s = format!("{frac:06}");
        out.push('.');
        out.push_str(s.trim_end_matches('0'));
    }
    if tz {
        out.push_str("+00");
    }
    if bc {
        out.push_str(" BC");
    }
}

/// A date's text as the server writes it: `2026-07-03`, `infinity`.
pub fn date_text(days: i32, out: &mut String) {
    match days {
        i32::MAX => return out.push_str("infinity"),
        i32::MIN => return out.push_str("-infinity"),
        _ => {}
    }
    match chrono::NaiveDate::from_num_days_from_ce_opt(days.saturating_add(730_120)) {
        Some(d) => {
            if push_date(out, d) {
                out.push_str(" BC");
            }
        }
        None => out.push('?'),
    }
}

/// The Unix milliseconds a timestamp's text reads as, without the text:
/// years 1 to 9999 read as their ISO form does (the microseconds floored
/// to milliseconds); `None` for others (infinity, BC, years past 9999),
/// which go through their text.
pub fn timestamp_millis(us: i64) -> Option<i64> {
    // 0001-01-01 and 10000-01-01 in microseconds since 2000-01-01
    const LO: i64 = -63_082_281_600_000_000;
    const HI: i64 = 252_455_616_000_000_000;
    (LO..HI)
        .contains(&us)
        .then(|| (us + PG_EPOCH_US).div_euclid(1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(ndigits: i16, weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let mut b = Vec::new();
        for v in [ndigits, weight, sign as i16, dscale as i16] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        for d in digits {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b
    }

    fn text(b: &[u8]) -> String {
        let mut s = String::new();
        assert!(numeric_text(b, &mut s));
        s
    }

    #[test]
    fn numerics_read_as_their_text() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (numeric(2, 0, 0, 4, &[14, 8000]), "14.8000"),
            (numeric(2, 0, 0, 2, &[1234, 5600]), "1234.56"),
            (numeric(1, -1, NUMERIC_NEG, 2, &[500]), "-0.05"),
            (numeric(0, 0, 0, 2, &[]), "0.00"),
            (numeric(0, 0, 0, 0, &[]), "0"),
            (numeric(1, 1, 0, 0, &[1]), "10000"),
            (numeric(1, -1, 0, 4, &[31]), "0.0031"),
            (numeric(3, 0, 0, 6, &[1, 0, 100]), "1.000001"),
            (numeric(4, 2, 0, 1, &[1, 2345, 6789, 5000]), "123456789.5"),
            (numeric(1, -2, 0, 8, &[12]), "0.00000012"),
            (numeric(1, 0, 0, 3, &[7]), "7.000"),
            (
                numeric(5, 4, 0, 0, &[9, 9999, 9999, 9999, 9999]),
                "99999999999999999",
            ),
            (
                numeric(6, 0, 0, 20, &[1, 1234, 5678, 9012, 3456, 7890]),
                "1.12345678901234567890",
            ),
            (numeric(0, 0, NUMERIC_NAN, 0, &[]), "NaN"),
        ];
        let mut scratch = String::new();
        for (b, want) in cases {
            assert_eq!(text(&b), want);
            let v = numeric_f64(&b, &mut scratch).unwrap();
            let parsed: f64 = want.parse().unwrap();
            assert!(
                v.to_bits() == parsed.to_bits() || (v.is_nan() && parsed.is_nan()),
                "{want}: {v} vs {parsed}"
            );
        }
    }

    #[test]
    fn carried_numerics_show_their_text_back() {
        let mut scratch = String::new();
        for (b, want) in [
            (numeric(2, 0, 0, 4, &[14, 8000]), "14.8000"),
            (numeric(0, 0, 0, 2, &[]), "0.00"),
            (numeric(1, -1, NUMERIC_NEG, 2, &[500]), "-0.05"),
            (numeric(4, 2, 0, 1, &[1, 2345, 6789, 5000]), "123456789.5"),
        ] {
            let (v, scale) = numeric_carried(&b, &mut scratch).unwrap();
            let d = scale.unwrap() as usize;
            assert_eq!(format!("{v:.d$}"), want);
        }
        let big = numeric(5, 4, 0, 0, &[9, 9999, 9999, 9999, 9999]);
        assert_eq!(numeric_carried(&big, &mut scratch).unwrap().1, None);
        assert_eq!(scratch, "99999999999999999");
        let nan = numeric(0, 0, NUMERIC_NAN, 0, &[]);
        assert_eq!(numeric_carried(&nan, &mut scratch).unwrap().1, None);
        assert_eq!(scratch, "NaN");
    }

    #[test]
    fn timestamps_and_dates_as_the_server_writes_them() {
        let t = |us: i64, tz: bool| {
            let mut s = String::new();
            timestamp_text(us, tz, &mut s);
            s
        };
        // 2026-07-03 10:01:00 UTC
        let us = 1_783_072_860_000_000 - PG_EPOCH_US;
        assert_eq!(t(us, true), "2026-07-03 10:01:00+00");
        assert_eq!(t(us, false), "2026-07-03 10:01:00");
        assert_eq!(t(us + 500_000, true), "2026-07-03 10:01:00.5+00");
        assert_eq!(t(us + 123_456, false), "2026-07-03 10:01:00.123456");
        assert_eq!(t(i64::MAX, true), "infinity");
        assert_eq!(t(-PG_EPOCH_US - 1, false), "1969-12-31 23:59:59.999999");
        assert_eq!(timestamp_millis(us), Some(1_783_072_860_000));
        assert_eq!(timestamp_millis(-PG_EPOCH_US - 1), Some(-1));
        assert_eq!(timestamp_millis(i64::MAX), None);
        let d = |days: i32| {
            let mut s = String::new();
            date_text(days, &mut s);
            s
        };
        assert_eq!(d(0), "2000-01-01");
        assert_eq!(d(-730_119), "0001-01-01");
        assert_eq!(d(-730_120), "0001-12-31 BC");
        assert_eq!(
            t(-730_120 * 86_400_000_000, true),
            "0001-12-31 00:00:00+00 BC"
        );
        assert_eq!(timestamp_millis(-730_120 * 86_400_000_000), None);
        assert!(timestamp_millis(-730_119 * 86_400_000_000).is_some());
    }

    #[test]
    fn tuples_wait_for_their_bytes() {
        let mut b = Vec::new();
        b.extend_from_slice(&2i16.to_be_bytes());
        b.extend_from_slice(&4i32.to_be_bytes());
        b.extend_from_slice(&7i32.to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        let mut f = Vec::new();
        assert_eq!(tuple(&b, &mut f), Ok(Step::Row(b.len())));
        assert_eq!(f, vec![Some((6, 10)), None]);
        assert_eq!(tuple(&b[..7], &mut f), Ok(Step::More));
        assert_eq!(tuple(&(-1i16).to_be_bytes(), &mut f), Ok(Step::End));
    }
}
