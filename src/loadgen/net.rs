//! Client sockets and token fetching.
//!
//! [`Endpoint`] opens one client stream to the target: TCP bound to the next
//! `--source-ips` address (round-robin), optionally wrapped in TLS — from the
//! first byte, or later over the same socket (XMPP STARTTLS). The TLS
//! client trusts any certificate — the target is always loopback (checked in
//! [`super::options`]), where brokers run with self-signed development
//! certificates. [`fetch_tokens`] gets one token per user with the OAuth
//! password grant over a tiny HTTP/1.1 client (one POST per connection,
//! `Connection: close`), so the library needs no HTTP client crate.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::rustls;
use tokio_rustls::TlsConnector;

use super::options::{Plan, TokenSource};
use super::{resolve_loopback, LoadError};

/// A client byte stream, plain or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
pub type BoxIo = Box<dyn Io>;

/// Where and how client connections go.
pub struct Endpoint {
    /// Where connections go; several for the nodes of a cluster.
    addrs: Vec<SocketAddr>,
    /// Set with --tls or --starttls.
    tls: Option<(TlsConnector, rustls::pki_types::ServerName<'static>)>,
    /// TLS from the first byte (else, with `tls` set, STARTTLS later).
    direct_tls: bool,
    source_ips: Vec<IpAddr>,
    next_source: AtomicUsize,
}

impl Endpoint {
    pub fn new(plan: &Plan) -> Result<Endpoint, LoadError> {
        Endpoint::to(plan, plan.targets.clone(), &plan.target_host)
    }

    /// Where the XMPP sessions go: `--xmpp-target` in the bridge
    /// scenarios, else the target.
    pub fn xmpp(plan: &Plan) -> Result<Endpoint, LoadError> {
        match plan.xmpp_target {
            Some(addr) => Endpoint::to(plan, vec![addr], &addr.ip().to_string()),
            None => Endpoint::new(plan),
        }
    }

    fn to(plan: &Plan, addrs: Vec<SocketAddr>, host: &str) -> Result<Endpoint, LoadError> {
        let first = addrs[0];
        let tls = if plan.tls || plan.starttls {
            let name = rustls::pki_types::ServerName::try_from(host.to_string())
                .unwrap_or_else(|_| first.ip().into());
            Some((TlsConnector::from(Arc::new(tls_config()?)), name))
        } else {
            None
        };
        Ok(Endpoint {
            addrs,
            tls,
            direct_tls: plan.tls,
            source_ips: plan.source_ips.clone(),
            next_source: AtomicUsize::new(0),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// Opens one stream (TCP, then TLS when asked from the first byte) to
    /// the first address.
    pub async fn connect(&self) -> std::io::Result<BoxIo> {
        self.connect_slot(0).await
    }

    /// Opens one stream to address `slot` mod the number of addresses.
    pub async fn connect_slot(&self, slot: u64) -> std::io::Result<BoxIo> {
        let addr = self.addrs[(slot % self.addrs.len() as u64) as usize];
        let tcp = self.tcp_to(addr).await?;
        match &self.tls {
            Some(_) if self.direct_tls => self.upgrade(tcp).await,
            _ => Ok(Box::new(tcp)),
        }
    }

    /// Opens a TCP connection only (the caller may [`Endpoint::upgrade`] it).
    pub async fn connect_tcp(&self) -> std::io::Result<TcpStream> {
        self.tcp_to(self.addrs[0]).await
    }

    async fn tcp_to(&self, addr: SocketAddr) -> std::io::Result<TcpStream> {
        let tcp = if self.source_ips.is_empty() {
            TcpStream::connect(addr).await?
        } else {
            let i = self.next_source.fetch_add(1, Ordering::Relaxed) % self.source_ips.len();
            let src = self.source_ips[i];
            let socket = match src {
                IpAddr::V4(_) => TcpSocket::new_v4()?,
                IpAddr::V6(_) => TcpSocket::new_v6()?,
            };
            socket.bind(SocketAddr::new(src, 0))?;
            socket.connect(addr).await?
        };
        tcp.set_nodelay(true)?;
        Ok(tcp)
    }

    /// Runs a TLS handshake over `tcp` (STARTTLS, or right after connect).
    pub async fn upgrade(&self, tcp: TcpStream) -> std::io::Result<BoxIo> {
        match &self.tls {
            None => Err(std::io::Error::other("TLS was not configured")),
            Some((connector, name)) => Ok(Box::new(connector.connect(name.clone(), tcp).await?)),
        }
    }
}

/// Accepts whatever certificate the loopback target shows; signatures are
/// still checked so the handshake is a real one (its cost is what we measure).
#[derive(Debug)]
struct LoopbackTrust(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for LoopbackTrust {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_config() -> Result<rustls::ClientConfig, LoadError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| LoadError::Setup(format!("TLS client: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(LoopbackTrust(provider)))
        .with_no_client_auth();
    Ok(config)
}

/// A parsed `http://host:port/path` token URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthUrl {
    pub tls: bool,
    pub host: String,
    pub addr: SocketAddr,
    pub path: String,
}

/// Parses and checks a token URL: http or https, loopback host only.
pub fn check_oauth_url(url: &str) -> Result<OAuthUrl, LoadError> {
    let bad = |why: &str| LoadError::Refused(format!("--oauth-url {url}: {why}"));
    let (tls, rest) = if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else {
        return Err(bad("must start with http:// or https://"));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/oauth/token"),
    };
    let with_port = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        && !authority.ends_with(']')
    {
        authority.to_string()
    } else {
        format!("{authority}:{}", if tls { 443 } else { 80 })
    };
    let addr = resolve_loopback(&with_port).map_err(|e| bad(&e.to_string()))?;
    let host = with_port
        .rsplit_once(':')
        .map(|(h, _)| h.trim_matches(['[', ']']).to_string())
        .unwrap_or_default();
    Ok(OAuthUrl {
        tls,
        host,
        addr,
        path: path.to_string(),
    })
}

/// The token of each user (index = user index) for the plan's token source:
/// the given list, or one password grant per user.
pub async fn fetch_tokens(plan: &Plan) -> Result<Vec<String>, LoadError> {
    match &plan.tokens {
        TokenSource::None => Ok(Vec::new()),
        TokenSource::List(list) => Ok(list.clone()),
        TokenSource::OAuth {
            url,
            client_id,
            client_secret,
        } => {
            let url = check_oauth_url(url)?;
            let mut tokens = Vec::with_capacity(plan.users as usize);
            for u in 0..plan.users {
                let form: String = form_urlencoded::Serializer::new(String::new())
                    .append_pair("grant_type", "password")
                    .append_pair("username", &plan.username(u))
                    .append_pair("password", &plan.password)
                    .append_pair("client_id", client_id)
                    .append_pair("client_secret", client_secret)
                    .append_pair("scope", "sasl_auth")
                    .finish();
                let body = tokio::time::timeout(Duration::from_secs(15), post_form(&url, &form))
                    .await
                    .map_err(|_| LoadError::Token(format!("{} timed out", url.path)))??;
                tokens.push(access_token(&body)?);
            }
            Ok(tokens)
        }
    }
}

async fn post_form(url: &OAuthUrl, form: &str) -> Result<(u16, String), LoadError> {
    let tcp = TcpStream::connect(url.addr)
        .await
        .map_err(|e| LoadError::io(format!("connect {}", url.addr), e))?;
    let mut io: BoxIo = if url.tls {
        let name = rustls::pki_types::ServerName::try_from(url.host.clone())
            .unwrap_or_else(|_| url.addr.ip().into());
        let connector = TlsConnector::from(Arc::new(tls_config()?));
        Box::new(
            connector
                .connect(name, tcp)
                .await
                .map_err(|e| LoadError::io("TLS to the token endpoint", e))?,
        )
    } else {
        Box::new(tcp)
    };
    let request = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Accept: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
        url.path,
        url.addr,
        form.len()
    );
    io.write_all(request.as_bytes())
        .await
        .map_err(|e| LoadError::io("send token request", e))?;
    let mut response = Vec::new();
    // Bounded: a token response is small; refuse anything huge.
    let mut limited = io.take(1 << 20);
    limited
        .read_to_end(&mut response)
        .await
        .map_err(|e| LoadError::io("read token response", e))?;
    parse_response(&response)
}

/// Status code and body of an HTTP/1.1 response (Content-Length or chunked
/// with the whole body in hand; the body is JSON either way, so for chunked
/// replies the JSON object is cut out between its outer braces).
fn parse_response(raw: &[u8]) -> Result<(u16, String), LoadError> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| LoadError::Token("malformed HTTP response".into()))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| LoadError::Token("no HTTP status".into()))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:")
            && l.to_ascii_lowercase().contains("chunked")
    });
    let body = if chunked {
        match (body.find('{'), body.rfind('}')) {
            (Some(a), Some(b)) if a < b => body[a..=b].to_string(),
            _ => String::new(),
        }
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn access_token((status, body): &(u16, String)) -> Result<String, LoadError> {
    let v: serde_json::Value = serde_json::from_str(body)
        .map_err(|_| LoadError::Token(format!("HTTP {status} with a non-JSON body")))?;
    match v.get("access_token").and_then(|t| t.as_str()) {
        Some(t) if *status == 200 => Ok(t.to_string()),
        _ => Err(LoadError::Token(format!(
            "HTTP {status}: {}",
            v.get("error")
                .and_then(|e| e.as_str())
                .unwrap_or("no access_token")
        ))),
    }
}

/// Writes everything in `wbuf` and flushes (TLS keeps records until
/// flushed). Cancel-safe: bytes are taken off the buffer as the socket
/// accepts them, so a write dropped half-way (by a timeout or
/// `now_or_never`) resumes where it stopped instead of sending twice.
pub async fn write_buffered<W>(io: &mut W, wbuf: &mut bytes::BytesMut) -> std::io::Result<()>
where
    W: tokio::io::AsyncWrite + Unpin + ?Sized,
{
    use bytes::Buf;
    use tokio::io::AsyncWriteExt;
    while !wbuf.is_empty() {
        let n = io.write(wbuf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        wbuf.advance(n);
    }
    io.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oauth_urls() {
        let u = check_oauth_url("http://127.0.0.1:5280/oauth/token").unwrap();
        assert_eq!(u.addr, "127.0.0.1:5280".parse().unwrap());
        assert_eq!(u.path, "/oauth/token");
        assert!(!u.tls);
        let u = check_oauth_url("https://localhost:5443/oauth/token").unwrap();
        assert!(u.tls);
        assert_eq!(u.host, "localhost");
        let u = check_oauth_url("http://[::1]:5280/x").unwrap();
        assert_eq!(u.addr, "[::1]:5280".parse().unwrap());
        assert!(check_oauth_url("ftp://127.0.0.1/x").is_err());
        assert!(check_oauth_url("http://10.0.0.1:5280/oauth/token")
            .unwrap_err()
            .to_string()
            .contains("not loopback"));
    }

    #[test]
    fn token_responses() {
        let ok = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 40\r\n\r\n{\"access_token\":\"abc\",\"expires_in\":10}";
        let r = parse_response(ok).unwrap();
        assert_eq!(access_token(&r).unwrap(), "abc");
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n17\r\n{\"access_token\":\"xyz\"}\r\n0\r\n\r\n";
        assert_eq!(
            access_token(&parse_response(chunked).unwrap()).unwrap(),
            "xyz"
        );
        let bad =
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 24\r\n\r\n{\"error\":\"invalid_grant\"}";
        let e = access_token(&parse_response(bad).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("400") && e.contains("invalid_grant"), "{e}");
        assert!(parse_response(b"garbage").is_err());
    }
}
