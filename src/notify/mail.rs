//! E-mail by SMTP (lettre, rustls): STARTTLS (`smtp://host:587`), TLS
//! from the first byte (`smtps://host:465`), or none (`smtp+plain://host:25`,
//! a relay on the local network). Credentials come from the configuration,
//! which takes them from the environment; they never appear in a message.

use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::EmailConfig;
use crate::error::{Error, Result};

/// How to reach the server: (TLS mode, host, port).
#[derive(Debug, PartialEq, Eq)]
pub enum Security {
    StartTls,
    Tls,
    Plain,
}

/// Read `smtp[s|+plain]://host[:port]`.
pub fn parse_server(url: &str) -> Result<(Security, String, u16)> {
    let (sec, rest, port) = if let Some(r) = url.strip_prefix("smtps://") {
        (Security::Tls, r, 465)
    } else if let Some(r) = url.strip_prefix("smtp+plain://") {
        (Security::Plain, r, 25)
    } else if let Some(r) = url.strip_prefix("smtp://") {
        (Security::StartTls, r, 587)
    } else {
        return Err(Error::config(format!(
            "alerts.email.server = {url:?}: use smtp://host:587 (STARTTLS), smtps://host:465 (TLS) or smtp+plain://host:25"
        )));
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (
            h.to_string(),
            p.parse()
                .map_err(|_| Error::config(format!("alerts.email.server: bad port in {url:?}")))?,
        ),
        None => (rest.to_string(), port),
    };
    if host.is_empty() {
        return Err(Error::config(format!(
            "alerts.email.server = {url:?}: no host"
        )));
    }
    Ok((sec, host, port))
}

/// Send one text message to the configured recipients. `bound` limits
/// each network operation (lettre's timeout); the caller bounds the whole
/// send, which a server that answers slowly could otherwise stretch.
pub async fn send(
    cfg: &EmailConfig,
    subject: &str,
    body: &str,
    bound: std::time::Duration,
) -> Result<()> {
    let (sec, host, port) = parse_server(&cfg.server)?;
    let smtp_err =
        |e: lettre::transport::smtp::Error| Error::runtime(format!("SMTP {host}:{port}: {e}"));
    // the public roots, plus the relay's own CA when one is configured
    let tls = || -> Result<TlsParameters> {
        let mut params = TlsParameters::builder(host.clone());
        if let Some(path) = &cfg.ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                Error::config(format!("alerts.email.ca_file {}: {e}", path.display()))
            })?;
            let cert = Certificate::from_pem(&pem).map_err(|e| {
                Error::config(format!("alerts.email.ca_file {}: {e}", path.display()))
            })?;
            params = params.add_root_certificate(cert);
        }
        params.build_rustls().map_err(smtp_err)
    };
    let builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&host).tls(match sec {
        Security::Tls => Tls::Wrapper(tls()?),
        Security::StartTls => Tls::Required(tls()?),
        Security::Plain => Tls::None,
    });
    let mut builder = builder.port(port).timeout(Some(bound));
    if let (Some(u), Some(p)) = (&cfg.username, &cfg.password) {
        builder = builder.credentials(Credentials::new(u.clone(), p.clone()));
    }
    let transport = builder.build();
    let mut msg = Message::builder()
        .from(
            cfg.from
                .parse()
                .map_err(|e| Error::config(format!("alerts.email.from = {:?}: {e}", cfg.from)))?,
        )
        .subject(subject)
        .header(ContentType::TEXT_PLAIN);
    for to in &cfg.to {
        msg = msg.to(to
            .parse()
            .map_err(|e| Error::config(format!("alerts.email.to {to:?}: {e}")))?);
    }
    let msg = msg
        .body(body.to_string())
        .map_err(|e| Error::runtime(format!("building the message: {e}")))?;
    transport.send(msg).await.map_err(smtp_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls() {
        assert_eq!(
            parse_server("smtp://mail.repaero.fr").unwrap(),
            (Security::StartTls, "mail.repaero.fr".into(), 587)
        );
        assert_eq!(
            parse_server("smtps://mail.repaero.fr:2465").unwrap(),
            (Security::Tls, "mail.repaero.fr".into(), 2465)
        );
        assert_eq!(
            parse_server("smtp+plain://127.0.0.1:2525").unwrap(),
            (Security::Plain, "127.0.0.1".into(), 2525)
        );
        assert!(parse_server("mail.repaero.fr").is_err());
        assert!(parse_server("smtp://host:port").is_err());
    }
}
