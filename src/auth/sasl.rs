//! SASL payload parsing for the mechanisms Petrel offers (RFC 6120 §6).
//!
//! The XMPP layer takes the character data of `<auth/>` and `<response/>`
//! elements, decodes it with [`decode_base64_payload`], and hands the bytes to
//! the parser for the negotiated mechanism. Everything here is a pure
//! function over bytes: no I/O, no account lookup. The caller checks the
//! credentials and turns any [`SaslError`] into a `<failure/>` with
//! [`SaslError::condition`] as the child element name.
//!
//! * PLAIN (RFC 4616) and X-OAUTH2 share the wire shape
//!   `[authzid] NUL authcid NUL secret` ([`parse_plain`]).
//! * OAUTHBEARER (RFC 7628): [`parse_oauthbearer`], plus
//!   [`oauthbearer_failure_json`] for the server's error challenge and
//!   [`is_oauthbearer_error_ack`] for the client's reply to it.
//! * The GS2 header and `saslname` helpers are shared with SCRAM
//!   (`super::scram`).
//!
//! This module deliberately does not depend on the XMPP modules.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

/// Longest authentication or authorization identity accepted, in bytes. A
/// full JID is at most 3071 bytes (RFC 7622 §3: three parts of 1023 plus
/// separators).
pub const MAX_IDENTITY_LEN: usize = 3071;
/// Longest password or token accepted, in bytes. Passwords are far shorter,
/// but OAuth tokens (JWTs) routinely exceed 1 KB.
pub const MAX_SECRET_LEN: usize = 16_384;

/// A SASL failure, named after its RFC 6120 §6.5 condition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    /// The client aborted the exchange.
    #[error("aborted")]
    Aborted,
    /// The account exists but is disabled.
    #[error("account-disabled")]
    AccountDisabled,
    /// The credentials are valid but expired.
    #[error("credentials-expired")]
    CredentialsExpired,
    /// The mechanism needs a TLS-protected stream.
    #[error("encryption-required")]
    EncryptionRequired,
    /// The base64 text could not be decoded.
    #[error("incorrect-encoding: invalid base64")]
    IncorrectEncoding,
    /// The authenticated user may not act as the requested authzid.
    #[error("invalid-authzid")]
    InvalidAuthzid,
    /// The mechanism is not offered.
    #[error("invalid-mechanism")]
    InvalidMechanism,
    /// The decoded payload does not follow the mechanism's syntax.
    #[error("malformed-request: {0}")]
    MalformedRequest(&'static str),
    /// Policy requires a stronger mechanism for this account.
    #[error("mechanism-too-weak")]
    MechanismTooWeak,
    /// Wrong credentials (deliberately without detail, so the reply does not
    /// reveal whether the account exists).
    #[error("not-authorized")]
    NotAuthorized,
    /// A server-side problem (e.g. the account store is unreachable).
    #[error("temporary-auth-failure")]
    TemporaryAuthFailure,
}

impl SaslError {
    /// The RFC 6120 §6.5 failure condition element name.
    pub fn condition(&self) -> &'static str {
        match self {
            SaslError::Aborted => "aborted",
            SaslError::AccountDisabled => "account-disabled",
            SaslError::CredentialsExpired => "credentials-expired",
            SaslError::EncryptionRequired => "encryption-required",
            SaslError::IncorrectEncoding => "incorrect-encoding",
            SaslError::InvalidAuthzid => "invalid-authzid",
            SaslError::InvalidMechanism => "invalid-mechanism",
            SaslError::MalformedRequest(_) => "malformed-request",
            SaslError::MechanismTooWeak => "mechanism-too-weak",
            SaslError::NotAuthorized => "not-authorized",
            SaslError::TemporaryAuthFailure => "temporary-auth-failure",
        }
    }
}

fn malformed(msg: &'static str) -> SaslError {
    SaslError::MalformedRequest(msg)
}

/// Decodes the character data of `<auth/>`, `<response/>` etc.
///
/// A lone `=` is the empty response (RFC 6120 §6.4.2); empty text also
/// decodes to no bytes, so a caller that must tell "no initial response"
/// (`<auth mechanism='X'/>`) apart has to check for empty text first.
/// Surrounding ASCII whitespace is tolerated; anything else that is not
/// canonical padded base64 is `incorrect-encoding`.
pub fn decode_base64_payload(text: &str) -> Result<Vec<u8>, SaslError> {
    let t = text.trim_matches(|c: char| c.is_ascii_whitespace());
    if t.is_empty() || t == "=" {
        return Ok(Vec::new());
    }
    STANDARD.decode(t).map_err(|_| SaslError::IncorrectEncoding)
}

/// Encodes a challenge or success payload; empty data becomes `=`.
pub fn encode_base64_payload(data: &[u8]) -> String {
    if data.is_empty() {
        "=".to_owned()
    } else {
        STANDARD.encode(data)
    }
}

/// Credentials from a PLAIN or X-OAUTH2 message. For X-OAUTH2 `secret` is
/// the token.
#[derive(Clone, PartialEq, Eq)]
pub struct PlainCreds {
    /// Requested authorization identity; `None` when sent empty.
    pub authzid: Option<String>,
    /// Authentication identity (non-empty).
    pub authcid: String,
    /// Password or token (non-empty), as sent: no normalization.
    pub secret: String,
}

// Hand-written so secrets never end up in logs.
impl fmt::Debug for PlainCreds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlainCreds")
            .field("authzid", &self.authzid)
            .field("authcid", &self.authcid)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Parses `[authzid] NUL authcid NUL secret` (RFC 4616 §2), used by PLAIN
/// and X-OAUTH2.
pub fn parse_plain(payload: &[u8]) -> Result<PlainCreds, SaslError> {
    if payload.len() > 2 * MAX_IDENTITY_LEN + MAX_SECRET_LEN + 2 {
        return Err(malformed("message too long"));
    }
    let mut parts = payload.split(|b| *b == 0);
    let (Some(authzid), Some(authcid), Some(secret), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("expected exactly two NUL separators"));
    };
    if authcid.is_empty() {
        return Err(malformed("empty authentication identity"));
    }
    if secret.is_empty() {
        return Err(malformed("empty password"));
    }
    if authzid.len() > MAX_IDENTITY_LEN || authcid.len() > MAX_IDENTITY_LEN {
        return Err(malformed("identity too long"));
    }
    if secret.len() > MAX_SECRET_LEN {
        return Err(malformed("password too long"));
    }
    let authzid = utf8(authzid)?;
    Ok(PlainCreds {
        authzid: (!authzid.is_empty()).then(|| authzid.to_owned()),
        authcid: utf8(authcid)?.to_owned(),
        secret: utf8(secret)?.to_owned(),
    })
}

fn utf8(b: &[u8]) -> Result<&str, SaslError> {
    std::str::from_utf8(b).map_err(|_| malformed("invalid UTF-8"))
}

/// The GS2 channel-binding flag (RFC 5801 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CbFlag {
    /// `n`: the client does not support channel binding.
    No,
    /// `y`: the client supports it but thinks the server does not. A server
    /// that does advertise a `-PLUS` mechanism must fail such an exchange
    /// (downgrade protection); Petrel advertises none, so it is accepted.
    Yes,
}

/// A parsed GS2 header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gs2Header {
    /// The channel-binding flag.
    pub cb_flag: CbFlag,
    /// Decoded `a=` value, if present.
    pub authzid: Option<String>,
    /// Length in bytes of the header including its final comma; the raw
    /// header is what SCRAM's `c=` attribute must echo.
    pub len: usize,
}

/// Parses `gs2-cbind-flag "," [authzid] ","` at the start of `msg`.
/// `p=` (actual channel binding) is rejected: no `-PLUS` mechanism is
/// offered, so a client using it is not following the negotiation.
pub fn parse_gs2_header(msg: &str) -> Result<Gs2Header, SaslError> {
    let cb_flag = if msg.starts_with("n,") {
        CbFlag::No
    } else if msg.starts_with("y,") {
        CbFlag::Yes
    } else if msg.starts_with("p=") {
        return Err(malformed("channel binding is not supported"));
    } else {
        return Err(malformed("bad GS2 header"));
    };
    let rest = &msg[2..];
    let end = rest
        .find(',')
        .ok_or(malformed("bad GS2 header: missing ','"))?;
    let authzid = match &rest[..end] {
        "" => None,
        a => match a.strip_prefix("a=") {
            Some(name) => Some(decode_saslname(name)?),
            None => return Err(malformed("bad GS2 header: expected a=")),
        },
    };
    Ok(Gs2Header {
        cb_flag,
        authzid,
        len: 2 + end + 1,
    })
}

/// Decodes a `saslname` (RFC 5802 §7): `=2C` is `,`, `=3D` is `=`, and no
/// other `=` may appear. Empty names, NUL and raw `,` are rejected.
pub fn decode_saslname(s: &str) -> Result<String, SaslError> {
    if s.is_empty() {
        return Err(malformed("empty name"));
    }
    if s.len() > MAX_IDENTITY_LEN {
        return Err(malformed("name too long"));
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(['=', ',', '\0']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if tail.starts_with("=2C") {
            out.push(',');
        } else if tail.starts_with("=3D") {
            out.push('=');
        } else {
            return Err(malformed("bad escape in name"));
        }
        rest = &tail[3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Credentials from an OAUTHBEARER initial response.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerCreds {
    /// Decoded `a=` value of the GS2 header.
    pub authzid: Option<String>,
    /// The bearer token (`b64token` syntax checked).
    pub token: String,
}

impl fmt::Debug for BearerCreds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerCreds")
            .field("authzid", &self.authzid)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// Parses an OAUTHBEARER client response (RFC 7628 §3.1):
/// `gs2-header %x01 *(key "=" value %x01) %x01`, requiring exactly one
/// `auth=Bearer <token>` pair (scheme matched case-insensitively). Other
/// pairs such as `host` and `port` are syntax-checked and ignored.
pub fn parse_oauthbearer(payload: &[u8]) -> Result<BearerCreds, SaslError> {
    if payload.len() > MAX_IDENTITY_LEN + MAX_SECRET_LEN + 1024 {
        return Err(malformed("message too long"));
    }
    let msg = utf8(payload)?;
    let gs2 = parse_gs2_header(msg)?;
    let body = msg[gs2.len..]
        .strip_prefix('\x01')
        .and_then(|b| b.strip_suffix('\x01'))
        .ok_or(malformed("expected %x01 separators"))?;
    let mut token = None;
    if !body.is_empty() {
        let pairs = body
            .strip_suffix('\x01')
            .ok_or(malformed("unterminated key/value pair"))?;
        for pair in pairs.split('\x01') {
            let (key, value) = pair
                .split_once('=')
                .ok_or(malformed("key/value pair without '='"))?;
            if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphabetic()) {
                return Err(malformed("bad key"));
            }
            if !value
                .bytes()
                .all(|b| matches!(b, 0x21..=0x7e | b' ' | b'\t' | b'\r' | b'\n'))
            {
                return Err(malformed("bad value"));
            }
            if key == "auth" {
                if token.is_some() {
                    return Err(malformed("duplicate auth"));
                }
                token = Some(parse_bearer_value(value)?);
            }
        }
    }
    Ok(BearerCreds {
        authzid: gs2.authzid,
        token: token.ok_or(malformed("missing auth=Bearer"))?,
    })
}

/// `"Bearer" 1*SP b64token` (RFC 6750 §2.1).
/// An empty token (XEP-0493 §3.3: a client with none yet asks where to get
/// one) is returned as the empty string.
fn parse_bearer_value(value: &str) -> Result<String, SaslError> {
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(malformed("auth is not a Bearer credential"));
    }
    let token = rest.trim_start_matches(' ');
    if token.is_empty() {
        return Ok(String::new());
    }
    let body = token.trim_end_matches('=');
    let ok = !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b));
    if !ok {
        return Err(malformed("bad bearer token"));
    }
    if token.len() > MAX_SECRET_LEN {
        return Err(malformed("token too long"));
    }
    Ok(token.to_owned())
}

/// Whether `payload` is the client's `%x01` reply to an OAUTHBEARER error
/// challenge; the server then ends the exchange with `not-authorized`
/// (RFC 7628 §3.2.3).
pub fn is_oauthbearer_error_ack(payload: &[u8]) -> bool {
    payload == b"\x01"
}

/// The JSON body of the server's OAUTHBEARER error challenge (RFC 7628
/// §3.2.2), e.g. `{"status":"invalid_token","scope":"xmpp"}`. The caller
/// base64-encodes it into a `<challenge/>`.
pub fn oauthbearer_failure_json(status: &str, scope: Option<&str>) -> String {
    oauthbearer_failure_json_with(status, scope, None)
}

/// [`oauthbearer_failure_json`] with the RFC 7628 `openid-configuration`
/// member: where a client finds the authorization server's metadata
/// (XEP-0493 §6 asks for it, pointing at the RFC 8414 document).
pub fn oauthbearer_failure_json_with(
    status: &str,
    scope: Option<&str>,
    openid_configuration: Option<&str>,
) -> String {
    let mut out = String::from("{\"status\":");
    push_json_string(&mut out, status);
    if let Some(scope) = scope {
        out.push_str(",\"scope\":");
        push_json_string(&mut out, scope);
    }
    if let Some(url) = openid_configuration {
        out.push_str(",\"openid-configuration\":");
        push_json_string(&mut out, url);
    }
    out.push('}');
    out
}

fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_payload() {
        assert_eq!(decode_base64_payload("=").unwrap(), b"");
        assert_eq!(decode_base64_payload("").unwrap(), b"");
        assert_eq!(decode_base64_payload(" AGEAYg== \n").unwrap(), b"\0a\0b");
        assert_eq!(
            decode_base64_payload("AGE*").unwrap_err(),
            SaslError::IncorrectEncoding
        );
        assert_eq!(
            decode_base64_payload("AGEAYg").unwrap_err().condition(),
            "incorrect-encoding"
        );
        assert_eq!(encode_base64_payload(b""), "=");
        assert_eq!(encode_base64_payload(b"\0a\0b"), "AGEAYg==");
    }

    #[test]
    fn plain_good() {
        let c = parse_plain(b"\0juliet\0r0m30myr0m30").unwrap();
        assert_eq!(c.authzid, None);
        assert_eq!(c.authcid, "juliet");
        assert_eq!(c.secret, "r0m30myr0m30");
        let c = parse_plain("admin@x\0jüliet\0p w".as_bytes()).unwrap();
        assert_eq!(c.authzid.as_deref(), Some("admin@x"));
        assert_eq!(c.authcid, "jüliet");
        assert_eq!(c.secret, "p w");
        assert!(!format!("{c:?}").contains("p w"));
    }

    #[test]
    fn plain_malformed() {
        for bad in [
            &b"juliet"[..],
            b"\0juliet",
            b"\0juliet\0pw\0",
            b"\0a\0b\0c",
            b"\0\0pw",
            b"\0juliet\0",
            b"\0jul\xffiet\0pw",
            b"\0juliet\0p\xc3",
        ] {
            assert_eq!(
                parse_plain(bad).unwrap_err().condition(),
                "malformed-request",
                "{bad:?}"
            );
        }
        let long = [b"\0".as_slice(), &[b'a'; 4000], b"\0pw"].concat();
        assert!(parse_plain(&long).is_err());
        let long = [b"\0u\0".as_slice(), &[b'a'; MAX_SECRET_LEN + 1]].concat();
        assert!(parse_plain(&long).is_err());
    }

    #[test]
    fn xoauth2_same_shape() {
        let c = parse_plain(b"\0user@example.com\0ya29.token").unwrap();
        assert_eq!(c.secret, "ya29.token");
    }

    #[test]
    fn oauthbearer_good() {
        // RFC 7628 §4.1 shape.
        let c = parse_oauthbearer(
            b"n,a=user@example.com,\x01host=server.example.com\x01port=143\x01auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01",
        )
        .unwrap();
        assert_eq!(c.authzid.as_deref(), Some("user@example.com"));
        assert_eq!(c.token, "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==");
        let c = parse_oauthbearer(b"n,,\x01auth=bearer  abc.def-ghi\x01\x01").unwrap();
        assert_eq!(c.authzid, None);
        assert_eq!(c.token, "abc.def-ghi");
        let c = parse_oauthbearer(b"y,a=a=2Cb=3Dc,\x01auth=BEARER t\x01\x01").unwrap();
        assert_eq!(c.authzid.as_deref(), Some("a,b=c"));
        assert!(!format!("{c:?}").contains("\"t\""));
        // XEP-0493: no token yet, to learn where to get one.
        for empty in [
            &b"n,,\x01auth=Bearer\x01\x01"[..],
            b"n,,\x01auth=Bearer \x01\x01",
        ] {
            assert_eq!(parse_oauthbearer(empty).unwrap().token, "");
        }
    }

    #[test]
    fn oauthbearer_malformed() {
        let cases: &[&[u8]] = &[
            b"n,,\x01\x01",                                   // missing auth
            b"n,,\x01host=x\x01\x01",                         // missing auth
            b"n,,\x01auth=Basic abc\x01\x01",                 // wrong scheme
            b"n,,\x01auth=Bearer a b\x01\x01",                // bad token chars
            b"n,,\x01auth=Bearer a\x01",                      // missing final %x01
            b"n,,auth=Bearer a\x01\x01",                      // missing first %x01
            b"n,,\x01auth=Bearer a\x01auth=Bearer b\x01\x01", // duplicate
            b"n,,\x01auth=Bearer a\x01\x01\x01",              // extra separator
            b"n,,\x01=x\x01auth=Bearer a\x01\x01",            // empty key
            b"x,,\x01auth=Bearer a\x01\x01",                  // bad flag
            b"n\x01auth=Bearer a\x01\x01",                    // bad GS2 header
            b"n,user,\x01auth=Bearer a\x01\x01",              // authzid without a=
            b"n,a=,\x01auth=Bearer a\x01\x01",                // empty authzid
            b"n,a=x=41,\x01auth=Bearer a\x01\x01",            // bad saslname escape
            b"p=tls-unique,,\x01auth=Bearer a\x01\x01",       // channel binding
            b"n,,\x01auth=Bearer \xff\x01\x01",               // bad UTF-8
            b"\x01",                                          // error ack is not creds
        ];
        for bad in cases {
            assert_eq!(
                parse_oauthbearer(bad).unwrap_err().condition(),
                "malformed-request",
                "{bad:?}"
            );
        }
        assert!(is_oauthbearer_error_ack(b"\x01"));
        assert!(!is_oauthbearer_error_ack(b"\x01\x01"));
    }

    #[test]
    fn failure_json() {
        assert_eq!(
            oauthbearer_failure_json("invalid_token", Some("xmpp \"x\"")),
            r#"{"status":"invalid_token","scope":"xmpp \"x\""}"#
        );
        assert_eq!(oauthbearer_failure_json("401", None), r#"{"status":"401"}"#);
        assert_eq!(
            oauthbearer_failure_json_with("invalid_token", None, Some("https://h/.well-known/x")),
            r#"{"status":"invalid_token","openid-configuration":"https://h/.well-known/x"}"#
        );
    }

    #[test]
    fn saslname() {
        assert_eq!(decode_saslname("a=2Cb=3D").unwrap(), "a,b=");
        assert!(decode_saslname("a=2c").is_err());
        assert!(decode_saslname("a=").is_err());
        assert!(decode_saslname("a\0b").is_err());
        assert!(decode_saslname("").is_err());
    }

    #[test]
    fn conditions() {
        assert_eq!(SaslError::NotAuthorized.condition(), "not-authorized");
        assert_eq!(SaslError::InvalidAuthzid.condition(), "invalid-authzid");
        assert_eq!(
            SaslError::MalformedRequest("x").to_string(),
            "malformed-request: x"
        );
    }
}
