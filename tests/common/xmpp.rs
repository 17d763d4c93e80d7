//! A raw XMPP test client: writes XML text to a socket and reads replies, so
//! tests can send exactly the bytes they mean (broken ones included).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

/// How long a test waits for an expected reply.
pub const WAIT: Duration = Duration::from_secs(10);

pub fn b64(data: &[u8]) -> String {
    STANDARD.encode(data)
}

pub fn header(to: &str) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
         xmlns:stream='http://etherx.jabber.org/streams' to='{to}' version='1.0'>"
    )
}

pub fn auth(mechanism: &str, payload: &[u8]) -> String {
    format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{mechanism}'>{}</auth>",
        b64(payload)
    )
}

pub fn bind(resource: &str) -> String {
    format!(
        "<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
         <resource>{resource}</resource></bind></iq>"
    )
}

pub struct Raw {
    stream: TcpStream,
    /// Received and not yet consumed by an `expect`.
    pending: Vec<u8>,
    pub closed: bool,
}

impl Raw {
    pub fn connect(addr: SocketAddr) -> Raw {
        Raw::over(TcpStream::connect(addr).unwrap())
    }

    /// A client over an already connected socket.
    pub fn over(stream: TcpStream) -> Raw {
        stream
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        Raw {
            stream,
            pending: Vec::new(),
            closed: false,
        }
    }

    pub fn send(&mut self, s: &str) {
        self.send_bytes(s.as_bytes());
    }

    pub fn send_bytes(&mut self, b: &[u8]) {
        // The server may already have closed on us; the tests look at replies.
        let _ = self.stream.write_all(b);
    }

    fn fill(&mut self) -> bool {
        let mut buf = [0u8; 8192];
        match self.stream.read(&mut buf) {
            Ok(0) => {
                self.closed = true;
                false
            }
            Ok(n) => {
                self.pending.extend_from_slice(&buf[..n]);
                true
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                false
            }
            Err(_) => {
                self.closed = true;
                false
            }
        }
    }

    /// Waits for `needle`; returns everything received up to and including
    /// it. Panics with what did arrive if it does not within `timeout`.
    pub fn expect_within(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = find(&self.pending, needle.as_bytes()) {
                let end = i + needle.len();
                let out: Vec<u8> = self.pending.drain(..end).collect();
                return String::from_utf8_lossy(&out).into_owned();
            }
            if self.closed || Instant::now() > deadline {
                panic!(
                    "expected {needle:?}; got {:?} (closed: {})",
                    String::from_utf8_lossy(&self.pending),
                    self.closed
                );
            }
            self.fill();
        }
    }

    /// Like [`Raw::expect_within`], but `None` (nothing consumed) when
    /// `needle` has not come within `timeout`.
    pub fn poll_for(&mut self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = find(&self.pending, needle.as_bytes()) {
                let end = i + needle.len();
                let out: Vec<u8> = self.pending.drain(..end).collect();
                return Some(String::from_utf8_lossy(&out).into_owned());
            }
            if self.closed || Instant::now() > deadline {
                return None;
            }
            self.fill();
        }
    }

    pub fn expect(&mut self, needle: &str) -> String {
        self.expect_within(needle, WAIT)
    }

    /// Reads until the server closes the connection; returns all unconsumed text.
    pub fn read_to_close(&mut self) -> String {
        let deadline = Instant::now() + WAIT;
        while !self.closed {
            assert!(
                Instant::now() < deadline,
                "server did not close; got {:?}",
                String::from_utf8_lossy(&self.pending)
            );
            self.fill();
        }
        String::from_utf8_lossy(&std::mem::take(&mut self.pending)).into_owned()
    }

    /// Whatever arrives within `d` (for "nothing must arrive" checks).
    pub fn drain_for(&mut self, d: Duration) -> String {
        let deadline = Instant::now() + d;
        while Instant::now() < deadline && !self.closed {
            self.fill();
        }
        String::from_utf8_lossy(&std::mem::take(&mut self.pending)).into_owned()
    }

    /// Sends a header and waits for the features; returns them.
    pub fn open(&mut self, to: &str) -> String {
        self.send(&header(to));
        self.expect("</stream:features>")
    }

    /// Opens a stream and authenticates with `mechanism` and `payload`;
    /// returns the server's reply (a `<success/>` or `<failure>…</failure>`).
    pub fn try_auth(&mut self, mechanism: &str, payload: &[u8]) -> String {
        self.open("localhost");
        self.send(&auth(mechanism, payload));
        self.expect_sasl_result()
    }

    pub fn expect_sasl_result(&mut self) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let text = String::from_utf8_lossy(&self.pending).into_owned();
            for end in [
                "</failure>",
                "</success>",
                "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>",
                "</challenge>",
                "<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>",
            ] {
                if text.contains(end) {
                    return self.expect(end);
                }
            }
            assert!(
                !self.closed && Instant::now() < deadline,
                "no SASL result; got {text:?}"
            );
            self.fill();
        }
    }

    /// After `<success/>`: restart the stream and bind `resource`.
    pub fn restart_and_bind(&mut self, resource: &str) -> String {
        let f = self.open("localhost");
        assert!(f.contains("urn:ietf:params:xml:ns:xmpp-bind"), "{f}");
        self.send(&bind(resource));
        let r = self.expect("</iq>");
        assert!(r.contains("type='result'"), "{r}");
        let jid = r
            .split("<jid>")
            .nth(1)
            .unwrap()
            .split("</jid>")
            .next()
            .unwrap();
        jid.to_string()
    }

    /// A bound session with a password (PLAIN).
    pub fn login(addr: SocketAddr, user: &str, password: &str, resource: &str) -> Raw {
        let mut c = Raw::connect(addr);
        let r = c.try_auth("PLAIN", format!("\0{user}\0{password}").as_bytes());
        assert!(r.contains("<success"), "{r}");
        c.restart_and_bind(resource);
        c
    }

    /// Authenticated (PLAIN) and restarted, not bound: features returned.
    pub fn authenticated(addr: SocketAddr, user: &str, password: &str) -> (Raw, String) {
        let mut c = Raw::connect(addr);
        let r = c.try_auth("PLAIN", format!("\0{user}\0{password}").as_bytes());
        assert!(r.contains("<success"), "{r}");
        let f = c.open("localhost");
        (c, f)
    }

    /// The connection dies: no `</stream>`, the socket just goes.
    pub fn kill(self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }

    /// Everything received so far and not consumed, after waiting until
    /// `needle` arrives (left in the buffer).
    pub fn wait_for(&mut self, needle: &str) {
        let deadline = Instant::now() + WAIT;
        while find(&self.pending, needle.as_bytes()).is_none() {
            assert!(
                !self.closed && Instant::now() < deadline,
                "expected {needle:?}; got {:?}",
                String::from_utf8_lossy(&self.pending)
            );
            self.fill();
        }
    }

    /// A bound session with a token (X-OAUTH2).
    pub fn login_token(addr: SocketAddr, user: &str, token: &str, resource: &str) -> Raw {
        let mut c = Raw::connect(addr);
        let r = c.try_auth("X-OAUTH2", format!("\0{user}\0{token}").as_bytes());
        assert!(r.contains("<success"), "{r}");
        c.restart_and_bind(resource);
        c
    }

    /// Sends initial presence and waits for its echo.
    pub fn available(&mut self) {
        self.send("<presence/>");
        self.expect("<presence");
        self.expect("/>");
    }

    /// A ping to the server: proves the stream is alive and serving.
    pub fn ping(&mut self, id: &str) {
        self.send(&format!(
            "<iq type='get' id='{id}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"
        ));
        self.expect(&format!("id='{id}'"));
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A token for `user` (with `sasl_auth`) issued through ctl.
pub fn issue_token(p: &super::Petrel, jid: &str, ttl: &str) -> String {
    p.ctl_ok(&["oauth_issue_token", jid, ttl, "sasl_auth"])
        .trim()
        .to_string()
}
