//! `POST /oauth/token` against the real server: every success and error case.

mod common;

use common::{client, password_grant, post_form, Petrel};

#[test]
fn password_grant_returns_a_token_over_http_and_https() {
    let p = Petrel::start("").with_user_and_client();
    for base in [p.http(), p.https()] {
        let (status, headers, body) = post_form(
            &format!("{base}/oauth/token"),
            &[
                ("grant_type", "password"),
                ("username", "alice@localhost"),
                ("password", "wonderland"),
                ("client_id", "app"),
                ("client_secret", "app-secret"),
                ("scope", "sasl_auth"),
            ],
        );
        assert_eq!(status, 200, "{body}");
        assert_eq!(headers["content-type"], "application/json;charset=UTF-8");
        assert_eq!(headers["cache-control"], "no-store");
        assert_eq!(headers["pragma"], "no-cache");
        assert_eq!(body["token_type"], "bearer");
        assert_eq!(body["scope"], "sasl_auth");
        // A registered password client gets a refresh token, and so a
        // short-lived access token (oauth_expire_with_refresh).
        assert_eq!(body["expires_in"], 3600);
        assert!(body["access_token"].as_str().unwrap().len() >= 32);
        assert!(body["refresh_token"].as_str().unwrap().len() >= 32);
    }
    // Two access and two refresh tokens, listed by id, never by their text.
    let list = p.ctl_ok(&["oauth_list_tokens"]);
    assert_eq!(list.lines().count(), 4, "{list}");
    assert_eq!(
        list.lines().filter(|l| l.ends_with(" refresh")).count(),
        2,
        "{list}"
    );
    for line in list.lines() {
        let cols: Vec<&str> = line.split(' ').collect();
        assert!(cols.len() == 4 || cols[4] == "refresh", "{line}");
        assert_eq!(cols[1], "alice@localhost");
        assert_eq!(cols[2], "sasl_auth");
        assert!(cols[3].ends_with('Z'));
    }
}

#[test]
fn basic_client_auth_and_localpart_usernames_work() {
    let p = Petrel::start("").with_user_and_client();
    let r = client()
        .post(format!("{}/oauth/token", p.http()))
        .basic_auth("app", Some("app-secret"))
        .form(&[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", "wonderland"),
        ])
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: serde_json::Value = r.json().unwrap();
    assert_eq!(v["scope"], "sasl_auth", "scope defaults to sasl_auth");
}

#[test]
fn error_replies_follow_rfc6749() {
    let p = Petrel::start("").with_user_and_client();
    p.ctl_ok(&[
        "oauth_add_client_implicit",
        "web",
        "Web App",
        "https://app.example/cb",
    ]);
    let url = format!("{}/oauth/token", p.http());
    let base = [
        ("username", "alice@localhost"),
        ("password", "wonderland"),
        ("client_id", "app"),
        ("client_secret", "app-secret"),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut f: Vec<(&str, &str)> = base.to_vec();
        f.extend_from_slice(extra);
        f
    };

    let (s, _, v) = post_form(&url, &base);
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("invalid_request")),
        "no grant_type"
    );
    let (s, _, v) = post_form(&url, &with(&[("grant_type", "urn:example:unknown")]));
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );
    let (s, _, v) = post_form(&url, &with(&[("grant_type", "authorization_code")]));
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("unauthorized_client")),
        "a password client may not use the code grant"
    );
    let (s, _, v) = post_form(
        &url,
        &with(&[("grant_type", "password"), ("scope", "sasl_auth root")]),
    );
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_scope")));
    assert!(v["error_description"].as_str().unwrap().contains("root"));
    let (s, _, v) = post_form(
        &url,
        &with(&[("grant_type", "password"), ("ttl", "tomorrow")]),
    );
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("invalid_request")),
        "non-numeric ttl"
    );
    let (s, _, v) = post_form(
        &url,
        &with(&[("grant_type", "password"), ("grant_type", "password")]),
    );
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("invalid_request")),
        "repeated parameter"
    );

    let (s, _, v) = post_form(
        &url,
        &[
            ("grant_type", "password"),
            ("username", "alice@localhost"),
            ("password", "nope"),
            ("client_id", "app"),
            ("client_secret", "app-secret"),
        ],
    );
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("invalid_grant")),
        "wrong password"
    );
    let (s, _, v2) = post_form(
        &url,
        &[
            ("grant_type", "password"),
            ("username", "nobody@localhost"),
            ("password", "x"),
            ("client_id", "app"),
            ("client_secret", "app-secret"),
        ],
    );
    assert_eq!(
        (s, v2["error"].as_str()),
        (400, Some("invalid_grant")),
        "unknown user"
    );
    assert_eq!(
        v["error_description"], v2["error_description"],
        "unknown user reads like a wrong password"
    );
    let (s, _, v) = post_form(
        &url,
        &[
            ("grant_type", "password"),
            ("password", "x"),
            ("client_id", "app"),
            ("client_secret", "app-secret"),
        ],
    );
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("invalid_request")),
        "no username"
    );

    let (s, h, v) = post_form(
        &url,
        &[
            ("grant_type", "password"),
            ("username", "alice@localhost"),
            ("password", "wonderland"),
            ("client_id", "app"),
            ("client_secret", "wrong"),
        ],
    );
    assert_eq!((s, v["error"].as_str()), (401, Some("invalid_client")));
    assert!(h.contains_key("www-authenticate"));
    let (s, h, v) = post_form(
        &url,
        &[
            ("grant_type", "password"),
            ("username", "alice@localhost"),
            ("password", "wonderland"),
        ],
    );
    assert_eq!(
        (s, v["error"].as_str()),
        (401, Some("invalid_client")),
        "no client at all"
    );
    assert!(h.contains_key("www-authenticate"));
    let (s, _, v) = post_form(
        &url,
        &[
            ("grant_type", "password"),
            ("username", "alice@localhost"),
            ("password", "wonderland"),
            ("client_id", "web"),
            ("client_secret", ""),
        ],
    );
    assert!(s == 401 || s == 400, "{s}");
    assert!(
        v["error"] == "invalid_client" || v["error"] == "unauthorized_client",
        "implicit client cannot use the password grant: {v}"
    );

    // Not a form, wrong method, unknown path: still JSON errors.
    let r = client()
        .post(&url)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(
        r.json::<serde_json::Value>().unwrap()["error"],
        "invalid_request"
    );
    let r = client().get(&url).send().unwrap();
    assert_eq!(r.status().as_u16(), 405);
    assert_eq!(
        r.json::<serde_json::Value>().unwrap()["error"],
        "invalid_request"
    );
    let r = client()
        .get(format!("{}/nothing/here", p.http()))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert!(!r.text().unwrap().is_empty());
    let big = "x".repeat(100_000);
    let r = client()
        .post(&url)
        .form(&[("grant_type", big.as_str())])
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    // The same for the pages' forms, whose paths also have a GET route.
    for page in ["/oauth/authorize", "/oauth/device"] {
        let r = client()
            .post(format!("{}{page}", p.http()))
            .form(&[("user_code", big.as_str())])
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 413, "{page}");
    }
    // And nothing was issued by any of that.
    assert_eq!(p.ctl_ok(&["oauth_list_tokens"]).trim(), "");
}

#[test]
fn ttl_is_capped_by_oauth_expire() {
    let p = Petrel::start("oauth_expire = 100").with_user_and_client();
    let (s, v) = password_grant(
        &p.http(),
        "alice@localhost",
        "wonderland",
        &[("ttl", "1000")],
    );
    assert_eq!(s, 200);
    assert_eq!(v["expires_in"], 100);
    let (_, v) = password_grant(&p.http(), "alice@localhost", "wonderland", &[("ttl", "40")]);
    assert_eq!(v["expires_in"], 40);
    let (_, v) = password_grant(&p.http(), "alice@localhost", "wonderland", &[]);
    assert_eq!(v["expires_in"], 100);
}

#[test]
fn a_short_ttl_token_expires() {
    let p = Petrel::start("").with_user_and_client();
    let (s, v) = password_grant(&p.http(), "alice@localhost", "wonderland", &[("ttl", "1")]);
    assert_eq!(s, 200);
    assert_eq!(v["expires_in"], 1);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        // The refresh token beside it lives on (oauth_refresh_expire).
        let list = p.ctl_ok(&["oauth_list_tokens"]);
        if list.lines().all(|l| l.ends_with(" refresh")) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "token never expired");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // Expired is no longer live: revoking it finds nothing.
    let out = p.ctl(&["oauth_revoke_token", v["access_token"].as_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn oauth_access_refuses_accounts_not_listed() {
    let p = Petrel::start("oauth_access = [\"bob@localhost\"]").with_user_and_client();
    p.ctl_ok(&["register", "bob", "localhost", "builder"]);
    let (s, v) = password_grant(&p.http(), "alice@localhost", "wonderland", &[]);
    assert_eq!(s, 400);
    let d = v["error_description"].as_str().unwrap();
    assert!(d.contains("may not get tokens"), "{d}");
    assert!(!d.contains("password"), "not a password error: {d}");
    let (s, _) = password_grant(&p.http(), "bob@localhost", "builder", &[]);
    assert_eq!(s, 200);
    // A wrong password is still reported as such, before the access check.
    let (s, v) = password_grant(&p.http(), "alice@localhost", "bad", &[]);
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_grant")));
    assert!(v["error_description"]
        .as_str()
        .unwrap()
        .contains("password"));
}

#[test]
fn client_id_check_allow_and_deny() {
    let p = Petrel::start("oauth_client_id_check = \"allow\"").with_user_and_client();
    let (s, _, v) = post_form(
        &format!("{}/oauth/token", p.http()),
        &[
            ("grant_type", "password"),
            ("username", "alice@localhost"),
            ("password", "wonderland"),
        ],
    );
    assert_eq!(s, 200, "{v}");
    // Under allow an unregistered id is accepted, but not one just removed
    // (its tokens were revoked): invalid_client, not a server error.
    p.ctl_ok(&["oauth_remove_client", "app"]);
    let (s, _, v) = post_form(
        &format!("{}/oauth/token", p.http()),
        &[
            ("grant_type", "password"),
            ("username", "alice@localhost"),
            ("password", "wonderland"),
            ("client_id", "app"),
        ],
    );
    assert_eq!(
        (s, v["error"].as_str()),
        (401, Some("invalid_client")),
        "{v}"
    );
    drop(p);
    let p = Petrel::start("oauth_client_id_check = \"deny\"").with_user_and_client();
    let (s, v) = password_grant(&p.http(), "alice@localhost", "wonderland", &[]);
    assert_eq!(s, 400);
    assert_eq!(v["error"], "unauthorized_client");
}

#[test]
fn metadata_describes_what_is_served() {
    let p = Petrel::start("").with_user_and_client();
    let v: serde_json::Value = client()
        .get(format!(
            "{}/.well-known/oauth-authorization-server",
            p.https()
        ))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let issuer = v["issuer"].as_str().unwrap();
    assert!(issuer.starts_with("https://localhost:"), "{issuer}");
    assert_eq!(v["token_endpoint"], format!("{issuer}/oauth/token"));
    assert_eq!(
        v["authorization_endpoint"],
        format!("{issuer}/oauth/authorize")
    );
    assert_eq!(v["revocation_endpoint"], format!("{issuer}/oauth/revoke"));
    assert_eq!(
        v["grant_types_supported"],
        serde_json::json!([
            "authorization_code",
            "refresh_token",
            "urn:ietf:params:oauth:grant-type:device_code",
            "client_credentials",
            "password",
            "implicit"
        ])
    );
    assert_eq!(
        v["response_types_supported"],
        serde_json::json!(["code", "token"])
    );
    assert_eq!(
        v["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    assert_eq!(v["authorization_response_iss_parameter_supported"], true);
    assert!(v["scopes_supported"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s == "sasl_auth"));
    // Each advertised endpoint answers (not 404).
    for ep in ["token_endpoint", "revocation_endpoint"] {
        let r = client()
            .post(v[ep].as_str().unwrap())
            .form(&[("x", "y")])
            .send()
            .unwrap();
        assert_ne!(r.status().as_u16(), 404, "{ep}");
    }
}

/// Guessing a secret for a client id that does not exist is answered like a
/// wrong secret for one that does (401 invalid_client) and throttled the
/// same way, so the answers tell a guesser nothing about which ids exist.
#[test]
fn secret_guessing_for_an_unknown_client_is_throttled() {
    let p = Petrel::start("").with_user_and_client();
    let mut codes = Vec::new();
    for _ in 0..30 {
        let (s, _, v) = post_form(
            &format!("{}/oauth/token", p.http()),
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "nobody"),
                ("client_secret", "guess"),
            ],
        );
        codes.push((s, v["error"].as_str().unwrap_or_default().to_owned()));
        if s == 429 {
            break;
        }
    }
    assert_eq!(codes[0], (401, "invalid_client".to_owned()), "{codes:?}");
    assert_eq!(
        codes.last().map(|c| c.0),
        Some(429),
        "no throttling after 30 guesses: {codes:?}"
    );
}
