//! A raw MQTT client for byte-level tests: writes any bytes, reads packets with
//! the crate's codec (itself checked against mqtt5-protocol).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use petrel::mqtt::codec::{self, Packet, Version};

pub struct RawClient {
    pub stream: TcpStream,
    buf: BytesMut,
    pub version: Version,
}

impl RawClient {
    pub fn connect(addr: SocketAddr, version: Version) -> RawClient {
        RawClient::over(TcpStream::connect(addr).unwrap(), version)
    }

    /// A client over an already connected socket.
    pub fn over(stream: TcpStream, version: Version) -> RawClient {
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        RawClient {
            stream,
            buf: BytesMut::new(),
            version,
        }
    }

    pub fn send(&mut self, p: &Packet) {
        let mut out = BytesMut::new();
        codec::encode(p, self.version, &mut out).unwrap();
        self.stream.write_all(&out).unwrap();
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
    }

    /// The next packet, or None when the server closed the connection.
    /// Panics after 30 s of silence (longer than the server's 10 s CONNECT
    /// timeout, which a test may wait out).
    pub fn recv(&mut self) -> Option<Packet> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(p) = codec::decode(&mut self.buf, Some(self.version), usize::MAX).unwrap() {
                return Some(p);
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    assert!(Instant::now() < deadline, "no packet within 30 s");
                }
                Err(_) => return None,
            }
        }
    }

    /// Reads until the server closes; returns what it sent first.
    pub fn recv_then_closed(&mut self) -> Vec<Packet> {
        let mut got = Vec::new();
        while let Some(p) = self.recv() {
            got.push(p);
            assert!(got.len() < 100, "server keeps talking: {got:?}");
        }
        got
    }
}

pub fn connect_packet(client_id: &str, method: Option<&str>, data: Option<&[u8]>) -> Packet {
    let mut c = codec::Connect {
        version: Version::V5,
        clean_start: true,
        keep_alive: 60,
        properties: codec::Properties::default(),
        client_id: client_id.to_string(),
        will: None,
        username: None,
        password: None,
    };
    c.properties.authentication_method = method.map(str::to_string);
    c.properties.authentication_data = data.map(bytes::Bytes::copy_from_slice);
    Packet::Connect(c)
}
