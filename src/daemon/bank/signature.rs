//! The Systempay / Lyra form API V2 signature (`../shared/specs/
//! bank-payment-notification.md` §4), the same for the payment form, the
//! browser return and the notification (IPN): every `vads_` field, sorted
//! by name (byte order), their values joined with `+`, then `+` and the
//! shop's key; HMAC-SHA-256 keyed with the shop key, in standard Base64
//! (or, for a shop still set to the deprecated SHA-1, the SHA-1 of that
//! string in lower-case hex). Also the decoding of the notification's
//! `application/x-www-form-urlencoded` body, exactly as received.

use std::collections::BTreeMap;

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The signature algorithm chosen for the shop in the bank's back office.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub enum Algorithm {
    /// HMAC-SHA-256, Base64 (44 characters): the recommended one.
    #[serde(rename = "hmac-sha-256")]
    HmacSha256,
    /// SHA-1, lower-case hex (40 characters): deprecated by the bank.
    #[serde(rename = "sha-1")]
    Sha1,
}

/// The string the signature is computed over: the values of the `vads_`
/// fields in name order, joined with `+`, then `+key`. Fields not starting
/// with `vads_` (`signature` among them) are left out; empty values are
/// kept (two `+` in a row).
pub fn signing_string(fields: &BTreeMap<String, String>, key: &str) -> String {
    let mut s = String::new();
    for (_, v) in fields.iter().filter(|(k, _)| k.starts_with("vads_")) {
        s.push_str(v);
        s.push('+');
    }
    s.push_str(key);
    s
}

/// The signature of `fields` with `key`.
pub fn sign(fields: &BTreeMap<String, String>, key: &str, alg: Algorithm) -> String {
    let text = signing_string(fields, key);
    match alg {
        Algorithm::HmacSha256 => {
            // an HMAC takes a key of any length: this cannot fail
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.as_bytes())
                .expect("HMAC accepts any key length");
            mac.update(text.as_bytes());
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        }
        Algorithm::Sha1 => hex::encode(sha1(text.as_bytes())),
    }
}

/// Whether `signature` is the signature of `fields`, compared in constant
/// time (a wrong length is refused at once: the length is no secret).
pub fn verify(
    fields: &BTreeMap<String, String>,
    signature: &str,
    key: &str,
    alg: Algorithm,
) -> bool {
    let expected = sign(fields, key, alg);
    expected.as_bytes().ct_eq(signature.as_bytes()).into()
}

/// A keyed tag for a pay link (`/pay/<invoice>?t=…`): HMAC-SHA-256 of the
/// invoice number under the shop key, with its own prefix so that it can
/// never be mistaken for a form signature; URL-safe Base64, 22 characters
/// (128 bits).
pub fn link_token(key: &str, invoice: &str) -> String {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key.as_bytes()).expect("HMAC accepts any key length");
    mac.update(b"repaero pay link\0");
    mac.update(invoice.as_bytes());
    let tag = mac.finalize().into_bytes();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&tag[..16])
}

/// Whether `token` is the pay-link token of `invoice`, in constant time.
pub fn link_token_ok(key: &str, invoice: &str, token: &str) -> bool {
    link_token(key, invoice)
        .as_bytes()
        .ct_eq(token.as_bytes())
        .into()
}

/// SHA-1 (FIPS 180-4), for shops still configured with the deprecated
/// algorithm: a few lines rather than one more crate (docs/decisions.md).
pub fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0];
    let mut msg = data.to_vec();
    let bits = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bits.to_be_bytes());
    for block in msg.chunks_exact(64) {
        let mut w = [0u32; 80];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A827999),
                20..=39 => (b ^ c ^ d, 0x6ED9EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1BBCDC),
                _ => (b ^ c ^ d, 0xCA62C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 20];
    for (i, x) in h.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&x.to_be_bytes());
    }
    out
}

/// Why a form body could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormError {
    /// A field given twice: which value was signed is ambiguous.
    Repeated(String),
    /// A `%` not followed by two hex digits, or text that is not UTF-8.
    Malformed(String),
}

impl std::fmt::Display for FormError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FormError::Repeated(k) => write!(f, "field {k} given twice"),
            FormError::Malformed(why) => write!(f, "malformed form body: {why}"),
        }
    }
}

fn unescape(part: &str) -> Result<String, FormError> {
    let b = part.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| {
                        FormError::Malformed(format!("bad escape at byte {i} of {:?}", shown(part)))
                    })?;
                out.push(hex);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out)
        .map_err(|_| FormError::Malformed(format!("{:?} is not UTF-8", shown(part))))
}

fn shown(s: &str) -> String {
    s.chars().take(60).collect()
}

/// Decode an `application/x-www-form-urlencoded` body (UTF-8; `+` is a
/// space, `%2B` a plus) into its fields, values exactly as sent. A field
/// given twice is refused.
pub fn parse_form(body: &[u8]) -> Result<BTreeMap<String, String>, FormError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| FormError::Malformed("the body is not UTF-8".into()))?;
    let mut fields = BTreeMap::new();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (unescape(k)?, unescape(v)?);
        if fields.contains_key(&k) {
            return Err(FormError::Repeated(k));
        }
        fields.insert(k, v);
    }
    Ok(fields)
}

/// Percent-encode a value for a form body (what a browser sends).
pub fn form_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Encode fields as a form body, in name order.
pub fn encode_form(fields: &BTreeMap<String, String>) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", form_escape(k), form_escape(v)))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// §4.4: the official reference vectors of the Systempay/PayZen guides.
    fn official(amount: &str, date: &str, trans: &str) -> BTreeMap<String, String> {
        map(&[
            ("vads_action_mode", "INTERACTIVE"),
            ("vads_amount", amount),
            ("vads_ctx_mode", "TEST"),
            ("vads_currency", "978"),
            ("vads_page_action", "PAYMENT"),
            ("vads_payment_config", "SINGLE"),
            ("vads_site_id", "12345678"),
            ("vads_trans_date", date),
            ("vads_trans_id", trans),
            ("vads_version", "V2"),
        ])
    }

    #[test]
    fn the_official_reference_vectors() {
        let key = "1122334455667788";
        let f = official("5124", "20170129130025", "123456");
        assert_eq!(
            signing_string(&f, key),
            "INTERACTIVE+5124+TEST+978+PAYMENT+SINGLE+12345678+20170129130025+123456+V2+1122334455667788"
        );
        assert_eq!(
            sign(&f, key, Algorithm::HmacSha256),
            "ycA5Do5tNvsnKdc/eP1bj2xa19z9q3iWPy9/rpesfS0="
        );
        assert_eq!(
            sign(&f, key, Algorithm::Sha1),
            "59c96b34c74b9375c332b0b6a32e6deeec87de2b"
        );
        let older = official("1524", "20090501193530", "654321");
        assert_eq!(
            sign(&older, key, Algorithm::Sha1),
            "606b369759fac4f0864144c803c73676cbe470ff"
        );
    }

    #[test]
    fn sha1_on_the_standard_vectors() {
        assert_eq!(
            hex::encode(sha1(b"")),
            "da39a3ee5e6b4b0d3255bfef95601890afd80709"
        );
        assert_eq!(
            hex::encode(sha1(b"abc")),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        // two blocks
        assert_eq!(
            hex::encode(sha1(
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
            )),
            "84983e441c3bd26ebaae4aa1f95129e5e54670f1"
        );
    }

    const KEY: &str = "RepAeroTestKey01";

    /// §4.2, worked example A: the payment form.
    pub fn example_a() -> BTreeMap<String, String> {
        let u = "https://erp.repaero.example/pay/";
        let url = |s: &str| format!("{u}{s}");
        let mut f = map(&[
            ("vads_action_mode", "INTERACTIVE"),
            ("vads_amount", "125000"),
            ("vads_ctx_mode", "TEST"),
            ("vads_currency", "978"),
            ("vads_cust_email", "compta@client-aviation.example"),
            ("vads_order_id", "FAC-2024-0042"),
            ("vads_page_action", "PAYMENT"),
            ("vads_payment_config", "SINGLE"),
            ("vads_return_mode", "GET"),
            ("vads_site_id", "12345678"),
            ("vads_trans_date", "20240315093000"),
            ("vads_trans_id", "x7Kp2q"),
            ("vads_version", "V2"),
        ]);
        for (k, v) in [
            ("vads_url_cancel", "cancel"),
            ("vads_url_check", "ipn"),
            ("vads_url_error", "error"),
            ("vads_url_refused", "refused"),
            ("vads_url_return", "return"),
            ("vads_url_success", "success"),
        ] {
            f.insert(k.into(), url(v));
        }
        f
    }

    #[test]
    fn worked_example_a_the_payment_form() {
        let f = example_a();
        assert_eq!(
            signing_string(&f, KEY),
            "INTERACTIVE+125000+TEST+978+compta@client-aviation.example+FAC-2024-0042+PAYMENT+SINGLE+GET+12345678+20240315093000+x7Kp2q+https://erp.repaero.example/pay/cancel+https://erp.repaero.example/pay/ipn+https://erp.repaero.example/pay/error+https://erp.repaero.example/pay/refused+https://erp.repaero.example/pay/return+https://erp.repaero.example/pay/success+V2+RepAeroTestKey01"
        );
        assert_eq!(
            sign(&f, KEY, Algorithm::HmacSha256),
            "eO+5nSk5AnYD/6bgyvepNxiTamjO/cQwjTMTbGnsoWE="
        );
        assert_eq!(
            sign(&f, KEY, Algorithm::Sha1),
            "616cf06889b71b316d7c34e21b7552d66cd8a770"
        );
    }

    /// §4.3 B1, as the raw body the bank sends.
    pub const B1_BODY: &str = "vads_amount=125000&vads_auth_mode=FULL&vads_auth_number=3fd74f&vads_auth_result=00&vads_capture_delay=0&vads_card_brand=CB&vads_card_number=497010XXXXXX0000&vads_ctx_mode=TEST&vads_currency=978&vads_cust_email=compta%40client-aviation.example&vads_effective_amount=125000&vads_effective_creation_date=20240315093142&vads_extra_result=&vads_hash=9c1b7f0e5d3a2b4c6e8f0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f&vads_operation_type=DEBIT&vads_order_id=FAC-2024-0042&vads_payment_config=SINGLE&vads_result=00&vads_sequence_number=1&vads_site_id=12345678&vads_trans_date=20240315093000&vads_trans_id=x7Kp2q&vads_trans_status=AUTHORISED&vads_trans_uuid=5f2c9a7e1b3d4c8fa0e6b2d9c7f1a3e5&vads_url_check_src=PAY&vads_version=V2&signature=FcTlXxsP%2F8V9qtd%2FHpTM3%2BxvBz5oC9RhsUarJ2hG%2BN4%3D";

    #[test]
    fn worked_examples_b_the_notifications() {
        let b1 = parse_form(B1_BODY.as_bytes()).unwrap();
        assert_eq!(
            b1["signature"],
            "FcTlXxsP/8V9qtd/HpTM3+xvBz5oC9RhsUarJ2hG+N4="
        );
        assert_eq!(b1["vads_extra_result"], "");
        assert_eq!(
            signing_string(&b1, KEY),
            "125000+FULL+3fd74f+00+0+CB+497010XXXXXX0000+TEST+978+compta@client-aviation.example+125000+20240315093142++9c1b7f0e5d3a2b4c6e8f0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f+DEBIT+FAC-2024-0042+SINGLE+00+1+12345678+20240315093000+x7Kp2q+AUTHORISED+5f2c9a7e1b3d4c8fa0e6b2d9c7f1a3e5+PAY+V2+RepAeroTestKey01"
        );
        assert!(verify(&b1, &b1["signature"], KEY, Algorithm::HmacSha256));
        // re-encoding gives the body back
        let mut without = b1.clone();
        let sig = without.remove("signature").unwrap();
        assert_eq!(
            format!("{}&signature={}", encode_form(&without), form_escape(&sig)),
            B1_BODY
        );

        // B2: refused, second attempt
        let mut b2 = b1.clone();
        for (k, v) in [
            ("vads_auth_number", ""),
            ("vads_auth_result", "51"),
            ("vads_result", "05"),
            ("vads_trans_status", "REFUSED"),
            ("vads_trans_id", "b8Lm3r"),
            ("vads_trans_date", "20240315094500"),
            ("vads_effective_creation_date", "20240315094611"),
            ("vads_trans_uuid", "0d4e8b2a6c1f4e9b8a7d3c2b1e0f9a8d"),
            (
                "vads_hash",
                "1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f809",
            ),
        ] {
            b2.insert(k.into(), v.into());
        }
        assert_eq!(
            sign(&b2, KEY, Algorithm::HmacSha256),
            "F2Cs/XPYw/lTiDJNH9gEc/sqSqRB1FG8HrldTnf5cEQ="
        );

        // B3: abandoned
        let b3 = map(&[
            ("vads_amount", "125000"),
            ("vads_ctx_mode", "TEST"),
            ("vads_currency", "978"),
            (
                "vads_hash",
                "77aa88bb99cc00dd11ee22ff33aa44bb55cc66dd77ee88ff99aa00bb11cc22dd",
            ),
            ("vads_operation_type", "DEBIT"),
            ("vads_order_id", "FAC-2024-0042"),
            ("vads_result", "17"),
            ("vads_site_id", "12345678"),
            ("vads_trans_date", "20240315100000"),
            ("vads_trans_id", "c9Nq4s"),
            ("vads_trans_status", "ABANDONED"),
            ("vads_url_check_src", "PAY"),
            ("vads_version", "V2"),
        ]);
        assert_eq!(
            sign(&b3, KEY, Algorithm::HmacSha256),
            "MmcBNFUdTfzah9RAH24NJUMfKErsH/kM/zY9C0C845k="
        );

        // B4: automatic retry of B1, another signature for the same transaction
        let mut b4 = b1.clone();
        b4.insert("vads_url_check_src".into(), "RETRY".into());
        b4.insert(
            "vads_hash".into(),
            "e3f1a2b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f70".into(),
        );
        assert_eq!(
            sign(&b4, KEY, Algorithm::HmacSha256),
            "BWsGlL5CMFTu5tLAi8R5PdN696yQjTqK6k3JRXqiWkM="
        );

        // B5: tampered amount, B1's signature kept: refused
        let mut b5 = b1.clone();
        b5.insert("vads_amount".into(), "12500".into());
        assert_eq!(
            sign(&b5, KEY, Algorithm::HmacSha256),
            "tKSTSmceZd3+LjxDcY3xNQJ5GbNAkjYLFIx6i1seIL8="
        );
        assert!(!verify(&b5, &b1["signature"], KEY, Algorithm::HmacSha256));
        // the SHA-1 of the same fields is not accepted for an HMAC shop
        assert!(!verify(
            &b1,
            &sign(&b1, KEY, Algorithm::Sha1),
            KEY,
            Algorithm::HmacSha256
        ));
        assert!(!verify(&b1, "", KEY, Algorithm::HmacSha256));
    }

    #[test]
    fn worked_example_b6_utf8_and_plus_in_values() {
        let wire = "vads_cust_last_name=B%C3%A9r%C3%A9nice+%C3%9Cnal&vads_order_info=Pi%C3%A8ce+P%2FN+123%2B456&vads_site_id=12345678";
        let f = parse_form(wire.as_bytes()).unwrap();
        assert_eq!(f["vads_cust_last_name"], "Bérénice Ünal");
        assert_eq!(f["vads_order_info"], "Pièce P/N 123+456");
        assert_eq!(
            signing_string(&f, KEY),
            "Bérénice Ünal+Pièce P/N 123+456+12345678+RepAeroTestKey01"
        );
        assert_eq!(
            sign(&f, KEY, Algorithm::HmacSha256),
            "N68aB0y8oXyh9Yez2DIailUVri3pCsHNWD1PeA0+/Sc="
        );
        assert_eq!(encode_form(&f), wire);
    }

    #[test]
    fn a_repeated_field_or_a_bad_escape_is_refused() {
        assert_eq!(
            parse_form(b"vads_amount=1&vads_amount=2"),
            Err(FormError::Repeated("vads_amount".into()))
        );
        assert!(matches!(
            parse_form(b"vads_amount=%G1"),
            Err(FormError::Malformed(_))
        ));
        assert!(matches!(
            parse_form(b"vads_amount=%C3"),
            Err(FormError::Malformed(_))
        ));
        assert_eq!(parse_form(b"").unwrap().len(), 0);
    }

    #[test]
    fn pay_link_tokens_are_per_invoice() {
        let t = link_token(KEY, "FA-2024-000042");
        assert_eq!(t.len(), 22);
        assert!(link_token_ok(KEY, "FA-2024-000042", &t));
        assert!(!link_token_ok(KEY, "FA-2024-000043", &t));
        assert!(!link_token_ok("other", "FA-2024-000042", &t));
    }
}
