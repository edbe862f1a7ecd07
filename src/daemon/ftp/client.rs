//! One FTP session with a manufacturer's server (suppaftp, async, rustls):
//! explicit TLS (`AUTH TLS`, `PROT P`) or plain FTP, passive data
//! connections (`EPSV`, else `PASV`), binary transfers, folder listings
//! (`MLSD`, else `LIST`) and downloads that resume at an offset (`REST`).
//!
//! Every exchange has a time limit, so a server that stops answering fails
//! the poll instead of hanging it. The password is sent, never logged nor
//! put in an error.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use suppaftp::tokio::{AsyncRustlsConnector, AsyncRustlsFtpStream};
use suppaftp::types::FileType;
use suppaftp::{FtpError, Mode, Status};
use tokio::io::AsyncReadExt;

use super::listing::{self, Entry, RawNames};
use super::{ListingMode, Manufacturer, TlsMode};
use crate::error::{Error, Result};

/// A listing that failed: the folder cannot be read (the session goes on),
/// or the session itself failed.
#[derive(Debug)]
pub enum ListError {
    Unreadable(String),
    Session(Error),
}

/// A download that stopped: how many bytes of this attempt were written,
/// and why.
#[derive(Debug)]
pub struct Cut {
    pub written: u64,
    pub reason: String,
    /// The server refused the offset (`REST`): start again from 0.
    pub rest_refused: bool,
    /// The server refused the file itself (`550`): no point retrying now.
    pub refused: bool,
}

/// An open, logged-in session.
pub struct Session {
    ftp: AsyncRustlsFtpStream,
    timeout: Duration,
    /// `MLSD` answered (or was configured); `LIST` otherwise.
    mlsd: bool,
    listing: ListingMode,
    /// Commands sent that fetched a file (`RETR`), for the report.
    pub retr: u64,
}

fn ftp_err(what: &str, e: FtpError) -> Error {
    match e {
        FtpError::UnexpectedResponse(r) => Error::runtime(format!(
            "{what}: the server answered {} {}",
            r.status.code(),
            String::from_utf8_lossy(&r.body).trim()
        )),
        other => Error::runtime(format!("{what}: {other}")),
    }
}

async fn timed<T>(
    limit: Duration,
    what: &str,
    f: impl std::future::Future<Output = std::result::Result<T, FtpError>>,
) -> Result<std::result::Result<T, FtpError>> {
    tokio::time::timeout(limit, f)
        .await
        .map_err(|_| Error::runtime(format!("{what}: no answer within {} s", limit.as_secs())))
}

/// The TLS client configuration: the public roots, plus `ca_file`.
fn tls_connector(m: &Manufacturer) -> Result<AsyncRustlsConnector> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = &m.ca_file {
        let pem = std::fs::read(path).map_err(|e| {
            Error::config(format!(
                "[daemons.ftp.manufacturers.{}] ca_file {}: {e}",
                m.name,
                path.display()
            ))
        })?;
        let mut n = 0;
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem).flatten() {
            roots.add(cert).map_err(|e| {
                Error::config(format!("{}: ca_file {}: {e}", m.name, path.display()))
            })?;
            n += 1;
        }
        if n == 0 {
            return Err(Error::config(format!(
                "{}: ca_file {} holds no PEM certificate",
                m.name,
                path.display()
            )));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::runtime(format!("{}: TLS setup: {e}", m.name)))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(AsyncRustlsConnector::from(
        suppaftp::tokio_rustls::TlsConnector::from(Arc::new(config)),
    ))
}

impl Session {
    /// Connect, secure (explicit TLS), log in, binary mode.
    pub async fn open(m: &Manufacturer) -> Result<Session> {
        let limit = m.timeout;
        let addr = format!("{}:{}", m.host, m.port);
        let what = format!("{} ({addr})", m.name);
        let mut ftp = timed(limit, &what, AsyncRustlsFtpStream::connect(addr.clone()))
            .await?
            .map_err(|e| ftp_err(&format!("{what}: connect"), e))?;
        // one small command, one small answer, in turn: no Nagle delay
        let _ = ftp.get_ref().await.set_nodelay(true);
        if m.tls == TlsMode::Explicit {
            let connector = tls_connector(m)?;
            ftp = timed(limit, &what, ftp.into_secure(connector, &m.host))
                .await?
                .map_err(|e| ftp_err(&format!("{what}: AUTH TLS"), e))?;
        }
        ftp.set_mode(if m.passive {
            Mode::ExtendedPassive
        } else {
            Mode::Active
        });
        timed(
            limit,
            &what,
            ftp.login(m.user.as_str(), m.password.as_str()),
        )
        .await?
        .map_err(|e| match e {
            FtpError::UnexpectedResponse(r) => Error::runtime(format!(
                "{what}: login refused for user {}: {} {}",
                m.user,
                r.status.code(),
                String::from_utf8_lossy(&r.body).trim()
            )),
            other => ftp_err(&format!("{what}: login"), other),
        })?;
        // names as raw bytes from now on (the login was UTF-8)
        ftp.set_encoding(RawNames).await;
        timed(limit, &what, ftp.transfer_type(FileType::Binary))
            .await?
            .map_err(|e| ftp_err(&format!("{what}: TYPE I"), e))?;
        Ok(Session {
            ftp,
            timeout: limit,
            mlsd: m.listing != ListingMode::List,
            listing: m.listing,
            retr: 0,
        })
    }

    /// Whether this session lists with `MLSD`.
    pub fn uses_mlsd(&self) -> bool {
        self.mlsd
    }

    /// The entries of a folder (raw path), with the lines that could not
    /// be read.
    pub async fn list(
        &mut self,
        dir: &str,
    ) -> std::result::Result<(Vec<Entry>, Vec<String>), ListError> {
        let lines = loop {
            let res = if self.mlsd {
                timed(self.timeout, dir, self.ftp.mlsd(Some(dir))).await
            } else {
                timed(self.timeout, dir, self.ftp.list(Some(dir))).await
            }
            .map_err(ListError::Session)?;
            match res {
                Ok(lines) => break lines,
                Err(FtpError::UnexpectedResponse(r)) => {
                    let code = r.status.code();
                    let text = String::from_utf8_lossy(&r.body).trim().to_string();
                    // EPSV refused: PASV
                    if matches!(r.status, Status::BadCommand | Status::NotImplemented)
                        && text.contains("EPSV")
                    {
                        self.ftp.set_mode(Mode::Passive);
                        continue;
                    }
                    // no MLSD on this server: LIST
                    if self.mlsd
                        && self.listing == ListingMode::Auto
                        && matches!(
                            r.status,
                            Status::BadCommand | Status::NotImplemented | Status::BadArguments
                        )
                    {
                        tracing::info!("no MLSD ({code} {text}): listing with LIST");
                        self.mlsd = false;
                        continue;
                    }
                    if (400..600).contains(&code) && code != 421 && code != 425 && code != 426 {
                        return Err(ListError::Unreadable(format!("{code} {text}")));
                    }
                    return Err(ListError::Session(Error::runtime(format!(
                        "listing {dir}: the server answered {code} {text}"
                    ))));
                }
                Err(e) => return Err(ListError::Session(ftp_err(&format!("listing {dir}"), e))),
            }
        };
        let mut entries = Vec::new();
        let mut bad = Vec::new();
        for line in lines {
            let parsed = if self.mlsd {
                listing::parse_mlsd(&line)
            } else {
                listing::parse_list(&line)
            };
            match parsed {
                Ok(Some(e)) => entries.push(e),
                Ok(None) => {}
                Err(e) => bad.push(e),
            }
        }
        Ok((entries, bad))
    }

    /// Fetch `path` (raw) from `offset` on, appending to `out`; the bytes
    /// written on success.
    pub async fn retrieve(
        &mut self,
        path: &str,
        offset: u64,
        out: &mut std::fs::File,
    ) -> std::result::Result<u64, Cut> {
        let cut = |written: u64, reason: String| Cut {
            written,
            reason,
            rest_refused: false,
            refused: false,
        };
        if offset > 0 {
            let _ = self.ftp.resume_transfer(offset as usize).await;
        }
        self.retr += 1;
        let opened = timed(self.timeout, path, self.ftp.retr_as_stream(path)).await;
        let mut stream = match opened {
            Err(e) => return Err(cut(0, e.to_string())),
            Ok(Ok(s)) => s,
            Ok(Err(FtpError::UnexpectedResponse(r))) => {
                let code = r.status.code();
                let text = String::from_utf8_lossy(&r.body).trim().to_string();
                return Err(Cut {
                    written: 0,
                    reason: format!("the server answered {code} {text}"),
                    // a refused REST comes back as the answer to it
                    rest_refused: offset > 0 && (code == 350 || (500..=504).contains(&code)),
                    refused: code == 550,
                });
            }
            Ok(Err(e)) => return Err(cut(0, e.to_string())),
        };
        let mut buf = vec![0u8; 256 * 1024];
        let mut written = 0u64;
        loop {
            let n = match tokio::time::timeout(self.timeout, stream.read(&mut buf)).await {
                Err(_) => {
                    return Err(cut(
                        written,
                        format!("no data within {} s", self.timeout.as_secs()),
                    ));
                }
                Ok(Err(e)) => return Err(cut(written, format!("data connection: {e}"))),
                Ok(Ok(0)) => break,
                Ok(Ok(n)) => n,
            };
            if let Err(e) = out.write_all(&buf[..n]) {
                return Err(cut(written, format!("writing the local file: {e}")));
            }
            written += n as u64;
        }
        match timed(self.timeout, path, stream.finish()).await {
            Ok(Ok(())) => Ok(written),
            Ok(Err(e)) => Err(cut(written, ftp_err("end of transfer", e).to_string())),
            Err(e) => Err(cut(written, e.to_string())),
        }
    }

    /// Fetch a small file (a manifest) into memory.
    pub async fn fetch_small(&mut self, path: &str, limit: u64) -> Result<Vec<u8>> {
        self.retr += 1;
        let mut stream = timed(self.timeout, path, self.ftp.retr_as_stream(path))
            .await?
            .map_err(|e| ftp_err(&format!("RETR {path}"), e))?;
        let mut body = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = tokio::time::timeout(self.timeout, stream.read(&mut chunk))
                .await
                .map_err(|_| {
                    Error::runtime(format!(
                        "{path}: no data within {} s",
                        self.timeout.as_secs()
                    ))
                })?
                .map_err(|e| Error::runtime(format!("{path}: data connection: {e}")))?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
            if body.len() as u64 > limit {
                return Err(Error::runtime(format!("{path}: larger than {limit} bytes")));
            }
        }
        timed(self.timeout, path, stream.finish())
            .await?
            .map_err(|e| ftp_err(&format!("RETR {path}"), e))?;
        Ok(body)
    }

    /// Say goodbye (errors do not matter: the poll is over).
    pub async fn quit(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), self.ftp.quit()).await;
    }
}
