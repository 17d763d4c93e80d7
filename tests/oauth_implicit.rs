//! The implicit grant's sign-in page and `POST /oauth/revoke`.

mod common;

use common::{client, password_grant, post_form, Petrel};

const CB: &str = "https://app.example/cb";

fn setup() -> Petrel {
    let p = Petrel::start("").with_user_and_client();
    p.ctl_ok(&["oauth_add_client_implicit", "web", "Web App", CB]);
    p
}

/// GETs the sign-in page; returns (status, html, csrf value, cookie pair).
fn sign_in_page(p: &Petrel, query: &str) -> (u16, String, Option<String>, Option<String>) {
    let r = client()
        .get(format!("{}/oauth/authorization_token?{query}", p.http()))
        .send()
        .unwrap();
    let status = r.status().as_u16();
    assert!(r.headers().get("location").is_none() || status == 302);
    let cookie = r
        .headers()
        .get("set-cookie")
        .map(|c| c.to_str().unwrap().split(';').next().unwrap().to_string());
    let html = r.text().unwrap();
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .map(|r| r.split('"').next().unwrap().to_string());
    (status, html, csrf, cookie)
}

fn fragment(location: &str) -> std::collections::HashMap<String, String> {
    let (_, frag) = location.split_once('#').expect("fragment");
    form_urlencoded::parse(frag.as_bytes())
        .into_owned()
        .collect()
}

fn url_query(location: &str) -> std::collections::HashMap<String, String> {
    let (_, q) = location.split_once('?').expect("query");
    form_urlencoded::parse(q.as_bytes()).into_owned().collect()
}

#[test]
fn sign_in_redirects_with_the_token_in_the_fragment() {
    let p = setup();
    let q = format!(
        "response_type=token&client_id=web&redirect_uri={}&scope=sasl_auth&state=xyz%20123",
        urlenc(CB)
    );
    let (status, html, csrf, cookie) = sign_in_page(&p, &q);
    assert_eq!(status, 200);
    assert!(
        html.contains("<form method=\"post\""),
        "works without JavaScript"
    );
    assert!(!html.contains("<script"));
    assert!(html.contains("Web App"));
    let (csrf, cookie) = (
        csrf.expect("anti-CSRF field"),
        cookie.expect("anti-CSRF cookie"),
    );
    let form = [
        ("response_type", "token"),
        ("client_id", "web"),
        ("redirect_uri", CB),
        ("scope", "sasl_auth"),
        ("state", "xyz 123"),
        ("csrf", csrf.as_str()),
        ("username", "alice@localhost"),
        ("password", "wonderland"),
    ];
    let r = client()
        .post(format!("{}/oauth/authorization_token", p.http()))
        .header("cookie", &cookie)
        .form(&form)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 302);
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    assert!(loc.starts_with(&format!("{CB}#")), "{loc}");
    let f = fragment(&loc);
    assert_eq!(f["token_type"], "bearer");
    assert_eq!(f["state"], "xyz 123");
    assert_eq!(f["scope"], "sasl_auth");
    assert_eq!(f["expires_in"], "2592000");
    assert!(f["access_token"].len() >= 32);
    let list = p.ctl_ok(&["oauth_list_tokens"]);
    assert!(list.contains("alice@localhost"));

    // Without the cookie, or with a forged value, the same POST is refused.
    let r = client()
        .post(format!("{}/oauth/authorization_token", p.http()))
        .form(&form)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    assert!(r.headers().get("location").is_none());
    let mut forged = form;
    forged[5] = (
        "csrf",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    );
    let r = client()
        .post(format!("{}/oauth/authorization_token", p.http()))
        .header("cookie", &cookie)
        .form(&forged)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
}

#[test]
fn wrong_password_shows_the_form_again() {
    let p = setup();
    let (_, _, csrf, cookie) = sign_in_page(
        &p,
        &format!(
            "response_type=token&client_id=web&redirect_uri={}",
            urlenc(CB)
        ),
    );
    let form = [
        ("response_type", "token"),
        ("client_id", "web"),
        ("redirect_uri", CB),
        ("csrf", csrf.unwrap().as_str()),
        ("username", "alice@localhost"),
        ("password", "guess"),
    ]
    .map(|(a, b)| (a.to_string(), b.to_string()));
    let r = client()
        .post(format!("{}/oauth/authorization_token", p.http()))
        .header("cookie", cookie.unwrap())
        .form(&form)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    assert!(r.headers().get("location").is_none());
    let html = r.text().unwrap();
    assert!(html.contains("Wrong account or password"));
    assert!(html.contains("name=\"csrf\""));
    assert_eq!(p.ctl_ok(&["oauth_list_tokens"]).trim(), "");
}

#[test]
fn no_open_redirect() {
    let p = setup();
    for q in [
        format!(
            "response_type=token&client_id=web&redirect_uri={}",
            urlenc("https://evil.example/cb")
        ),
        format!(
            "response_type=token&client_id=web&redirect_uri={}",
            urlenc("https://app.example/cb/extra")
        ),
        format!(
            "response_type=token&client_id=ghost&redirect_uri={}",
            urlenc(CB)
        ),
        format!(
            "response_type=token&client_id=app&redirect_uri={}",
            urlenc(CB)
        ),
        "response_type=token".to_string(),
    ] {
        let r = client()
            .get(format!("{}/oauth/authorization_token?{q}", p.http()))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 400, "{q}");
        assert!(r.headers().get("location").is_none(), "{q}");
        assert!(r.text().unwrap().contains("class=\"error\""));
    }
    // POST with a mismatched redirect_uri: an error page as well.
    let r = client()
        .post(format!("{}/oauth/authorization_token", p.http()))
        .form(&[
            ("response_type", "token"),
            ("client_id", "web"),
            ("redirect_uri", "https://evil.example/"),
            ("username", "alice"),
            ("password", "wonderland"),
        ])
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.headers().get("location").is_none());
}

#[test]
fn request_errors_go_back_to_the_registered_uri() {
    let p = setup();
    let r = client()
        .get(format!("{}/oauth/authorization_token?response_type=id_token&client_id=web&redirect_uri={}&state=s1", p.http(), urlenc(CB)))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 302);
    let f = fragment(r.headers()["location"].to_str().unwrap());
    assert_eq!(f["error"], "unsupported_response_type");
    assert_eq!(f["state"], "s1");
    // An implicit client may not ask for a code: told in the query (the
    // code flow's response mode), with the issuer (RFC 9207).
    let r = client()
        .get(format!(
            "{}/oauth/authorize?response_type=code&client_id=web&redirect_uri={}&state=s2",
            p.http(),
            urlenc(CB)
        ))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 302);
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let q: std::collections::HashMap<String, String> = url_query(&loc);
    assert_eq!(q["error"], "unauthorized_client", "{loc}");
    assert_eq!(q["state"], "s2");
    assert!(q["iss"].starts_with("http://"), "{loc}");
    let r = client()
        .get(format!(
            "{}/oauth/authorization_token?response_type=token&client_id=web&scope=bogus",
            p.http()
        ))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 302);
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    assert!(loc.starts_with(CB));
    assert_eq!(fragment(&loc)["error"], "invalid_scope");
}

#[test]
fn revocation_endpoint() {
    let p = setup();
    p.ctl_ok(&[
        "oauth_add_client_password",
        "other",
        "Other",
        "other-secret",
    ]);
    let (_, v) = password_grant(&p.http(), "alice@localhost", "wonderland", &[]);
    let token = v["access_token"].as_str().unwrap().to_string();
    let url = format!("{}/oauth/revoke", p.http());

    let (s, _, v) = post_form(&url, &[("token", &token)]);
    assert_eq!(
        (s, v["error"].as_str()),
        (401, Some("invalid_client")),
        "client auth required"
    );
    let (s, _, v) = post_form(
        &url,
        &[
            ("token", &token),
            ("client_id", "other"),
            ("client_secret", "other-secret"),
        ],
    );
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("unauthorized_client")),
        "another client's token"
    );
    let (s, _, v) = post_form(
        &url,
        &[("client_id", "app"), ("client_secret", "app-secret")],
    );
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("invalid_request")),
        "no token"
    );
    assert!(p.ctl_ok(&["oauth_list_tokens"]).contains("alice@localhost"));

    // A token id (shown in listings) is not the token: nothing is revoked.
    let id = p
        .ctl_ok(&["oauth_list_tokens"])
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    let (s, _, _) = post_form(
        &url,
        &[
            ("token", &id),
            ("client_id", "app"),
            ("client_secret", "app-secret"),
        ],
    );
    assert_eq!(s, 200);
    assert!(
        p.ctl_ok(&["oauth_list_tokens"]).contains("alice@localhost"),
        "revoked by id over HTTP"
    );
    let (s, _, _) = post_form(
        &url,
        &[
            ("token", &token),
            ("token_type_hint", "access_token"),
            ("client_id", "app"),
            ("client_secret", "app-secret"),
        ],
    );
    assert_eq!(s, 200);
    // The password client got a refresh token too; revoking the access
    // token leaves it (RFC 7009 §2.1 makes that the server's choice).
    let left = p.ctl_ok(&["oauth_list_tokens"]);
    assert!(
        !left.trim().is_empty() && left.lines().all(|l| l.ends_with(" refresh")),
        "only the refresh token is left: {left}"
    );
    // Unknown or already revoked: still 200 (RFC 7009 §2.2).
    let (s, _, _) = post_form(
        &url,
        &[
            ("token", "no-such-token"),
            ("client_id", "app"),
            ("client_secret", "app-secret"),
        ],
    );
    assert_eq!(s, 200);
    let (s, _, _) = post_form(
        &url,
        &[
            ("token", &token),
            ("client_id", "app"),
            ("client_secret", "app-secret"),
        ],
    );
    assert_eq!(s, 200);
}

fn urlenc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
