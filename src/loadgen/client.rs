//! A minimal MQTT client on the crate's sans-I/O codec: just what the
//! scenarios need — log in (X-OAUTH2 in CONNECT, answering an AUTH 0x18
//! continue; username/password; anonymous), subscribe, and buffered packet
//! reading and writing that the scenario loops drive themselves.

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::net::{BoxIo, Endpoint};
use super::options::{AuthMode, Plan};
use crate::mqtt::codec::{
    self, reason, Auth, ConnAck, Connect, Disconnect, Packet, Properties, QoS, Subscribe,
    SubscriptionOptions, Version,
};

/// Largest packet the generator accepts from a broker.
const MAX_PACKET: usize = 16 << 20;
/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("connection refused by the broker: reason 0x{0:02x}")]
    Refused(u8),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("connection closed by the broker")]
    Closed,
    #[error("timed out")]
    Timeout,
}

impl ClientError {
    /// A short stable label for counting errors by kind.
    pub fn kind(&self) -> String {
        match self {
            ClientError::Io(e) => format!("io: {}", e.kind()),
            other => other.to_string(),
        }
    }
}

/// How one connection logs in.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<Bytes>,
    /// X-OAUTH2 token for CONNECT's Authentication Data.
    pub oauth_token: Option<Bytes>,
    /// Above 0: a persistent session (MQTT 5 Session Expiry Interval;
    /// MQTT 3.1.1 Clean Session 0).
    pub session_expiry: u32,
    /// Resume the stored session (Clean Start 0).
    pub resume: bool,
}

impl Identity {
    /// Connection `index` in role `role` ('c' connection, 'p' publisher, 's'
    /// subscriber): user `index % users`, token `index % tokens`.
    pub fn for_connection(plan: &Plan, tokens: &[String], role: char, index: u64) -> Identity {
        let user = index % plan.users;
        let token = (!tokens.is_empty()).then(|| {
            Bytes::copy_from_slice(tokens[(index % tokens.len() as u64) as usize].as_bytes())
        });
        let client_id = format!("lg{}{role}{index}", std::process::id() % 100_000);
        // Publishers keep no session; subscribers and held connections do
        // when asked.
        let session_expiry = if role == 'p' { 0 } else { plan.session_expiry };
        let id = match plan.auth {
            // SCRAM and FAST are refused for MQTT by the plan.
            AuthMode::None | AuthMode::ScramSha256 | AuthMode::Fast => Identity {
                client_id,
                ..Identity::default()
            },
            AuthMode::XOauth2 => Identity {
                client_id,
                username: plan.username_with_token.then(|| plan.username(user)),
                oauth_token: token,
                ..Identity::default()
            },
            AuthMode::Password => Identity {
                client_id,
                username: Some(plan.username(user)),
                password: Some(Bytes::copy_from_slice(plan.password.as_bytes())),
                ..Identity::default()
            },
            AuthMode::TokenAsPassword => Identity {
                client_id,
                username: Some(plan.username(user)),
                password: token,
                ..Identity::default()
            },
        };
        Identity {
            session_expiry,
            ..id
        }
    }
}

/// One logged-in connection with its buffers.
pub struct Client {
    pub io: BoxIo,
    /// Bytes read but not yet decoded.
    pub rbuf: BytesMut,
    /// Packets encoded but not yet written.
    pub wbuf: BytesMut,
    pub version: Version,
    pub connack: ConnAck,
}

impl Client {
    /// Opens a stream to the endpoint's address `slot` (mod their number)
    /// and logs in. The caller bounds it with a timeout.
    pub async fn connect(
        endpoint: &Endpoint,
        slot: u64,
        version: Version,
        identity: &Identity,
        keep_alive: u16,
    ) -> Result<Client, ClientError> {
        let io = endpoint.connect_slot(slot).await?;
        let mut c = Client {
            io,
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            version,
            connack: ConnAck::default(),
        };
        let mut properties = Properties::default();
        if let Some(token) = &identity.oauth_token {
            properties.authentication_method = Some("X-OAUTH2".into());
            properties.authentication_data = Some(token.clone());
        }
        if version == Version::V5 {
            // Let the broker queue as many QoS 1/2 deliveries to us as it likes.
            properties.receive_maximum = Some(u16::MAX);
            if identity.session_expiry > 0 {
                properties.session_expiry_interval = Some(identity.session_expiry);
            }
        }
        c.queue(&Packet::Connect(Connect {
            version,
            // MQTT 5 starts clean and keeps the session for its expiry;
            // 3.1.1 keeps it with Clean Session 0.
            clean_start: !identity.resume
                && (version == Version::V5 || identity.session_expiry == 0),
            keep_alive,
            properties,
            client_id: identity.client_id.clone(),
            will: None,
            username: identity.username.clone(),
            password: identity.password.clone(),
        }))?;
        c.flush().await?;
        // At most a few rounds: CONNACK, or AUTH continue then CONNACK.
        for _ in 0..4 {
            match c.recv().await? {
                Packet::ConnAck(ack) => {
                    if ack.reason_code != reason::SUCCESS {
                        return Err(ClientError::Refused(ack.reason_code));
                    }
                    c.connack = ack;
                    return Ok(c);
                }
                Packet::Auth(a) if a.reason_code == 0x18 && identity.oauth_token.is_some() => {
                    let props = Properties {
                        authentication_method: Some("X-OAUTH2".into()),
                        authentication_data: identity.oauth_token.clone(),
                        ..Properties::default()
                    };
                    c.queue(&Packet::Auth(Auth {
                        reason_code: 0x18,
                        properties: props,
                    }))?;
                    c.flush().await?;
                }
                other => {
                    return Err(ClientError::Protocol(format!(
                        "expected CONNACK, got {}",
                        packet_name(&other)
                    )))
                }
            }
        }
        Err(ClientError::Protocol("no CONNACK after 4 packets".into()))
    }

    /// Encodes `p` into the write buffer.
    pub fn queue(&mut self, p: &Packet) -> Result<(), ClientError> {
        codec::encode(p, self.version, &mut self.wbuf)
            .map_err(|e| ClientError::Protocol(format!("encode: {e}")))
    }

    /// Writes everything queued; cancel-safe (see [`write_buffered`]).
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        Ok(super::net::write_buffered(&mut self.io, &mut self.wbuf).await?)
    }

    /// Reads what the socket has into the read buffer; `Closed` at EOF.
    /// Cancel-safe (a read that did not complete consumed nothing).
    pub async fn read_more(&mut self) -> Result<usize, ClientError> {
        self.read_some(READ_CHUNK).await
    }

    /// Like [`Client::read_more`] with room for only `chunk` bytes: idle
    /// connections keep their buffers small.
    pub async fn read_some(&mut self, chunk: usize) -> Result<usize, ClientError> {
        self.rbuf.reserve(chunk);
        let n = self.io.read_buf(&mut self.rbuf).await?;
        if n == 0 {
            return Err(ClientError::Closed);
        }
        Ok(n)
    }

    /// The next complete packet already buffered.
    pub fn next_packet(&mut self) -> Result<Option<Packet>, ClientError> {
        codec::decode(&mut self.rbuf, Some(self.version), MAX_PACKET)
            .map_err(|e| ClientError::Protocol(format!("decode: {e}")))
    }

    /// Waits for the next packet.
    pub async fn recv(&mut self) -> Result<Packet, ClientError> {
        loop {
            if let Some(p) = self.next_packet()? {
                return Ok(p);
            }
            self.read_more().await?;
        }
    }

    /// Subscribes to `filter` and waits for a granted SUBACK.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> Result<(), ClientError> {
        self.queue(&Packet::Subscribe(Subscribe {
            packet_id: 1,
            properties: Properties::default(),
            filters: vec![(
                filter.to_string(),
                SubscriptionOptions {
                    qos,
                    ..SubscriptionOptions::default()
                },
            )],
        }))?;
        self.flush().await?;
        loop {
            match self.recv().await? {
                Packet::SubAck(ack) => {
                    return match ack.reason_codes.first() {
                        Some(&c) if c <= 2 => Ok(()),
                        Some(&c) => Err(ClientError::Refused(c)),
                        None => Err(ClientError::Protocol("empty SUBACK".into())),
                    }
                }
                Packet::PingResp => {}
                other => {
                    return Err(ClientError::Protocol(format!(
                        "expected SUBACK, got {}",
                        packet_name(&other)
                    )))
                }
            }
        }
    }

    /// Sends DISCONNECT (normal) and closes, ignoring errors: the run is over.
    pub async fn disconnect(mut self) {
        let _ = self.queue(&Packet::Disconnect(Disconnect::default()));
        // Bounded: a broker that reads nothing more (a flooded one) must
        // not hold the run; the socket is dropped then.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
            let _ = self.flush().await;
            let _ = self.io.shutdown().await;
        })
        .await;
    }

    /// The broker's Receive Maximum (MQTT 5), else 65,535.
    pub fn broker_receive_maximum(&self) -> u16 {
        self.connack.properties.receive_maximum.unwrap_or(u16::MAX)
    }
}

/// A packet's name, for error messages.
pub fn packet_name(p: &Packet) -> &'static str {
    match p {
        Packet::Connect(_) => "CONNECT",
        Packet::ConnAck(_) => "CONNACK",
        Packet::Publish(_) => "PUBLISH",
        Packet::PubAck(_) => "PUBACK",
        Packet::PubRec(_) => "PUBREC",
        Packet::PubRel(_) => "PUBREL",
        Packet::PubComp(_) => "PUBCOMP",
        Packet::Subscribe(_) => "SUBSCRIBE",
        Packet::SubAck(_) => "SUBACK",
        Packet::Unsubscribe(_) => "UNSUBSCRIBE",
        Packet::UnsubAck(_) => "UNSUBACK",
        Packet::PingReq => "PINGREQ",
        Packet::PingResp => "PINGRESP",
        Packet::Disconnect(d) if d.reason_code == 0 => "DISCONNECT",
        Packet::Disconnect(_) => "DISCONNECT with an error",
        Packet::Auth(_) => "AUTH",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    #[tokio::test]
    async fn a_cancelled_flush_resumes_without_repeating_bytes() {
        // An 8-byte pipe: a flush of 100 bytes cannot finish in one poll.
        let (near, mut far) = tokio::io::duplex(8);
        let mut c = Client {
            io: Box::new(near),
            rbuf: BytesMut::new(),
            wbuf: BytesMut::from(&(0..100u8).collect::<Vec<u8>>()[..]),
            version: Version::V5,
            connack: ConnAck::default(),
        };
        assert!(c.flush().now_or_never().is_none(), "first poll stalls");
        assert_eq!(c.wbuf.len(), 92, "what was written left the buffer");
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; 100];
            far.read_exact(&mut got).await.unwrap();
            got
        });
        c.flush().await.unwrap();
        assert!(c.wbuf.is_empty());
        assert_eq!(reader.await.unwrap(), (0..100u8).collect::<Vec<u8>>());
    }
}
