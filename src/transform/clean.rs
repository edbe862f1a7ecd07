//! Text cleaning: Unicode normalisation, odd spaces, trimming, case.

use std::borrow::Cow;

use unicode_normalization::UnicodeNormalization;

use crate::config::mapping::Case;

/// Options for cleaning one column's text.
#[derive(Debug, Clone, Default)]
pub struct TextRules {
    pub trim: bool,
    pub collapse_spaces: bool,
    pub case: Option<Case>,
    /// Lower-cased values meaning "empty".
    pub null_values: Vec<String>,
}

/// Spaces people paste from other software: NBSP, narrow NBSP, thin and
/// figure spaces, ideographic space, tabs.
fn is_space_like(c: char) -> bool {
    c.is_whitespace() || matches!(c, '\u{a0}' | '\u{202f}' | '\u{2007}' | '\u{2009}')
}

/// Characters that are invisible and carry no meaning in a value.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{200b}' | '\u{200c}' | '\u{200d}' | '\u{feff}' | '\u{ad}'
    )
}

/// Whether `s` is already clean: ASCII, no leading or trailing space, no
/// run of spaces, no control character, nothing the case rule changes.
fn already_clean(s: &str, rules: &TextRules) -> bool {
    let b = s.as_bytes();
    if b.is_empty() {
        return false;
    }
    if !s.is_ascii() {
        return already_clean_unicode(s, rules);
    }
    if (rules.trim || rules.collapse_spaces) && (b[0] == b' ' || b[b.len() - 1] == b' ') {
        return false;
    }
    // text kept as typed (memo) may hold line breaks and tabs
    let controls_stay = !rules.trim && !rules.collapse_spaces;
    let mut prev_space = false;
    for &c in b {
        if (c < 0x20 || c == 0x7f) && !controls_stay {
            return false;
        }
        let space = c == b' ';
        if space && prev_space && rules.collapse_spaces {
            return false;
        }
        prev_space = space;
        match rules.case {
            Some(Case::Upper) if c.is_ascii_lowercase() => return false,
            Some(Case::Lower) if c.is_ascii_uppercase() => return false,
            Some(Case::Title) => return false,
            _ => {}
        }
    }
    if !rules.null_values.is_empty() {
        let lower = s.to_ascii_lowercase();
        if rules.null_values.contains(&lower) {
            return false;
        }
    }
    true
}

/// [`already_clean`] for non-ASCII text: NFC already (quick check), no odd
/// or repeated space, nothing the case rule or a null marker changes.
fn already_clean_unicode(s: &str, rules: &TextRules) -> bool {
    use unicode_normalization::{IsNormalized, is_nfc_quick};
    if rules.case.is_some() || !rules.null_values.is_empty() {
        return false;
    }
    if is_nfc_quick(s.chars()) != IsNormalized::Yes {
        return false;
    }
    // with trim or collapse, odd spaces become U+0020 and the ends are trimmed
    let trims = rules.trim || rules.collapse_spaces;
    if trims && (s.starts_with(is_space_like) || s.ends_with(is_space_like)) {
        return false;
    }
    let mut prev_space = false;
    for c in s.chars() {
        if is_invisible(c) {
            return false;
        }
        if is_space_like(c) {
            if trims && c != ' ' {
                return false;
            }
            if rules.collapse_spaces && prev_space {
                return false;
            }
            prev_space = true;
        } else {
            prev_space = false;
        }
    }
    true
}

/// Clean one text value; `None` when nothing is left. Borrows the input
/// when it is already clean (the common case: no allocation).
pub fn clean_text<'a>(s: &'a str, rules: &TextRules) -> Option<Cow<'a, str>> {
    if already_clean(s, rules) {
        return Some(Cow::Borrowed(s));
    }
    clean_owned(s, rules).map(Cow::Owned)
}

fn clean_owned(s: &str, rules: &TextRules) -> Option<String> {
    // text kept as typed keeps its empty strings (an Access memo's "" is
    // not NULL)
    if s.is_empty() && !rules.trim && !rules.collapse_spaces && rules.null_values.is_empty() {
        return Some(String::new());
    }
    let needs_nfc = !s.is_ascii();
    let mut out = String::with_capacity(s.len());
    let mut pending_space = false;
    let push = |out: &mut String, c: char, pending: &mut bool| {
        if is_invisible(c) {
            return;
        }
        if is_space_like(c) && (rules.collapse_spaces || rules.trim) {
            if rules.collapse_spaces {
                *pending = true;
            } else {
                // keep inner spaces as typed, normalised to U+0020 unless a newline
                out.push(if c == '\n' || c == '\r' || c == '\t' {
                    c
                } else {
                    ' '
                });
            }
            return;
        }
        if *pending {
            if !out.is_empty() || !rules.trim {
                out.push(' ');
            }
            *pending = false;
        }
        out.push(c);
    };
    if needs_nfc {
        for c in s.nfc() {
            push(&mut out, c, &mut pending_space);
        }
    } else {
        for c in s.chars() {
            push(&mut out, c, &mut pending_space);
        }
    }
    if pending_space && !rules.trim {
        out.push(' ');
    }
    if rules.trim {
        let t = out.trim_matches(is_space_like);
        if t.len() != out.len() {
            out = t.to_string();
        }
    }
    if out.is_empty() {
        return None;
    }
    if !rules.null_values.is_empty() {
        let lower = out.to_lowercase();
        if rules.null_values.contains(&lower) {
            return None;
        }
    }
    match rules.case {
        Some(Case::Upper) => Some(out.to_uppercase()),
        Some(Case::Lower) => Some(out.to_lowercase()),
        Some(Case::Title) => Some(title_case(&out)),
        None => Some(out),
    }
}

/// A French phone number in E.164 form (`+33612345678`), from the ways
/// people write them: `06 12 34 56 78`, `06.12.34.56.78`, `+33 6 12…`,
/// `+33 (0)6 12…`, `0033 6 12…`, and 9 digits whose leading 0 was lost
/// (a number column in a spreadsheet). `None` when it is none of those.
pub fn phone_e164_fr(s: &str) -> Option<String> {
    let s = s.replace("(0)", "");
    let t = s.trim();
    let plus = t.starts_with('+');
    if t.chars()
        .any(|c| !(c.is_ascii_digit() || " .-/+()\u{a0}".contains(c)))
    {
        return None;
    }
    let digits: String = t.chars().filter(|c| c.is_ascii_digit()).collect();
    let national = if plus {
        digits.strip_prefix("33")?.to_string()
    } else if let Some(rest) = digits.strip_prefix("0033") {
        rest.to_string()
    } else if digits.len() == 10 && digits.starts_with('0') {
        digits[1..].to_string()
    } else if digits.len() == 9 {
        digits
    } else {
        return None;
    };
    let national = match national.len() {
        10 if national.starts_with('0') => national[1..].to_string(),
        _ => national,
    };
    (national.len() == 9 && !national.starts_with('0')).then(|| format!("+33{national}"))
}

/// Fold a key for comparison: accents removed (NFD, combining marks
/// dropped; œ, æ, ß spelled out), lower case, every whitespace removed.
pub fn fold_key(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.nfd() {
        if unicode_normalization::char::is_combining_mark(c) || is_space_like(c) || is_invisible(c)
        {
            continue;
        }
        match c {
            'œ' | 'Œ' => out.push_str("oe"),
            'æ' | 'Æ' => out.push_str("ae"),
            'ß' => out.push_str("ss"),
            c => out.extend(c.to_lowercase()),
        }
    }
    out
}

/// `jean-pierre DUPONT` → `Jean-Pierre Dupont`.
pub fn title_case(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut start = true;
    for c in s.chars() {
        if c.is_alphabetic() {
            if start {
                out.extend(c.to_uppercase());
            } else {
                out.extend(c.to_lowercase());
            }
            start = false;
        } else {
            out.push(c);
            start = c == ' ' || c == '-' || c == '\'' || c == '’';
        }
    }
    out
}

/// Whether `s` is 13 digits whose last is the EAN-13 check digit.
pub fn is_ean13(s: &str) -> bool {
    s.len() == 13
        && s.bytes().all(|b| b.is_ascii_digit())
        && ean13_check(&s[..12]) == s[12..].parse().ok()
}

/// The EAN-13 check digit of 12 digits.
pub fn ean13_check(digits12: &str) -> Option<u32> {
    if digits12.len() != 12 || !digits12.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let sum: u32 = digits12
        .bytes()
        .enumerate()
        .map(|(i, b)| (b - b'0') as u32 * if i % 2 == 0 { 1 } else { 3 })
        .sum();
    Some((10 - sum % 10) % 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> TextRules {
        TextRules {
            trim: true,
            collapse_spaces: true,
            case: None,
            null_values: vec![],
        }
    }

    #[test]
    fn ean13_check_digits() {
        assert_eq!(ean13_check("400638133393"), Some(1));
        assert!(is_ean13("4006381333931"));
        assert!(!is_ean13("4006381333932"));
        assert!(!is_ean13("400638133393"));
        assert!(!is_ean13("40063813339a1"));
    }

    #[test]
    fn trims_non_breaking_and_invisible_spaces() {
        let r = rules();
        assert_eq!(
            clean_text("  HYD-2040\u{a0}", &r).as_deref(),
            Some("HYD-2040")
        );
        assert_eq!(
            clean_text("\u{feff}Joint\u{202f} torique ", &r).as_deref(),
            Some("Joint torique")
        );
        assert_eq!(clean_text("a \t\u{a0} b", &r).as_deref(), Some("a b"));
        assert_eq!(clean_text(" \u{a0}\u{200b} ", &r), None);
    }

    #[test]
    fn normalises_to_nfc() {
        let decomposed = "Re\u{301}f";
        assert_eq!(clean_text(decomposed, &rules()).as_deref(), Some("Réf"));
    }

    #[test]
    fn case_and_null_values() {
        let mut r = rules();
        r.case = Some(Case::Upper);
        r.null_values = vec!["n/a".into(), "-".into()];
        assert_eq!(clean_text("hyd-2040", &r).as_deref(), Some("HYD-2040"));
        assert_eq!(clean_text(" N/A ", &r), None);
        assert_eq!(clean_text("-", &r), None);
        r.case = Some(Case::Title);
        assert_eq!(
            clean_text("jean-pierre DUPONT", &r).as_deref(),
            Some("Jean-Pierre Dupont")
        );
    }

    #[test]
    fn without_trim_text_is_kept_as_typed() {
        let r = TextRules::default();
        assert_eq!(
            clean_text("  ligne 1\nligne 2  ", &r).as_deref(),
            Some("  ligne 1\nligne 2  ")
        );
    }

    #[test]
    fn french_phone_numbers() {
        for (input, want) in [
            ("06 12 34 56 78", Some("+33612345678")),
            ("0612345678", Some("+33612345678")),
            ("06.12.34.56.78", Some("+33612345678")),
            ("06-12-34-56-78", Some("+33612345678")),
            ("+33 6 12 34 56 78", Some("+33612345678")),
            ("+33612345678", Some("+33612345678")),
            ("+33 (0)6 12 34 56 78", Some("+33612345678")),
            ("0033 6 12 34 56 78", Some("+33612345678")),
            ("612345678", Some("+33612345678")),
            ("01 23 45 67", None),
            ("+44 20 7946 0958", None),
            ("n/a", None),
        ] {
            assert_eq!(phone_e164_fr(input).as_deref(), want, "{input}");
        }
    }

    #[test]
    fn folded_keys() {
        assert_eq!(
            fold_key(" Léa.Müller@Wanadoo.fr\u{a0}"),
            "lea.muller@wanadoo.fr"
        );
        assert_eq!(fold_key("JEAN - PIERRE"), "jean-pierre");
        assert_eq!(fold_key("Œuvre"), "oeuvre");
    }

    #[test]
    fn clean_values_are_borrowed() {
        let mut r = rules();
        assert!(matches!(clean_text("HYD-2040", &r), Some(Cow::Borrowed(_))));
        assert!(matches!(
            clean_text("Joint torique", &r),
            Some(Cow::Borrowed(_))
        ));
        assert!(matches!(clean_text("a  b", &r), Some(Cow::Owned(_))));
        r.case = Some(Case::Upper);
        assert!(matches!(clean_text("HYD-2040", &r), Some(Cow::Borrowed(_))));
        assert_eq!(clean_text("hyd-2040", &r).as_deref(), Some("HYD-2040"));
        r.null_values = vec!["n/a".into()];
        assert_eq!(clean_text("N/A", &r), None);
        let r = rules();
        assert!(matches!(
            clean_text("Écrou frein", &r),
            Some(Cow::Borrowed(_))
        ));
        assert_eq!(
            clean_text("Écrou\u{a0}frein", &r).as_deref(),
            Some("Écrou frein")
        );
        assert_eq!(
            clean_text("E\u{301}crou  frein ", &r).as_deref(),
            Some("Écrou frein")
        );
        let keep = TextRules::default();
        assert!(matches!(
            clean_text(" 😡 ligne\u{a0}", &keep),
            Some(Cow::Borrowed(_))
        ));
        assert_eq!(clean_text("", &keep).as_deref(), Some(""));
        assert_eq!(clean_text("", &rules()), None);
    }
}
