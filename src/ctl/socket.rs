//! The admin socket: a Unix socket in the data directory (mode 0600) over which
//! `petrel ctl` asks a running server to run a command.
//!
//! One request per connection: a JSON line `{"args": [...]}`; the reply is a JSON
//! line `{"code": 0|1|2, "output": "..."}`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

use super::{execute, CtlContext};

pub const SOCKET_NAME: &str = "petrel.sock";
const MAX_REQUEST: usize = 64 * 1024;

pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_NAME)
}

#[derive(Serialize, Deserialize)]
struct Request {
    args: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Reply {
    pub code: i32,
    pub output: String,
}

/// Runs a command and shapes the reply.
pub fn run(ctx: &CtlContext, args: &[String]) -> Reply {
    match execute(ctx, args) {
        Ok(Ok(output)) => Reply { code: 0, output },
        Ok(Err(output)) => Reply { code: 1, output },
        Err(usage) => Reply {
            code: 2,
            output: usage.0,
        },
    }
}

/// Binds the socket (replacing a stale one), readable by the owner only.
pub fn bind(data_dir: &Path) -> std::io::Result<UnixListener> {
    let path = socket_path(data_dir);
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("another server answers on {}", path.display()),
            ));
        }
        std::fs::remove_file(&path)?;
    }
    let l = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// Serves admin requests until the listener is dropped.
pub async fn serve(listener: UnixListener, ctx: Arc<CtlContext>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut line = String::new();
            let mut r = tokio::io::BufReader::new(r.take(MAX_REQUEST as u64));
            if r.read_line(&mut line).await.is_err() {
                return;
            }
            let reply = match serde_json::from_str::<Request>(&line) {
                Ok(req) => tokio::task::spawn_blocking(move || run(&ctx, &req.args))
                    .await
                    .unwrap_or(Reply {
                        code: 1,
                        output: "command failed".into(),
                    }),
                Err(e) => Reply {
                    code: 2,
                    output: format!("bad admin request: {e}"),
                },
            };
            let mut out = serde_json::to_vec(&reply).expect("plain data");
            out.push(b'\n');
            let _ = w.write_all(&out).await;
        });
    }
}

/// Client side: `Ok(None)` when no server answers on the socket.
pub fn ask(data_dir: &Path, args: &[String]) -> std::io::Result<Option<Reply>> {
    let path = socket_path(data_dir);
    let mut stream = match std::os::unix::net::UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    let mut req = serde_json::to_vec(&Request {
        args: args.to_vec(),
    })?;
    req.push(b'\n');
    stream.write_all(&req)?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    serde_json::from_str(&line)
        .map(Some)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}
