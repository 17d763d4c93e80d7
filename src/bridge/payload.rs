//! Payload mapping, I/O-free: an MQTT payload as a PubSub item's payload
//! and back.
//!
//! MQTT → item: JSON (content type `application/json` or `…+json`, or no
//! content type and a JSON object or array) becomes XEP-0335's `<json
//! xmlns='urn:xmpp:json:0'>`; other UTF-8 text that XML can carry byte for
//! byte becomes `<data xmlns='urn:petrel:mqtt:0'>`; anything else the same
//! element with `encoding='base64'`. The MQTT 5 content type rides on
//! `<data/>` as `content-type`, and with the user properties as XEP-0131
//! headers of the notification.
//!
//! Item → MQTT: `<json/>` is the JSON text (content type
//! `application/json`), `<data/>` its text or decoded base64 (its
//! `content-type`, if any), any other payload its XML (`application/xml`).

use base64::Engine;

use crate::xmpp::element::{is_xml_char, Element};

pub const NS_JSON: &str = "urn:xmpp:json:0";
pub const NS_DATA: &str = "urn:petrel:mqtt:0";
pub const NS_SHIM: &str = "http://jabber.org/protocol/shim";

/// What an MQTT message carries besides its topic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Content {
    pub payload: Vec<u8>,
    pub content_type: Option<String>,
    /// UTF-8 text (MQTT 5 Payload Format Indicator 1).
    pub utf8: bool,
    pub user_properties: Vec<(String, String)>,
}

fn json_type(ct: &str) -> bool {
    let base = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    base == "application/json" || base.ends_with("+json")
}

/// Text XML carries unchanged: XML characters only, and no CR (a parser
/// turns CR LF into LF).
fn xml_safe(s: &str) -> bool {
    s.chars().all(|c| is_xml_char(c) && c != '\r')
}

/// The item payload for an MQTT message.
pub fn to_item(payload: &[u8], content_type: Option<&str>) -> Element {
    let text = std::str::from_utf8(payload).ok().filter(|t| xml_safe(t));
    if let Some(t) = text {
        let structured = || matches!(t.trim_start().as_bytes().first(), Some(b'{' | b'['));
        let is_json = match content_type {
            Some(ct) => json_type(ct),
            None => structured(),
        };
        if is_json && serde_json::from_str::<serde::de::IgnoredAny>(t).is_ok() {
            return Element::new("json", NS_JSON).with_text(t);
        }
    }
    let mut data = Element::new("data", NS_DATA);
    if let Some(ct) = content_type {
        data.set_attr("content-type", ct);
    }
    match text {
        Some(t) => data.with_text(t),
        None => data
            .with_attr("encoding", "base64")
            .with_text(base64::engine::general_purpose::STANDARD.encode(payload)),
    }
}

/// XEP-0131 headers for a notification: the content type and the user
/// properties, in order. None when there are none.
pub fn headers(
    content_type: Option<&str>,
    user_properties: &[(String, String)],
) -> Option<Element> {
    if content_type.is_none() && user_properties.is_empty() {
        return None;
    }
    let mut h = Element::new("headers", NS_SHIM);
    let ct = content_type.map(|c| ("Content-Type", c));
    for (name, value) in ct.into_iter().chain(
        user_properties
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str())),
    ) {
        h.push_child(
            Element::new("header", NS_SHIM)
                .with_attr("name", name)
                .with_text(value),
        );
    }
    Some(h)
}

/// Why an item cannot become an MQTT message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unfit {
    /// `<data encoding='base64'>` that is not base64, or another encoding.
    BadEncoding,
}

/// The MQTT message for an item payload (its user properties left to the
/// caller).
pub fn from_item(payload: &Element) -> Result<Content, Unfit> {
    if payload.is("json", NS_JSON) {
        return Ok(Content {
            payload: payload.text().into_bytes(),
            content_type: Some("application/json".into()),
            utf8: true,
            user_properties: Vec::new(),
        });
    }
    if payload.is("data", NS_DATA) {
        let content_type = payload.attr("content-type").map(str::to_string);
        return match payload.attr("encoding") {
            None => Ok(Content {
                payload: payload.text().into_bytes(),
                content_type,
                utf8: true,
                user_properties: Vec::new(),
            }),
            Some("base64") => {
                let t: String = payload.text().split_whitespace().collect();
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(t)
                    .map_err(|_| Unfit::BadEncoding)?;
                Ok(Content {
                    payload: bytes,
                    content_type,
                    utf8: false,
                    user_properties: Vec::new(),
                })
            }
            Some(_) => Err(Unfit::BadEncoding),
        };
    }
    Ok(Content {
        payload: payload.to_bytes(""),
        content_type: Some("application/xml".into()),
        utf8: true,
        user_properties: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(payload: &[u8], ct: Option<&str>) -> (Element, Content) {
        let el = to_item(payload, ct);
        let back = crate::xmpp::stream::read_back(&el.to_bytes("jabber:client")).unwrap();
        (el, from_item(&back).unwrap())
    }

    #[test]
    fn json_text_and_binary_cross_and_come_back_byte_for_byte() {
        let (el, c) = round(br#"{"temp": 21.5, "unit": "C"}"#, None);
        assert!(el.is("json", NS_JSON));
        assert_eq!(c.payload, br#"{"temp": 21.5, "unit": "C"}"#);
        assert_eq!(c.content_type.as_deref(), Some("application/json"));

        // A bare number is text unless the content type says JSON.
        let (el, c) = round(b"21.5", None);
        assert!(el.is("data", NS_DATA));
        assert_eq!((c.payload.as_slice(), c.utf8), (&b"21.5"[..], true));
        let (el, _) = round(b"21.5", Some("application/json"));
        assert!(el.is("json", NS_JSON));
        // Not JSON although it says so: text, its type kept.
        let (el, c) = round(b"{oops", Some("application/json"));
        assert!(el.is("data", NS_DATA));
        assert_eq!(c.content_type.as_deref(), Some("application/json"));

        let (_, c) = round("set <22> & \"go\"\n".as_bytes(), Some("text/plain"));
        assert_eq!(c.payload, "set <22> & \"go\"\n".as_bytes());
        assert_eq!(c.content_type.as_deref(), Some("text/plain"));

        for bin in [
            &[0u8, 1, 2, 255, 254][..],
            b"a\r\nb",
            b"\x07bell",
            &[0xC3, 0x28],
        ] {
            let (el, c) = round(bin, None);
            assert_eq!(el.attr("encoding"), Some("base64"));
            assert_eq!((c.payload.as_slice(), c.utf8), (bin, false));
        }
    }

    #[test]
    fn other_payloads_travel_as_xml_and_bad_base64_is_refused() {
        let el = Element::new("entry", "http://www.w3.org/2005/Atom").with_text("hi");
        let c = from_item(&el).unwrap();
        assert_eq!(c.content_type.as_deref(), Some("application/xml"));
        assert!(String::from_utf8(c.payload).unwrap().contains("Atom"));
        let bad = Element::new("data", NS_DATA)
            .with_attr("encoding", "base64")
            .with_text("!!!");
        assert_eq!(from_item(&bad), Err(Unfit::BadEncoding));
        let odd = Element::new("data", NS_DATA).with_attr("encoding", "rot13");
        assert_eq!(from_item(&odd), Err(Unfit::BadEncoding));
    }

    #[test]
    fn headers_carry_content_type_then_user_properties() {
        assert!(headers(None, &[]).is_none());
        let h = headers(Some("text/plain"), &[("room".into(), "hall".into())]).unwrap();
        let names: Vec<_> = h
            .elements()
            .map(|e| (e.attr("name").unwrap().to_string(), e.text()))
            .collect();
        assert_eq!(
            names,
            [
                ("Content-Type".into(), "text/plain".into()),
                ("room".into(), "hall".into())
            ]
        );
    }
}
