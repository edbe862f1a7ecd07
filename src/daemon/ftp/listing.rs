//! Remote listings: `MLSD` facts, `LIST` lines (Unix `ls -l` and DOS
//! forms), and file names as the server sent them.
//!
//! Names travel as raw bytes: the session's encoding maps each byte to the
//! char of the same value ([`RawNames`]), so a name goes back to the server
//! byte for byte whatever it was written in; [`decode_name`] then reads it
//! as UTF-8 when it is, as Latin-1 otherwise (old servers).

use chrono::{DateTime, NaiveDateTime, Utc};

/// The session's encoding: one char per byte, both ways (lossless).
#[derive(Debug, Clone, Copy)]
pub struct RawNames;

impl suppaftp::Encoding for RawNames {
    fn decode(&self, bytes: &[u8]) -> String {
        bytes.iter().map(|b| char::from(*b)).collect()
    }

    fn encode(&self, text: &str) -> std::io::Result<Vec<u8>> {
        text.chars()
            .map(|c| {
                u8::try_from(u32::from(c)).map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "a name that is not one byte per char",
                    )
                })
            })
            .collect()
    }
}

/// How names are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NameEncoding {
    /// UTF-8 when the bytes are UTF-8, else Latin-1.
    #[default]
    Auto,
    #[serde(alias = "latin-1", alias = "iso-8859-1")]
    Latin1,
    #[serde(alias = "utf8")]
    Utf8,
}

/// The bytes of a raw name (one char per byte).
pub fn raw_bytes(raw: &str) -> Vec<u8> {
    raw.chars().map(|c| u32::from(c) as u8).collect()
}

/// A name as text, from its raw form.
pub fn decode_name(raw: &str, enc: NameEncoding) -> String {
    let bytes = raw_bytes(raw);
    match enc {
        NameEncoding::Latin1 => raw.to_string(),
        NameEncoding::Utf8 => String::from_utf8_lossy(&bytes).into_owned(),
        NameEncoding::Auto => match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(_) => raw.to_string(),
        },
    }
}

/// What a listing line is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    /// A symbolic link (its target when the listing gives it).
    Link(String),
    /// Something else (`OS.unix=…` types, devices).
    Other(String),
}

/// One entry of a folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The name as sent (one char per byte).
    pub raw: String,
    pub kind: Kind,
    pub size: u64,
    /// UTC, `YYYY-MM-DD HH:MM:SS`, when the listing gives it.
    pub modified: Option<String>,
}

fn stamp(t: NaiveDateTime) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// One `MLSD` line: `fact=value;…; name`. `None` for `.`/`..` entries
/// (`cdir`, `pdir`).
pub fn parse_mlsd(line: &str) -> Result<Option<Entry>, String> {
    let (facts, name) = match line.find("; ") {
        Some(end) => (&line[..end], &line[end + 2..]),
        None => match line.strip_prefix(' ') {
            Some(name) => ("", name),
            None => return Err(format!("not an MLSD line: {line:?}")),
        },
    };
    let mut kind = Kind::File;
    let mut size = 0u64;
    let mut modified = None;
    for fact in facts.split(';').filter(|f| !f.is_empty()) {
        let Some((k, v)) = fact.split_once('=') else {
            continue;
        };
        match k.to_ascii_lowercase().as_str() {
            "type" => {
                let lower = v.to_ascii_lowercase();
                kind = match lower.as_str() {
                    "file" => Kind::File,
                    "dir" => Kind::Dir,
                    "cdir" | "pdir" => return Ok(None),
                    _ if lower.starts_with("os.unix=slink")
                        || lower.starts_with("os.unix=symlink") =>
                    {
                        Kind::Link(
                            v.split_once(':')
                                .map(|(_, t)| t.to_string())
                                .unwrap_or_default(),
                        )
                    }
                    _ => Kind::Other(v.to_string()),
                };
            }
            "size" => size = v.parse().map_err(|_| format!("bad size in {line:?}"))?,
            "modify" => {
                let digits = v.split('.').next().unwrap_or(v);
                let t = NaiveDateTime::parse_from_str(digits, "%Y%m%d%H%M%S")
                    .map_err(|_| format!("bad modify fact in {line:?}"))?;
                modified = Some(stamp(t));
            }
            _ => {}
        }
    }
    if name.is_empty() || name == "." || name == ".." {
        return Ok(None);
    }
    Ok(Some(Entry {
        raw: name.to_string(),
        kind,
        size,
        modified,
    }))
}

/// One `LIST` line, Unix (`-rw-r--r-- 1 u g 1234 Nov 5 13:46 name`) or
/// DOS (`11-05-26  01:46PM  1234 name`) form. `None` for `total N` lines
/// and `.`/`..`. Times are read as UTC (the spec: local to the server,
/// with no zone given); a year-less Unix date is in the last twelve months.
pub fn parse_list(line: &str) -> Result<Option<Entry>, String> {
    if line.starts_with("total ") || line.trim().is_empty() {
        return Ok(None);
    }
    let file = match line.chars().next() {
        Some(c) if c.is_ascii_digit() => suppaftp::list::ListParser::parse_dos(line),
        _ => suppaftp::list::ListParser::parse_posix(line),
    }
    .map_err(|e| format!("unreadable listing line {line:?}: {e}"))?;
    let name = file.name().to_string();
    if name.is_empty() || name == "." || name == ".." {
        return Ok(None);
    }
    let kind = if file.is_directory() {
        Kind::Dir
    } else if file.is_symlink() {
        Kind::Link(
            file.symlink()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        )
    } else {
        Kind::File
    };
    let t: DateTime<Utc> = file.modified().into();
    Ok(Some(Entry {
        raw: name,
        kind,
        size: file.size() as u64,
        modified: Some(stamp(t.naive_utc())),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mlsd_lines() {
        let e = parse_mlsd(
            "type=file;size=1234;modify=20261130120501.123;UNIX.mode=0644; SB-26-014_R2_FR.pdf",
        )
        .unwrap()
        .unwrap();
        assert_eq!(e.raw, "SB-26-014_R2_FR.pdf");
        assert_eq!(e.kind, Kind::File);
        assert_eq!(e.size, 1234);
        assert_eq!(e.modified.as_deref(), Some("2026-11-30 12:05:01"));
        assert_eq!(
            parse_mlsd("type=cdir;modify=20261130120501; .").unwrap(),
            None
        );
        let d = parse_mlsd("type=dir;modify=20261130120501; C172")
            .unwrap()
            .unwrap();
        assert_eq!(d.kind, Kind::Dir);
        let l = parse_mlsd("type=OS.unix=slink:/nowhere;modify=20261130120501; gone.pdf")
            .unwrap()
            .unwrap();
        assert_eq!(l.kind, Kind::Link("/nowhere".into()));
        // a name with spaces and semicolons after the facts
        let n = parse_mlsd("type=file;size=3; a; b c.pdf").unwrap().unwrap();
        assert_eq!(n.raw, "a; b c.pdf");
        assert!(parse_mlsd("garbage").is_err());
    }

    #[test]
    fn list_lines_unix_and_dos() {
        let e = parse_list(
            "-rw-r--r--    1 ftp      ftp         20480 Jan 05  2025 MM-IO360-72_R11.pdf",
        )
        .unwrap()
        .unwrap();
        assert_eq!(e.raw, "MM-IO360-72_R11.pdf");
        assert_eq!((e.kind.clone(), e.size), (Kind::File, 20480));
        assert_eq!(e.modified.as_deref(), Some("2025-01-05 00:00:00"));
        let d = parse_list("drwxr-xr-x    2 ftp      ftp          4096 Nov 30 17:00 C172")
            .unwrap()
            .unwrap();
        assert_eq!(d.kind, Kind::Dir);
        let l = parse_list(
            "lrwxrwxrwx    1 ftp      ftp            11 Nov 30 17:00 old.pdf -> missing.pdf",
        )
        .unwrap()
        .unwrap();
        assert_eq!(l.raw, "old.pdf");
        assert!(matches!(l.kind, Kind::Link(t) if t == "missing.pdf"));
        let dos = parse_list("11-30-26  01:46PM                 1234 SB-26-014_R2.pdf")
            .unwrap()
            .unwrap();
        assert_eq!((dos.raw.as_str(), dos.size), ("SB-26-014_R2.pdf", 1234));
        assert_eq!(dos.modified.as_deref(), Some("2026-11-30 13:46:00"));
        let dosdir = parse_list("11-30-26  01:46PM       <DIR>          PA-28")
            .unwrap()
            .unwrap();
        assert_eq!(dosdir.kind, Kind::Dir);
        assert_eq!(parse_list("total 12").unwrap(), None);
    }

    #[test]
    fn names_in_latin1_or_utf8() {
        use suppaftp::Encoding;
        let raw = RawNames.decode(b"caf\xe9.pdf");
        assert_eq!(decode_name(&raw, NameEncoding::Auto), "café.pdf");
        assert_eq!(RawNames.encode(&raw).unwrap(), b"caf\xe9.pdf");
        let raw = RawNames.decode("café.pdf".as_bytes());
        assert_eq!(decode_name(&raw, NameEncoding::Auto), "café.pdf");
        assert_eq!(RawNames.encode(&raw).unwrap(), "café.pdf".as_bytes());
        assert_eq!(decode_name(&raw, NameEncoding::Latin1), "cafÃ©.pdf");
    }
}
