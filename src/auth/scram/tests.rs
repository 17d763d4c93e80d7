use super::*;

fn b64(s: &str) -> Vec<u8> {
    STANDARD.decode(s).unwrap()
}

/// Runs a whole exchange; returns server-first and the final result.
fn run(
    hash: ScramHash,
    keys: &ScramKeys,
    server_nonce: &str,
    first: &str,
    fin: &str,
) -> (String, Result<Vec<u8>, SaslError>) {
    let mut s = ScramServer::new(hash).with_server_nonce(server_nonce);
    s.client_first(first.as_bytes()).unwrap();
    let sf = String::from_utf8(s.server_first(keys)).unwrap();
    (sf, s.client_final(fin.as_bytes()))
}

const RFC5802_FINAL: &str =
    "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=";

fn rfc5802_keys() -> ScramKeys {
    ScramKeys::derive(ScramHash::Sha1, "pencil", &b64("QSXCR+Q6sek8bf92"), 4096)
}

#[test]
fn rfc5802_example() {
    let mut s = ScramServer::new(ScramHash::Sha1).with_server_nonce("3rfcNHYJY1ZVvWVs7j");
    let first = s
        .client_first(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL")
        .unwrap();
    assert_eq!(first.username, "user");
    assert_eq!(first.authzid, None);
    let sf = s.server_first(&rfc5802_keys());
    assert_eq!(
        sf,
        b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096"
    );
    assert!(!s.is_done());
    let v = s.client_final(RFC5802_FINAL.as_bytes()).unwrap();
    assert_eq!(v, b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=");
    assert!(s.is_done());
}

#[test]
fn rfc7677_example() {
    let keys = ScramKeys::derive(
        ScramHash::Sha256,
        "pencil",
        &b64("W22ZaJ0SNY7soEsUEjb6gQ=="),
        4096,
    );
    let (sf, r) = run(
        ScramHash::Sha256,
        &keys,
        "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
        "n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
        "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
         p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
    );
    assert_eq!(
        sf,
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
         s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    );
    assert_eq!(
        r.unwrap(),
        b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    );
}

#[test]
fn wrong_proof() {
    let bad = RFC5802_FINAL.replace("p=v0X8", "p=v1X8");
    let (_, r) = run(
        ScramHash::Sha1,
        &rfc5802_keys(),
        "3rfcNHYJY1ZVvWVs7j",
        "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
        &bad,
    );
    assert_eq!(r.unwrap_err().condition(), "not-authorized");
    // Wrong password: same proof against other keys.
    let other = ScramKeys::derive(ScramHash::Sha1, "pencil2", &b64("QSXCR+Q6sek8bf92"), 4096);
    let (_, r) = run(
        ScramHash::Sha1,
        &other,
        "3rfcNHYJY1ZVvWVs7j",
        "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
        RFC5802_FINAL,
    );
    assert_eq!(r.unwrap_err(), SaslError::NotAuthorized);
}

#[test]
fn tampered_nonce() {
    let bad = RFC5802_FINAL.replace("VvWVs7j", "VvWVs7k");
    let (_, r) = run(
        ScramHash::Sha1,
        &rfc5802_keys(),
        "3rfcNHYJY1ZVvWVs7j",
        "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
        &bad,
    );
    assert_eq!(r.unwrap_err(), SaslError::NotAuthorized);
}

#[test]
fn channel_binding() {
    let mut s = ScramServer::new(ScramHash::Sha1);
    let e = s.client_first(b"p=tls-unique,,n=user,r=abc").unwrap_err();
    assert_eq!(e.condition(), "malformed-request");
    // y is accepted, but then c= must echo "y,,".
    let mut s = ScramServer::new(ScramHash::Sha1).with_server_nonce("S");
    s.client_first(b"y,,n=user,r=abc").unwrap();
    s.server_first(&rfc5802_keys());
    let e = s
        .client_final(b"c=biws,r=abcS,p=AAAAAAAAAAAAAAAAAAAAAAAAAAA=")
        .unwrap_err();
    assert_eq!(e, SaslError::NotAuthorized);
}

/// A client-side computation, to test flows other than the RFC vectors.
fn client_proof(
    hash: ScramHash,
    password: &str,
    auth_message: &str,
    salt: &[u8],
    i: u32,
) -> String {
    let salted = hash.salted_password(password.as_bytes(), salt, i);
    let client_key = hash.hmac(&salted, b"Client Key");
    let stored = hash.digest(&client_key);
    let sig = hash.hmac(&stored, auth_message.as_bytes());
    let proof: Vec<u8> = client_key.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
    STANDARD.encode(proof)
}

#[test]
fn authzid_y_flag_and_random_nonce() {
    let keys = ScramKeys::generate(ScramHash::Sha256, "sécret", 4096);
    let mut s = ScramServer::new(ScramHash::Sha256);
    let cf = "y,a=admin=2Cx@example.com,n=us=3Der,r=cnonce";
    let first = s.client_first(cf.as_bytes()).unwrap();
    assert_eq!(first.username, "us=er");
    assert_eq!(first.authzid.as_deref(), Some("admin,x@example.com"));
    let sf = String::from_utf8(s.server_first(&keys)).unwrap();
    let nonce = sf.split(',').next().unwrap().strip_prefix("r=").unwrap();
    assert!(nonce.starts_with("cnonce") && nonce.len() == 6 + 24);
    let cbind = STANDARD.encode("y,a=admin=2Cx@example.com,");
    let without = format!("c={cbind},r={nonce}");
    let am = format!("n=us=3Der,r=cnonce,{sf},{without}");
    let proof = client_proof(ScramHash::Sha256, "sécret", &am, &keys.salt, 4096);
    let v = s
        .client_final(format!("{without},p={proof}").as_bytes())
        .unwrap();
    assert!(v.starts_with(b"v="));
    // Two exchanges get different server nonces.
    let mut s2 = ScramServer::new(ScramHash::Sha256);
    s2.client_first(cf.as_bytes()).unwrap();
    assert_ne!(String::from_utf8(s2.server_first(&keys)).unwrap(), sf);
}

#[test]
fn malformed_messages() {
    for bad in [
        &b"n,,r=abc"[..],
        b"n,,n=user",
        b"n,,n=user,r=",
        b"n,,m=x,n=user,r=abc",
        b"n,,n=us=er,r=abc",
        b"n,,n=,r=abc",
        b"x,,n=user,r=abc",
        b"n,n=user,r=abc",
        b"n,,n=user,r=a\x01c",
        b"n,,n=us\xffer,r=abc",
        b"n,,n=user,r=abc,bad",
    ] {
        let mut s = ScramServer::new(ScramHash::Sha1);
        assert_eq!(
            s.client_first(bad).unwrap_err().condition(),
            "malformed-request",
            "{bad:?}"
        );
    }
    // Extensions are ignored.
    let mut s = ScramServer::new(ScramHash::Sha1);
    assert!(s.client_first(b"n,,n=user,r=abc,x=ext").is_ok());

    for bad in [
        &b"c=biws,r=abcS"[..],
        b"r=abcS,c=biws,p=AAAA",
        b"c=biws,r=abcS,p=!!",
        b"c=biws,r=abcS,p=AAAA",
        b"c=biws,p=AAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    ] {
        let mut s = ScramServer::new(ScramHash::Sha1).with_server_nonce("S");
        s.client_first(b"n,,n=user,r=abc").unwrap();
        s.server_first(&rfc5802_keys());
        assert_eq!(
            s.client_final(bad).unwrap_err().condition(),
            "malformed-request",
            "{bad:?}"
        );
    }
    // Out of order.
    let mut s = ScramServer::new(ScramHash::Sha1);
    assert!(s.client_final(RFC5802_FINAL.as_bytes()).is_err());
}

#[test]
fn verify_password_and_debug() {
    let k = rfc5802_keys();
    assert!(k.verify_password(ScramHash::Sha1, "pencil"));
    assert!(!k.verify_password(ScramHash::Sha1, "pencil "));
    assert!(!k.verify_password(ScramHash::Sha256, "pencil"));
    assert!(!format!("{k:?}").contains(&format!("{:?}", k.stored_key)));
}

#[test]
fn fake_keys() {
    let a = ScramKeys::fake_for(ScramHash::Sha256, "ghost", b"secret", 4096);
    let b = ScramKeys::fake_for(ScramHash::Sha256, "ghost", b"secret", 4096);
    let c = ScramKeys::fake_for(ScramHash::Sha256, "ghost2", b"secret", 4096);
    let d = ScramKeys::fake_for(ScramHash::Sha256, "ghost", b"other", 4096);
    assert_eq!(a, b);
    assert_ne!(a.salt, c.salt);
    assert_ne!(a.salt, d.salt);
    assert_eq!(a.salt.len(), SALT_LEN);
    assert_eq!(a.stored_key.len(), 32);
    let f1 = ScramKeys::fake_for(ScramHash::Sha1, "ghost", b"secret", 4096);
    assert_eq!(f1.stored_key.len(), 20);
    assert_ne!(f1.salt, a.salt);
    // The exchange with fake keys runs to the end and fails like a
    // wrong password.
    let (_, r) = run(
        ScramHash::Sha1,
        &f1,
        "3rfcNHYJY1ZVvWVs7j",
        "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
        RFC5802_FINAL,
    );
    assert_eq!(r.unwrap_err(), SaslError::NotAuthorized);
}

#[test]
fn mechanism_names() {
    assert_eq!(
        ScramHash::from_mechanism("SCRAM-SHA-256"),
        Some(ScramHash::Sha256)
    );
    assert_eq!(ScramHash::Sha1.mechanism(), "SCRAM-SHA-1");
    assert_eq!(ScramHash::from_mechanism("SCRAM-SHA-1-PLUS"), None);
}
