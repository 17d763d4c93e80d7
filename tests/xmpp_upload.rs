//! XEP-0363 HTTP File Upload: slixmpp's `xep_0363` uploads a file and reads
//! it back, then meets the quota and the size limit; raw HTTP checks every
//! refusal of the `/upload/` route (signature, expiry, length, type,
//! overwrite, unknown files), HEAD, the CORS preflight and the safe headers;
//! the expiry sweep at start deletes an old file; without an HTTP listener
//! the service does not exist.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::xmpp::Raw;
use common::{slixmpp, Petrel};

#[test]
fn slixmpp_uploads_a_file_and_meets_the_quota_and_the_size_limit() {
    let p = Petrel::start("[upload]\nmax_size = 1000\nquota = 1000\n").with_user_and_client();
    let script = r#"
import io, aiohttp
async def main():
    alice = make('alice@localhost', 'wonderland')
    alice.register_plugin('xep_0363')
    await online(alice)
    up = alice.plugin['xep_0363']
    data = bytes(range(256)) * 2 + b'petrel' * 30
    url = await up.upload_file('a cat.png', size=len(data), content_type='image/png',
                               input_file=io.BytesIO(data), timeout=10)
    print('service', up.upload_service)
    print('max', up.max_file_size)
    print('url', url)
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as r:
            body = await r.read()
            print('get', r.status, r.headers['Content-Type'], body == data, len(body))
    try:
        await up.request_slot(up.upload_service, 'second.bin', 400, 'application/octet-stream', timeout=10)
        print('quota not enforced')
    except slixmpp.exceptions.IqError as e:
        print('quota', e.iq['error']['type'], e.iq['error']['condition'])
    try:
        await up.request_slot(up.upload_service, 'big.bin', 5000, timeout=10)
        print('size not enforced')
    except slixmpp.exceptions.IqError as e:
        m = e.iq.xml.find('.//{urn:xmpp:http:upload:0}file-too-large/{urn:xmpp:http:upload:0}max-size')
        print('too large', e.iq['error']['condition'], m.text if m is not None else None)
    alice.disconnect()
run(main)
"#;
    let out = slixmpp::run(&p, script, &[]);
    assert!(out.contains("service upload.localhost"), "{out}");
    assert!(
        out.contains("max 1000"),
        "the data form's max-file-size: {out}"
    );
    let port = p.addrs["http"][0].port();
    assert!(
        out.contains(&format!("url http://localhost:{port}/upload/")) && out.contains("/a_cat.png"),
        "{out}"
    );
    assert!(out.contains("get 200 image/png True 692"), "{out}");
    assert!(out.contains("quota wait resource-constraint"), "{out}");
    assert!(out.contains("too large not-acceptable 1000"), "{out}");
}

/// An HTTP/1.1 exchange on a fresh connection: (status, head, body).
fn http(addr: SocketAddr, head: &str, body: &[u8]) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // One write: the server may answer before it reads the body.
    let mut req = format!("{head}Host: localhost\r\nConnection: close\r\n\r\n").into_bytes();
    req.extend_from_slice(body);
    s.write_all(&req).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer: {:?}", String::from_utf8_lossy(&out)));
    let head = String::from_utf8_lossy(&out[..split]).to_string();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase(), out[split + 4..].to_vec())
}

/// The path-and-query of a slot URL in a `<slot/>` answer.
fn url_of(slot: &str, which: &str, port: u16) -> String {
    let start = slot
        .find(&format!("<{which} url='"))
        .unwrap_or_else(|| panic!("no {which} in {slot}"))
        + which.len()
        + 7;
    let url = &slot[start..start + slot[start..].find('\'').unwrap()];
    url.replace("&amp;", "&")
        .strip_prefix(&format!("http://localhost:{port}"))
        .unwrap()
        .to_string()
}

fn request_slot(c: &mut Raw, id: &str, attrs: &str) -> String {
    c.send(&format!(
        "<iq type='get' id='{id}' to='upload.localhost'><request xmlns='urn:xmpp:http:upload:0' {attrs}/></iq>"
    ));
    c.expect("</iq>")
}

fn put(addr: SocketAddr, path: &str, headers: &str, body: &[u8]) -> (u16, String, Vec<u8>) {
    http(addr, &format!("PUT {path} HTTP/1.1\r\n{headers}"), body)
}

#[test]
fn the_http_route_checks_every_upload_and_serves_files_safely() {
    let mut p = Petrel::start("").with_user_and_client();
    let addr = p.addrs["http"][0];
    let port = addr.port();
    let mut alice = Raw::login(p.addrs["c2s"][0], "alice", "wonderland", "r");

    // Slot requests the service refuses.
    let r = request_slot(&mut alice, "nf", "size='3'");
    assert!(r.contains("<bad-request"), "{r}");
    let r = request_slot(&mut alice, "ns", "filename='a.txt'");
    assert!(r.contains("<bad-request"), "{r}");
    let r = request_slot(&mut alice, "big", "filename='a.txt' size='104857601'");
    assert!(
        r.contains("<not-acceptable") && r.contains("<max-size>104857600</max-size>"),
        "{r}"
    );

    let slot = request_slot(
        &mut alice,
        "s1",
        "filename='../notes.txt' size='11' content-type='text/plain'",
    );
    let put_path = url_of(&slot, "put", port);
    let get_path = url_of(&slot, "get", port);
    assert!(get_path.ends_with("/notes.txt"), "{get_path}");
    let ok_headers = "Content-Type: text/plain\r\nContent-Length: 11\r\n";

    // A bad signature, then every way the body may differ from the slot.
    let forged = put_path.replace("size=11", "size=12");
    let (st, _, _) = put(
        addr,
        &forged,
        "Content-Type: text/plain\r\nContent-Length: 12\r\n",
        b"hello world!",
    );
    assert_eq!(st, 403);
    let sig_at = put_path.find("sig=").unwrap() + 4;
    let mut other_sig = put_path.clone();
    other_sig.replace_range(
        sig_at..sig_at + 2,
        if &put_path[sig_at..sig_at + 2] == "00" {
            "11"
        } else {
            "00"
        },
    );
    assert_eq!(put(addr, &other_sig, ok_headers, b"hello world").0, 403);
    let (st, _, _) = put(
        addr,
        &put_path,
        "Content-Type: text/plain\r\nTransfer-Encoding: chunked\r\n",
        b"b\r\nhello world\r\n0\r\n\r\n",
    );
    assert_eq!(st, 411, "no Content-Length");
    let (st, _, _) = put(
        addr,
        &put_path,
        "Content-Type: text/plain\r\nContent-Length: 12\r\n",
        b"hello world!",
    );
    assert_eq!(st, 413, "longer than the slot");
    let (st, _, _) = put(
        addr,
        &put_path,
        "Content-Type: text/plain\r\nContent-Length: 10\r\n",
        b"hello worl",
    );
    assert_eq!(st, 400, "shorter than the slot");
    let (st, _, _) = put(
        addr,
        &put_path,
        "Content-Type: text/html\r\nContent-Length: 11\r\n",
        b"hello world",
    );
    assert_eq!(st, 400, "another content type");
    // Nothing of those was stored.
    assert_eq!(
        http(addr, &format!("GET {get_path} HTTP/1.1\r\n"), b"").0,
        404
    );

    let (st, head, _) = put(addr, &put_path, ok_headers, b"hello world");
    assert_eq!(st, 201, "{head}");
    assert!(head.contains("access-control-allow-origin: *"), "{head}");
    let (st, _, _) = put(addr, &put_path, ok_headers, b"HELLO WORLD");
    assert_eq!(st, 409, "never overwritten");

    let (st, head, body) = http(addr, &format!("GET {get_path} HTTP/1.1\r\n"), b"");
    assert_eq!((st, body.as_slice()), (200, &b"hello world"[..]), "{head}");
    for h in [
        "content-type: text/plain",
        "content-length: 11",
        "x-content-type-options: nosniff",
        "content-security-policy: default-src 'none'",
        "content-disposition: attachment; filename=\"notes.txt\"",
        "access-control-allow-origin: *",
    ] {
        assert!(head.contains(h), "{h} missing in {head}");
    }
    let (st, head, body) = http(addr, &format!("HEAD {get_path} HTTP/1.1\r\n"), b"");
    assert_eq!(st, 200);
    assert!(head.contains("content-length: 11"), "{head}");
    assert!(head.contains("content-type: text/plain"), "{head}");
    assert!(body.is_empty());
    // Unknown files, and a known id under another name.
    let id = get_path.split('/').nth(2).unwrap();
    let unknown = get_path.replace(id, "0123456789abcdef0123456789abcdef");
    assert_eq!(
        http(addr, &format!("GET {unknown} HTTP/1.1\r\n"), b"").0,
        404
    );
    let renamed = get_path.replace("notes.txt", "other.txt");
    assert_eq!(
        http(addr, &format!("GET {renamed} HTTP/1.1\r\n"), b"").0,
        404
    );
    assert_eq!(http(addr, "GET /upload/../key HTTP/1.1\r\n", b"").0, 404);

    // The CORS preflight of a browser's PUT.
    let (st, head, _) = http(
        addr,
        &format!(
            "OPTIONS {put_path} HTTP/1.1\r\nOrigin: https://web.example\r\nAccess-Control-Request-Method: PUT\r\nAccess-Control-Request-Headers: content-type\r\n"
        ),
        b"",
    );
    assert!(st == 200 || st == 204, "{head}");
    assert!(head.contains("access-control-allow-origin: *"), "{head}");
    assert!(
        head.contains("access-control-allow-methods: ") && head.contains("put"),
        "{head}"
    );
    assert!(
        head.contains("access-control-allow-headers: content-type"),
        "{head}"
    );

    // An image is shown inline.
    let slot = request_slot(
        &mut alice,
        "s2",
        "filename='p.png' size='4' content-type='image/png'",
    );
    let (st, _, _) = put(
        addr,
        &url_of(&slot, "put", port),
        "Content-Type: image/png\r\nContent-Length: 4\r\n",
        b"\x89PNG",
    );
    assert_eq!(st, 201);
    let (st, head, _) = http(
        addr,
        &format!("GET {} HTTP/1.1\r\n", url_of(&slot, "get", port)),
        b"",
    );
    assert_eq!(st, 200);
    assert!(head.contains("content-type: image/png"), "{head}");
    assert!(!head.contains("content-disposition"), "{head}");

    // An expired slot, signed with the server's own key (no waiting).
    let key: [u8; 32] = std::fs::read(p.data_dir().join("upload/key"))
        .unwrap()
        .try_into()
        .unwrap();
    let old = petrel::xmpp::upload::slot::Grant {
        id: "00112233445566778899aabbccddeeff".into(),
        name: "late.txt".into(),
        size: 4,
        content_type: "text/plain".into(),
        expires: 1,
        owner: "alice@localhost".into(),
    };
    let url = old.put_url("", &key);
    let (st, _, body) = put(
        addr,
        &url,
        "Content-Type: text/plain\r\nContent-Length: 4\r\n",
        b"late",
    );
    assert_eq!(st, 403);
    assert!(String::from_utf8_lossy(&body).contains("expired"));

    // The expiry sweep at start: the text file stored "40 days ago" goes,
    // the image stays.
    let meta = p.data_dir().join(format!("upload/files/{id}.meta"));
    let m = std::fs::read_to_string(&meta).unwrap();
    let created = m
        .split("\"created\":")
        .nth(1)
        .unwrap()
        .trim_end_matches('}');
    let now: u64 = created.parse().unwrap();
    std::fs::write(&meta, m.replace(created, &(now - 40 * 86_400).to_string())).unwrap();
    drop(alice);
    p.stop();
    p.spawn();
    let addr = p.addrs["http"][0];
    let get_old = get_path.replace(&format!(":{port}"), "");
    assert_eq!(
        http(addr, &format!("GET {get_old} HTTP/1.1\r\n"), b"").0,
        404
    );
    assert!(!meta.exists());
    assert!(!p
        .data_dir()
        .join(format!("upload/files/{id}.data"))
        .exists());
    let (st, _, _) = http(
        addr,
        &format!("GET {} HTTP/1.1\r\n", url_of(&slot, "get", port)),
        b"",
    );
    assert_eq!(st, 200, "the recent file is kept");
}

#[test]
fn without_an_http_listener_there_is_no_upload_service() {
    let listeners = r#"
[[listen]]
module = "c2s"
port = 0
starttls = true
"#;
    let p = Petrel::start_with_listeners("", listeners).with_user_and_client();
    let mut alice = Raw::login(p.addrs["c2s"][0], "alice", "wonderland", "r");
    alice.send("<iq type='get' id='it' to='localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>");
    let items = alice.expect("</iq>");
    assert!(!items.contains("upload.localhost"), "{items}");
    let r = request_slot(&mut alice, "s", "filename='a.txt' size='3'");
    assert!(r.contains("<remote-server-not-found"), "{r}");
}

/// Slots granted while nothing was stored may together pass the quota:
/// the PUT that would pass it is refused (413) and stores nothing.
#[test]
fn a_put_past_the_quota_is_refused() {
    let p = Petrel::start("[upload]\nquota = 10\n").with_user_and_client();
    let addr = p.addrs["http"][0];
    let port = addr.port();
    let mut alice = Raw::login(p.addrs["c2s"][0], "alice", "wonderland", "r");
    let a = request_slot(&mut alice, "a", "filename='a.bin' size='6'");
    let b = request_slot(&mut alice, "b", "filename='b.bin' size='6'");
    let headers = "Content-Type: application/octet-stream\r\nContent-Length: 6\r\n";
    assert_eq!(
        put(addr, &url_of(&a, "put", port), headers, b"aaaaaa").0,
        201
    );
    let (st, _, body) = put(addr, &url_of(&b, "put", port), headers, b"bbbbbb");
    assert_eq!(st, 413, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        http(
            addr,
            &format!("GET {} HTTP/1.1\r\n", url_of(&b, "get", port)),
            b""
        )
        .0,
        404
    );
    // And a new slot is refused at once, with the XEP's condition.
    let r = request_slot(&mut alice, "c", "filename='c.bin' size='5'");
    assert!(
        r.contains("type='wait'") && r.contains("<resource-constraint"),
        "{r}"
    );
}
