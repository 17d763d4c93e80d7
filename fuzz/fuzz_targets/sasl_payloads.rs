//! Arbitrary bytes through every SASL payload parser a client can reach:
//! base64 decoding, PLAIN / X-OAUTH2, OAUTHBEARER, the GS2 header, saslname,
//! a whole SCRAM exchange (client-first, then client-final against fake keys),
//! the c2s SASL negotiation, and JIDs.
//!
//! Input layout: the first byte picks the parser; for SCRAM the rest is split
//! at the first NUL into client-first and client-final.

#![no_main]

use libfuzzer_sys::fuzz_target;
use petrel::auth::sasl;
use petrel::auth::scram::{ScramHash, ScramKeys, ScramServer};
use petrel::xmpp::sasl::{Sasl, SaslOutcome};
use petrel::xmpp::stanza::Jid;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match which % 8 {
        0 => {
            if let Ok(bytes) = sasl::decode_base64_payload(&text) {
                let again = sasl::encode_base64_payload(&bytes);
                assert_eq!(sasl::decode_base64_payload(&again).unwrap(), bytes);
            }
        }
        1 => {
            if let Ok(c) = sasl::parse_plain(rest) {
                assert!(!c.authcid.is_empty() && !c.secret.is_empty());
                assert!(c.authzid.as_deref() != Some(""));
            }
        }
        2 => {
            if let Ok(c) = sasl::parse_oauthbearer(rest) {
                // Empty only as XEP-0493's "no token yet".
                assert!(!c.token.contains(' '));
            }
        }
        3 => {
            if let Ok(h) = sasl::parse_gs2_header(&text) {
                assert!(h.len <= text.len());
            }
        }
        4 => {
            if let Ok(name) = sasl::decode_saslname(&text) {
                assert!(!name.is_empty());
            }
        }
        5 | 6 => {
            let hash = if which % 8 == 5 {
                ScramHash::Sha1
            } else {
                ScramHash::Sha256
            };
            let (first, fin) = match rest.iter().position(|b| *b == 0) {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &[][..]),
            };
            let mut s = ScramServer::new(hash);
            if let Ok(f) = s.client_first(first) {
                // Few rounds: the fuzzer is after parsing, not PBKDF2.
                let keys = ScramKeys::fake_for(hash, &f.username, b"fuzz", 1);
                let _ = s.server_first(&keys);
                // Fake keys can never verify.
                assert!(s.client_final(fin).is_err());
                assert!(!s.is_done());
            }
        }
        _ => {
            // The c2s SASL negotiation without an auth core, and JIDs.
            let _ = Jid::parse(&text);
            let mut n = Sasl::new("localhost");
            let (mech, payload) = text.split_once(' ').unwrap_or((&text, ""));
            let mut o = n.start(mech, (!payload.is_empty()).then_some(payload));
            for _ in 0..3 {
                match o {
                    SaslOutcome::Challenge(_) => o = n.response(payload),
                    _ => break,
                }
            }
        }
    }
});
