//! TLS to PostgreSQL, as libpq's `sslmode` and `sslrootcert` ask for it.
//!
//! tokio-postgres parses `sslmode` only as far as `disable`, `prefer` and
//! `require`, and knows no `sslrootcert`; operators copy URLs written for
//! libpq (`?sslmode=verify-full&sslrootcert=/etc/postdesk/db-ca.pem`). So
//! both keys are taken out of the URL (or key=value string) first
//! ([`split`]), and the TLS client is built here ([`Tls::connector`]):
//!
//! | `sslmode`                 | postdesk                                          |
//! | ------------------------- | ------------------------------------------------- |
//! | absent, `allow`, `prefer` | no TLS (a Unix socket, or a trusted network)      |
//! | `disable`                 | no TLS                                            |
//! | `require`                 | TLS; the certificate checked against `sslrootcert` if one is named (libpq's rule), else not checked |
//! | `verify-ca`               | TLS; the chain checked against `sslrootcert`, else the system's roots |
//! | `verify-full`             | as `verify-ca`, and the host name (or IP) too     |
//!
//! `sslrootcert=system` names the system's roots (libpq 16). Unlike
//! libpq, `prefer` does not try TLS: an encryption nobody checks is no
//! protection, and the operator who wants it says `require` or better.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

/// What the URL asks of TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Tls {
    pub mode: Mode,
    /// `sslrootcert`: a PEM file of CA certificates, or `None` for the
    /// system's roots (`sslrootcert=system`, or none named).
    pub root: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Off,
    Require,
    VerifyCa,
    VerifyFull,
}

/// The URL without `sslmode` and `sslrootcert`, and what they said.
/// `Err`: the problem, without quoting the text (it holds a password).
pub(super) fn split(text: &str) -> Result<(String, Tls), String> {
    let (rest, pairs) = if text.starts_with("postgres://") || text.starts_with("postgresql://") {
        split_url(text)?
    } else {
        split_key_value(text)?
    };
    let mut mode = None;
    let mut root = None;
    for (key, value) in pairs {
        match key.as_str() {
            "sslmode" => mode = Some(value),
            _ => root = Some(value),
        }
    }
    let mode = match mode.as_deref() {
        None | Some("disable" | "allow" | "prefer") => Mode::Off,
        Some("require") => Mode::Require,
        Some("verify-ca") => Mode::VerifyCa,
        Some("verify-full") => Mode::VerifyFull,
        Some(other) => {
            return Err(format!(
                "sslmode {other:?} is not one of disable, allow, prefer, require, verify-ca, \
                 verify-full"
            ))
        }
    };
    let root = match root.as_deref() {
        None => None,
        // libpq 16: the system's roots, for `verify-full` only (any CA
        // would vouch for any name).
        Some("system") if mode == Mode::VerifyFull || mode == Mode::Off => None,
        Some("system") => {
            return Err(
                "sslrootcert=system needs sslmode=verify-full (any public CA would do for \
                 a weaker mode)"
                    .into(),
            )
        }
        Some("") => return Err("sslrootcert is empty".into()),
        Some(path) => Some(PathBuf::from(path)),
    };
    Ok((rest, Tls { mode, root }))
}

const KEYS: [&str; 2] = ["sslmode", "sslrootcert"];

/// `postgres://…?a=b&sslmode=…`: the query's pairs for [`KEYS`] taken out
/// (percent-decoded), the others kept as written.
fn split_url(text: &str) -> Result<(String, Vec<(String, String)>), String> {
    let Some((base, query)) = text.split_once('?') else {
        return Ok((text.to_string(), Vec::new()));
    };
    let mut kept = Vec::new();
    let mut taken = Vec::new();
    for part in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = part.split_once('=').unwrap_or((part, ""));
        let key = percent_decode(key)?;
        if KEYS.contains(&key.as_str()) {
            taken.push((key, percent_decode(value)?));
        } else {
            kept.push(part);
        }
    }
    let rest = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, taken))
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or("a bad %-escape in the URL's query")?;
                out.push(hex);
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| "the URL's query is not UTF-8".to_string())
}

/// `host=… sslmode=require …`: libpq's key = value form (values bare or
/// single-quoted with backslash escapes); the pairs for [`KEYS`] taken
/// out, the others kept as written.
fn split_key_value(text: &str) -> Result<(String, Vec<(String, String)>), String> {
    let mut kept: Vec<&str> = Vec::new();
    let mut taken = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let start = rest;
        let eq = rest
            .find('=')
            .ok_or("a key without '=' in the connection string")?;
        let key = rest[..eq].trim().to_string();
        rest = rest[eq + 1..].trim_start();
        let mut value = String::new();
        if let Some(quoted) = rest.strip_prefix('\'') {
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            value.push(n);
                        }
                    }
                    '\'' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => value.push(c),
                }
            }
            let end = end.ok_or("an unterminated quote in the connection string")?;
            rest = &quoted[end..];
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            value.push_str(&rest[..end]);
            rest = &rest[end..];
        }
        let pair = &start[..start.len() - rest.len()];
        if KEYS.contains(&key.as_str()) {
            taken.push((key, value));
        } else {
            kept.push(pair);
        }
        rest = rest.trim_start();
    }
    Ok((kept.join(" "), taken))
}

impl Tls {
    /// The TLS client for [`Mode::Require`] and up; `None` for
    /// [`Mode::Off`]. `Err`: a CA file that cannot be read or holds no
    /// certificate, or no system roots.
    pub(super) fn connector(
        &self,
    ) -> Result<Option<tokio_postgres_rustls::MakeRustlsConnect>, String> {
        if self.mode == Mode::Off {
            return Ok(None);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        // `require` checks nothing unless a CA file is named (libpq's rule).
        let check = !(self.mode == Mode::Require && self.root.is_none());
        let inner = if check {
            let roots = match &self.root {
                Some(path) => roots_from(path)?,
                None => system_roots()?,
            };
            Some(
                rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider.clone(),
                )
                .build()
                .map_err(|e| format!("cannot check the database's certificates: {e}"))?,
            )
        } else {
            None
        };
        let verifier = Verifier {
            inner,
            check_name: self.mode == Mode::VerifyFull,
            provider: provider.clone(),
        };
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("cannot set up TLS: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        Ok(Some(tokio_postgres_rustls::MakeRustlsConnect::new(config)))
    }
}

fn roots_from(path: &Path) -> Result<rustls::RootCertStore, String> {
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read sslrootcert {}: {e}", path.display()))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!(
            "sslrootcert {} holds no certificate",
            path.display()
        ));
    }
    Ok(roots)
}

fn system_roots() -> Result<rustls::RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        return Err(
            "the system has no CA certificates to check the database's against; name them \
             with sslrootcert"
                .into(),
        );
    }
    Ok(roots)
}

/// webpki's check, without the name for `verify-ca` and without the chain
/// for a bare `require`; the handshake's signatures are always checked.
#[derive(Debug)]
struct Verifier {
    inner: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    check_name: bool,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(inner) = &self.inner else {
            return Ok(ServerCertVerified::assertion());
        };
        match inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn tls(mode: Mode, root: Option<&str>) -> Tls {
        Tls {
            mode,
            root: root.map(PathBuf::from),
        }
    }

    #[test]
    fn a_url_loses_the_tls_keys_and_keeps_the_rest() {
        let (rest, t) = split(
            "postgres://u:p%40ss@db.example:5432/desk?sslmode=verify-full&application_name=x&sslrootcert=%2Fetc%2Fca.pem",
        )
        .unwrap();
        assert_eq!(
            rest,
            "postgres://u:p%40ss@db.example:5432/desk?application_name=x"
        );
        assert_eq!(t, tls(Mode::VerifyFull, Some("/etc/ca.pem")));

        let (rest, t) = split("postgresql://db/desk?sslmode=require").unwrap();
        assert_eq!(rest, "postgresql://db/desk");
        assert_eq!(t, tls(Mode::Require, None));

        let (rest, t) = split("postgres://db/desk").unwrap();
        assert_eq!(rest, "postgres://db/desk");
        assert_eq!(t, tls(Mode::Off, None));

        let (_, t) = split("postgres://db/desk?sslmode=prefer&sslrootcert=system").unwrap();
        assert_eq!(t, tls(Mode::Off, None));
    }

    #[test]
    fn a_key_value_string_loses_the_tls_keys_and_keeps_the_rest() {
        let (rest, t) = split(
            "host=db.example  sslmode = verify-ca password='a \\' b' sslrootcert='/etc/my ca.pem' dbname=desk",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rest, "host=db.example password='a \\' b' dbname=desk");
        assert_eq!(t, tls(Mode::VerifyCa, Some("/etc/my ca.pem")));

        let (rest, t) = split("host=/run/postgresql dbname=desk").unwrap();
        assert_eq!(rest, "host=/run/postgresql dbname=desk");
        assert_eq!(t.mode, Mode::Off);
    }

    #[test]
    fn bad_values_are_named_without_the_text() {
        let e = split("postgres://u:secret@db/x?sslmode=verify").unwrap_err();
        assert!(e.contains("\"verify\"") && !e.contains("secret"), "{e}");
        let e = split("host=db password='secret").unwrap_err();
        assert!(!e.contains("secret"), "{e}");
        let e = split("postgres://db/x?sslmode=require&sslrootcert=system").unwrap_err();
        assert!(e.contains("verify-full"), "{e}");
        let e = split("postgres://db/x?sslrootcert=").unwrap_err();
        assert!(e.contains("empty"), "{e}");
        let e = tls(Mode::VerifyFull, Some("/nonexistent/ca.pem"))
            .connector()
            .err()
            .unwrap_or_default();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    }
}
