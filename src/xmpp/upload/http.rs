//! The `/upload/…` route of the HTTP listeners (XEP-0363 §5):
//!
//! * `PUT /upload/<id>/<name>?expires&size&type&owner&sig` — the slot's
//!   signature and expiry checked (403), `Content-Length` the slot's size
//!   (411 missing, 413 larger, 400 smaller), `Content-Type` the slot's (400),
//!   nothing stored under the id yet (409), the owner's quota (413); the body
//!   streamed to a temporary file, fsynced, linked to its name (never over
//!   another), then `201 Created`.
//! * `GET`/`HEAD /upload/<id>/<name>` — the file with its content type and
//!   headers that keep a browser from running it: `nosniff`, a sandboxing
//!   Content-Security-Policy, `Content-Disposition: attachment` unless it is
//!   an image, audio or video.
//! * `OPTIONS` — the CORS preflight of web clients; every answer carries
//!   `Access-Control-Allow-Origin: *`.
//!
//! A PUT is exempt from `http_request_timeout`: `server.rs` gives it
//! `[upload] put_timeout` instead ([`is_upload_put`]).

use std::sync::Arc;

use bytes::{Buf, Bytes};
use futures_util::{Stream, StreamExt};
use warp::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use warp::reply::Response;
use warp::Filter;

use super::slot::{self, PutRefusal};
use super::store::{CommitError, Meta};
use super::Uploads;

/// Bytes read from a stored file per chunk sent.
const CHUNK: usize = 64 * 1024;

/// Whether a request is an upload (it gets `put_timeout`, not
/// `http_request_timeout`).
pub fn is_upload_put<B>(req: &warp::http::Request<B>) -> bool {
    req.method() == Method::PUT && req.uri().path().starts_with("/upload/")
}

/// The route; with no upload service it matches nothing.
pub fn route(
    uploads: Option<Arc<Uploads>>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let on = warp::any().and_then(move || {
        let up = uploads.clone();
        async move { up.ok_or_else(warp::reject::not_found) }
    });
    on.and(warp::path("upload"))
        .and(warp::path::tail())
        .and(warp::method())
        .and(warp::header::headers_cloned())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::body::stream())
        .then(
            |up: Arc<Uploads>,
             tail: warp::path::Tail,
             method: Method,
             headers: HeaderMap,
             query: String,
             body| async move {
                let mut r = match method {
                    Method::OPTIONS => preflight(),
                    Method::GET | Method::HEAD => get(&up, tail.as_str()).await,
                    Method::PUT => put(&up, tail.as_str(), &query, &headers, body).await,
                    _ => {
                        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
                        r.headers_mut().insert(
                            header::ALLOW,
                            HeaderValue::from_static("GET, HEAD, PUT, OPTIONS"),
                        );
                        r
                    }
                };
                r.headers_mut().insert(
                    header::ACCESS_CONTROL_ALLOW_ORIGIN,
                    HeaderValue::from_static("*"),
                );
                r
            },
        )
}

fn text(status: StatusCode, body: &'static str) -> Response {
    let mut r = Response::new(body.into());
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// The CORS preflight: a browser may PUT with a Content-Type.
fn preflight() -> Response {
    let mut r = Response::new(Bytes::new().into());
    *r.status_mut() = StatusCode::NO_CONTENT;
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, HEAD, PUT, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Content-Type"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    r
}

/// GET and HEAD (hyper leaves the body out of a HEAD answer).
async fn get(up: &Arc<Uploads>, tail: &str) -> Response {
    let not_found = || text(StatusCode::NOT_FOUND, "no such file\n");
    let Some((id, name)) = slot::split_path(tail) else {
        return not_found();
    };
    let (u, i) = (up.clone(), id.to_string());
    let meta = match tokio::task::spawn_blocking(move || u.store.meta(&i)).await {
        Ok(Ok(Some(m))) if m.name == name => m,
        Ok(Ok(_)) => return not_found(),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "could not read an upload's metadata");
            return text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n");
        }
        Err(e) => {
            tracing::error!(error = %e, "reading an upload's metadata failed");
            return text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n");
        }
    };
    let file = match tokio::fs::File::open(up.store.data_path(id)).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return not_found(),
        Err(e) => {
            tracing::error!(error = %e, "could not open an uploaded file");
            return text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n");
        }
    };
    let chunks = futures_util::stream::try_unfold(file, |mut f| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; CHUNK];
        let n = f.read(&mut buf).await?;
        if n == 0 {
            return Ok::<_, std::io::Error>(None);
        }
        buf.truncate(n);
        Ok(Some((Bytes::from(buf), f)))
    });
    let mut r = warp::reply::Reply::into_response(warp::reply::stream(chunks));
    let h = r.headers_mut();
    let ct = HeaderValue::from_str(&meta.content_type)
        .unwrap_or(HeaderValue::from_static(slot::DEFAULT_CONTENT_TYPE));
    h.insert(header::CONTENT_TYPE, ct);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(meta.size));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'; sandbox"),
    );
    if !slot::is_inline(&meta.content_type) {
        // The name is sanitized: nothing in it needs quoting.
        if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{}\"", meta.name)) {
            h.insert(header::CONTENT_DISPOSITION, v);
        }
    }
    r
}

/// A PUT: see the module docs for the order of the checks.
async fn put<S, B>(
    up: &Arc<Uploads>,
    tail: &str,
    query: &str,
    headers: &HeaderMap,
    body: S,
) -> Response
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf,
{
    let grant = match slot::check_put(tail, query, &up.key, up.now()) {
        Ok(g) => g,
        Err(PutRefusal::Malformed) => return text(StatusCode::BAD_REQUEST, "not an upload slot\n"),
        Err(PutRefusal::BadSignature) => {
            return text(StatusCode::FORBIDDEN, "bad slot signature\n")
        }
        Err(PutRefusal::Expired) => return text(StatusCode::FORBIDDEN, "slot expired\n"),
    };
    let Some(length) = headers.get(header::CONTENT_LENGTH) else {
        return text(StatusCode::LENGTH_REQUIRED, "Content-Length required\n");
    };
    let Some(length) = length
        .to_str()
        .ok()
        .and_then(|l| l.trim().parse::<u64>().ok())
    else {
        return text(StatusCode::BAD_REQUEST, "bad Content-Length\n");
    };
    if length > grant.size {
        return text(StatusCode::PAYLOAD_TOO_LARGE, "larger than the slot\n");
    }
    if length < grant.size {
        return text(StatusCode::BAD_REQUEST, "smaller than the slot\n");
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if !slot::same_content_type(&grant.content_type, ct) {
        return text(
            StatusCode::BAD_REQUEST,
            "Content-Type differs from the slot's\n",
        );
    }
    if up.store.exists(&grant.id) {
        return text(StatusCode::CONFLICT, "already uploaded\n");
    }
    if !up.store.reserve(&grant.owner, grant.size, up.config.quota) {
        return text(StatusCode::PAYLOAD_TOO_LARGE, "upload quota reached\n");
    }
    let tmp = up.store.tmp_path(&up.random_hex::<16>());
    let received = receive(&tmp, grant.size, body).await;
    let stored = match received {
        Ok(()) => {
            let meta = Meta {
                name: grant.name.clone(),
                content_type: grant.content_type.clone(),
                size: grant.size,
                owner: grant.owner.clone(),
                created: up.now(),
            };
            let (u, id, t) = (up.clone(), grant.id.clone(), tmp.clone());
            match tokio::task::spawn_blocking(move || u.store.commit(&id, &t, &meta)).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(CommitError::Exists)) => {
                    Err(text(StatusCode::CONFLICT, "already uploaded\n"))
                }
                Ok(Err(CommitError::Io(e))) => {
                    tracing::error!(error = %e, "could not store an upload");
                    Err(text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "could not store the file\n",
                    ))
                }
                Err(e) => {
                    tracing::error!(error = %e, "storing an upload failed");
                    Err(text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "could not store the file\n",
                    ))
                }
            }
        }
        Err(r) => Err(r),
    };
    match stored {
        Ok(()) => {
            tracing::debug!(owner = %grant.owner, size = grant.size, "file uploaded");
            text(StatusCode::CREATED, "stored\n")
        }
        Err(r) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            up.store.release(&grant.owner, grant.size);
            r
        }
    }
}

/// Streams the body into `tmp` (0600) and fsyncs it; exactly `size` bytes.
async fn receive<S, B>(tmp: &std::path::Path, size: u64, body: S) -> Result<(), Response>
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf,
{
    use tokio::io::AsyncWriteExt;
    let internal = |e: std::io::Error| {
        tracing::error!(error = %e, "could not write an upload");
        text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "could not store the file\n",
        )
    };
    let mut f = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)
        .await
        .map_err(internal)?;
    let mut got: u64 = 0;
    let mut body = std::pin::pin!(body);
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|_| text(StatusCode::BAD_REQUEST, "body incomplete\n"))?;
        got += chunk.remaining() as u64;
        if got > size {
            return Err(text(
                StatusCode::PAYLOAD_TOO_LARGE,
                "larger than the slot\n",
            ));
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            let n = part.len();
            f.write_all(part).await.map_err(internal)?;
            chunk.advance(n);
        }
    }
    if got != size {
        return Err(text(StatusCode::BAD_REQUEST, "body incomplete\n"));
    }
    f.flush().await.map_err(internal)?;
    f.sync_all().await.map_err(internal)?;
    Ok(())
}
