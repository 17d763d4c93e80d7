//! The I/O-free core of XEP-0363 slots: parsing a slot request, the file
//! name and content type checks, and the signed PUT URL.
//!
//! A slot is not remembered by the server: everything the HTTP side needs
//! to accept the upload rides in the PUT URL — the path (an unguessable
//! random id plus the sanitized file name), the size, the content type, the
//! expiry and the owning account — and an HMAC-SHA-256 over all of it with
//! the upload key (`<data_dir>/upload/key`). A client can change none of it
//! without the key, so it can neither grow the size it was granted, nor
//! upload under another account's quota, nor keep a slot past its expiry.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::xmpp::element::Element;

/// The XEP-0363 namespace.
pub const NS_UPLOAD: &str = "urn:xmpp:http:upload:0";

/// The content type of a slot request that names none.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// Bytes of a sanitized file name at most (longer ones keep their start
/// and their extension).
pub const MAX_NAME: usize = 128;

/// Bytes of a content type at most.
pub const MAX_CONTENT_TYPE: usize = 128;

/// Bytes of the random id: 128 bits, as hex in the path.
pub const ID_BYTES: usize = 16;

/// What a client asks for in `<request filename size content-type/>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotRequest {
    /// The file name, sanitized (see [`sanitize_name`]).
    pub name: String,
    pub size: u64,
    pub content_type: String,
}

/// Why a slot request is refused as `bad-request`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("the filename attribute is missing or empty")]
    Filename,
    #[error("the size attribute is missing or not a number of bytes")]
    Size,
    #[error("the content-type attribute is not a media type")]
    ContentType,
}

/// Parses a `<request xmlns='urn:xmpp:http:upload:0'/>`.
pub fn parse_request(req: &Element) -> Result<SlotRequest, RequestError> {
    let name = req
        .attr("filename")
        .filter(|n| !n.trim().is_empty())
        .ok_or(RequestError::Filename)?;
    let size = req
        .attr("size")
        .and_then(|s| s.trim().parse::<u64>().ok())
        .ok_or(RequestError::Size)?;
    let content_type = match req.attr("content-type").map(str::trim) {
        None | Some("") => DEFAULT_CONTENT_TYPE.to_string(),
        Some(t) if is_content_type(t) => t.to_string(),
        Some(_) => return Err(RequestError::ContentType),
    };
    Ok(SlotRequest {
        name: sanitize_name(name),
        size,
        content_type,
    })
}

/// A content type we put in a header as it is: `type/subtype` with
/// optional parameters, visible ASCII and spaces only, bounded.
pub fn is_content_type(t: &str) -> bool {
    let Some((ty, rest)) = t.split_once('/') else {
        return false;
    };
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    let sub = rest.split(';').next().unwrap_or("").trim_end();
    t.len() <= MAX_CONTENT_TYPE
        && token(ty)
        && token(sub)
        && t.bytes().all(|b| b == b' ' || b.is_ascii_graphic())
}

/// The file name as it goes into the path: its last path component, with
/// every byte but ASCII letters, digits, `.`, `-` and `_` made `_`, no
/// leading dot (no hidden files, no `..`), at most [`MAX_NAME`] bytes
/// (keeping a short extension), `file` if nothing is left.
pub fn sanitize_name(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or("");
    let mut s: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let s2 = s.trim_start_matches('.');
    if s2.len() != s.len() {
        s = s2.to_string();
    }
    if s.len() > MAX_NAME {
        let ext = match s.rfind('.') {
            Some(i) if s.len() - i <= 16 => s[i..].to_string(),
            _ => String::new(),
        };
        s.truncate(MAX_NAME - ext.len());
        s.push_str(&ext);
    }
    if s.is_empty() {
        s = "file".into();
    }
    s
}

/// Whether `name` is what [`sanitize_name`] makes (the HTTP side takes no
/// other name in a path).
pub fn is_clean_name(name: &str) -> bool {
    !name.is_empty() && sanitize_name(name) == name
}

/// Whether `id` is a slot id: [`ID_BYTES`] as lowercase hex.
pub fn is_id(id: &str) -> bool {
    id.len() == ID_BYTES * 2 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Everything a PUT URL grants, signed together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The random id (hex), the first path segment after `/upload/`.
    pub id: String,
    /// The sanitized file name, the second.
    pub name: String,
    pub size: u64,
    pub content_type: String,
    /// Unix seconds after which the PUT is refused.
    pub expires: u64,
    /// The bare JID whose quota the file counts against.
    pub owner: String,
}

impl Grant {
    /// The path under the base URL: `upload/<id>/<name>`.
    pub fn path(&self) -> String {
        format!("upload/{}/{}", self.id, self.name)
    }

    /// HMAC-SHA-256 over every field, each length-prefixed (no two grants
    /// sign the same bytes).
    pub fn mac(&self, key: &[u8; 32]) -> [u8; 32] {
        let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key");
        m.update(b"petrel upload v1");
        for part in [
            self.id.as_bytes(),
            self.name.as_bytes(),
            &self.size.to_be_bytes(),
            self.content_type.as_bytes(),
            &self.expires.to_be_bytes(),
            self.owner.as_bytes(),
        ] {
            m.update(&(part.len() as u64).to_be_bytes());
            m.update(part);
        }
        m.finalize().into_bytes().into()
    }

    /// The PUT URL under `base` (no trailing slash).
    pub fn put_url(&self, base: &str, key: &[u8; 32]) -> String {
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("expires", &self.expires.to_string())
            .append_pair("size", &self.size.to_string())
            .append_pair("type", &self.content_type)
            .append_pair("owner", &self.owner)
            .append_pair("sig", &hex::encode(self.mac(key)))
            .finish();
        format!("{base}/{}?{query}", self.path())
    }

    /// The GET URL under `base`.
    pub fn get_url(&self, base: &str) -> String {
        format!("{base}/{}", self.path())
    }
}

/// Why a PUT is refused before its body is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutRefusal {
    /// Not a slot path, or the query lacks a field: 400.
    Malformed,
    /// The signature does not match: 403.
    BadSignature,
    /// Past the slot's expiry: 403.
    Expired,
}

/// Reads the grant of a PUT to `/upload/<tail>?<query>` and checks its
/// signature and expiry at `now` (unix seconds).
pub fn check_put(tail: &str, query: &str, key: &[u8; 32], now: u64) -> Result<Grant, PutRefusal> {
    let (id, name) = split_path(tail).ok_or(PutRefusal::Malformed)?;
    let (mut expires, mut size, mut ty, mut owner, mut sig) = (None, None, None, None, None);
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        let slot = match &*k {
            "expires" => &mut expires,
            "size" => &mut size,
            "type" => &mut ty,
            "owner" => &mut owner,
            "sig" => &mut sig,
            _ => continue,
        };
        if slot.replace(v.into_owned()).is_some() {
            return Err(PutRefusal::Malformed);
        }
    }
    let (Some(expires), Some(size), Some(ty), Some(owner), Some(sig)) =
        (expires, size, ty, owner, sig)
    else {
        return Err(PutRefusal::Malformed);
    };
    let grant = Grant {
        id: id.to_string(),
        name: name.to_string(),
        size: size.parse().map_err(|_| PutRefusal::Malformed)?,
        content_type: ty,
        expires: expires.parse().map_err(|_| PutRefusal::Malformed)?,
        owner,
    };
    let sig = hex::decode(sig).map_err(|_| PutRefusal::BadSignature)?;
    if !bool::from(sig.ct_eq(&grant.mac(key))) {
        return Err(PutRefusal::BadSignature);
    }
    if now > grant.expires {
        return Err(PutRefusal::Expired);
    }
    Ok(grant)
}

/// `<id>/<name>` of a path after `/upload/`, when both are well formed.
pub fn split_path(tail: &str) -> Option<(&str, &str)> {
    let (id, name) = tail.split_once('/')?;
    (is_id(id) && is_clean_name(name)).then_some((id, name))
}

/// Whether a file of this content type may be shown inline by a browser
/// (images, audio and video; never SVG, which may carry script).
pub fn is_inline(content_type: &str) -> bool {
    let t = content_type.to_ascii_lowercase();
    let base = t.split(';').next().unwrap_or("").trim();
    (base.starts_with("image/") || base.starts_with("video/") || base.starts_with("audio/"))
        && !base.contains("svg")
}

/// Whether the Content-Type of a PUT is the slot's (case and surrounding
/// blanks aside). A PUT with none matches only the default type.
pub fn same_content_type(slot: &str, header: Option<&str>) -> bool {
    match header {
        Some(h) => h.trim().eq_ignore_ascii_case(slot.trim()),
        None => slot.eq_ignore_ascii_case(DEFAULT_CONTENT_TYPE),
    }
}

/// The `<slot/>` answer.
pub fn slot_element(put_url: &str, get_url: &str) -> Element {
    Element::new("slot", NS_UPLOAD)
        .with_child(Element::new("put", NS_UPLOAD).with_attr("url", put_url))
        .with_child(Element::new("get", NS_UPLOAD).with_attr("url", get_url))
}

/// The application condition of a file over the size limit.
pub fn file_too_large(max: u64) -> Element {
    Element::new("file-too-large", NS_UPLOAD)
        .with_child(Element::new("max-size", NS_UPLOAD).with_text(max.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];

    fn grant() -> Grant {
        Grant {
            id: "0123456789abcdef0123456789abcdef".into(),
            name: "cat.jpg".into(),
            size: 1234,
            content_type: "image/jpeg".into(),
            expires: 1_000,
            owner: "juliet@example.com".into(),
        }
    }

    fn split(url: &str) -> (&str, &str) {
        let rest = url.strip_prefix("https://h/upload/").unwrap();
        rest.split_once('?').unwrap()
    }

    #[test]
    fn a_signed_put_url_checks_and_every_change_breaks_it() {
        let g = grant();
        let url = g.put_url("https://h", &KEY);
        assert_eq!(
            g.get_url("https://h"),
            "https://h/upload/0123456789abcdef0123456789abcdef/cat.jpg"
        );
        let (tail, query) = split(&url);
        assert_eq!(check_put(tail, query, &KEY, 1_000), Ok(g.clone()));
        assert_eq!(
            check_put(tail, query, &KEY, 1_001),
            Err(PutRefusal::Expired)
        );
        assert_eq!(
            check_put(tail, query, &[8; 32], 0),
            Err(PutRefusal::BadSignature)
        );
        let q2 = query.replace("size=1234", "size=12345");
        assert_eq!(check_put(tail, &q2, &KEY, 0), Err(PutRefusal::BadSignature));
        let q3 = query.replace("expires=1000", "expires=99999");
        assert_eq!(check_put(tail, &q3, &KEY, 0), Err(PutRefusal::BadSignature));
        let q4 = query.replace("juliet", "romeo");
        assert_eq!(check_put(tail, &q4, &KEY, 0), Err(PutRefusal::BadSignature));
        let q5 = query.replace("image%2Fjpeg", "text%2Fhtml");
        assert_ne!(q5, query);
        assert_eq!(check_put(tail, &q5, &KEY, 0), Err(PutRefusal::BadSignature));
        let t2 = tail.replace("cat.jpg", "dog.jpg");
        assert_eq!(
            check_put(&t2, query, &KEY, 0),
            Err(PutRefusal::BadSignature)
        );
        let q6 = query.replace("sig=", "sig=zz");
        assert_eq!(check_put(tail, &q6, &KEY, 0), Err(PutRefusal::BadSignature));
    }

    #[test]
    fn malformed_put_paths_and_queries() {
        let g = grant();
        let url = g.put_url("https://h", &KEY);
        let (tail, query) = split(&url);
        for bad_tail in [
            "0123456789abcdef0123456789abcdef",
            "0123456789ABCDEF0123456789abcdef/cat.jpg",
            "0123/cat.jpg",
            "0123456789abcdef0123456789abcdef/../key",
            "0123456789abcdef0123456789abcdef/.hidden",
            "0123456789abcdef0123456789abcdef/a/b",
            "0123456789abcdef0123456789abcdef/",
        ] {
            assert_eq!(
                check_put(bad_tail, query, &KEY, 0),
                Err(PutRefusal::Malformed),
                "{bad_tail}"
            );
        }
        assert_eq!(check_put(tail, "", &KEY, 0), Err(PutRefusal::Malformed));
        let twice = format!("{query}&size=1");
        assert_eq!(check_put(tail, &twice, &KEY, 0), Err(PutRefusal::Malformed));
        let no_number = query.replace("size=1234", "size=x");
        assert_eq!(
            check_put(tail, &no_number, &KEY, 0),
            Err(PutRefusal::Malformed)
        );
    }

    #[test]
    fn names_are_sanitized() {
        assert_eq!(sanitize_name("cat.jpg"), "cat.jpg");
        assert_eq!(sanitize_name("../../etc/passwd"), "passwd");
        assert_eq!(sanitize_name("C:\\x\\my file (1).png"), "my_file__1_.png");
        assert_eq!(sanitize_name("..."), "file");
        assert_eq!(sanitize_name(".bashrc"), "bashrc");
        assert_eq!(sanitize_name("été.txt"), "_t_.txt");
        assert_eq!(sanitize_name("a/"), "file");
        let long = format!("{}.tar.gz", "a".repeat(300));
        let s = sanitize_name(&long);
        assert_eq!(s.len(), MAX_NAME);
        assert!(s.ends_with(".gz"));
        assert!(is_clean_name(&s));
        assert!(!is_clean_name(".."));
        assert!(!is_clean_name("a b"));
    }

    #[test]
    fn requests_parse_or_name_what_is_wrong() {
        let req = |attrs: &[(&str, &str)]| {
            let mut e = Element::new("request", NS_UPLOAD);
            for (k, v) in attrs {
                e.set_attr(*k, *v);
            }
            parse_request(&e)
        };
        assert_eq!(
            req(&[
                ("filename", "a b.txt"),
                ("size", "10"),
                ("content-type", "text/plain; charset=utf-8")
            ]),
            Ok(SlotRequest {
                name: "a_b.txt".into(),
                size: 10,
                content_type: "text/plain; charset=utf-8".into()
            })
        );
        assert_eq!(
            req(&[("filename", "x"), ("size", "0")])
                .unwrap()
                .content_type,
            DEFAULT_CONTENT_TYPE
        );
        assert_eq!(req(&[("size", "10")]), Err(RequestError::Filename));
        assert_eq!(
            req(&[("filename", " "), ("size", "10")]),
            Err(RequestError::Filename)
        );
        assert_eq!(req(&[("filename", "x")]), Err(RequestError::Size));
        assert_eq!(
            req(&[("filename", "x"), ("size", "-1")]),
            Err(RequestError::Size)
        );
        assert_eq!(
            req(&[("filename", "x"), ("size", "1e3")]),
            Err(RequestError::Size)
        );
        for bad in [
            "text",
            "/plain",
            "text/",
            "te xt/plain",
            "text/pl\u{e9}in",
            "a/b\r\nX: y",
        ] {
            assert_eq!(
                req(&[("filename", "x"), ("size", "1"), ("content-type", bad)]),
                Err(RequestError::ContentType),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn inline_types_and_content_type_matching() {
        assert!(is_inline("image/png"));
        assert!(is_inline("Video/MP4"));
        assert!(is_inline("audio/ogg; codecs=opus"));
        assert!(!is_inline("image/svg+xml"));
        assert!(!is_inline("text/html"));
        assert!(!is_inline("application/pdf"));
        assert!(same_content_type("image/png", Some(" IMAGE/PNG")));
        assert!(!same_content_type("image/png", Some("image/jpeg")));
        assert!(!same_content_type("image/png", None));
        assert!(same_content_type(DEFAULT_CONTENT_TYPE, None));
    }

    proptest::proptest! {
        /// Whatever a client puts in the path and query, the check answers
        /// without panicking; and any grant round-trips through its URL.
        #[test]
        fn put_urls_parse_anything_and_round_trip(
            tail in ".{0,80}",
            query in ".{0,200}",
            name in ".{0,200}",
            ty in "[a-z]{1,10}/[a-z0-9.+-]{1,20}(; charset=[a-z0-9-]{1,10})?",
            owner in "[^/]{1,60}",
            size in proptest::prelude::any::<u64>(),
            expires in proptest::prelude::any::<u64>(),
        ) {
            let _ = check_put(&tail, &query, &KEY, 0);
            let _ = split_path(&tail);
            let g = Grant {
                id: "0123456789abcdef0123456789abcdef".into(),
                name: sanitize_name(&name),
                size,
                content_type: ty,
                expires,
                owner,
            };
            proptest::prop_assert!(is_clean_name(&g.name));
            let url = g.put_url("https://h", &KEY);
            let (t, q) = split(&url);
            proptest::prop_assert_eq!(check_put(t, q, &KEY, 0), Ok(g));
        }
    }
}
