//! HTTP/2 on the wire: hand-written frames for hostile clients (preface only, streams whose
//! body never comes, clients that never answer), and the `h2` crate for well-behaved requests.

use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite};

/// The client connection preface.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub const HEADERS: u8 = 1;
pub const RST_STREAM: u8 = 3;
pub const SETTINGS: u8 = 4;
pub const END_STREAM: u8 = 1;
pub const END_HEADERS: u8 = 4;
/// RST_STREAM error code REFUSED_STREAM.
pub const REFUSED_STREAM: u32 = 7;

/// One frame.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap();
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The preface and an empty SETTINGS frame: the 33 bytes a silent client sends.
pub fn preface() -> Vec<u8> {
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    out
}

fn hpack_int(out: &mut Vec<u8>, first: u8, prefix_bits: u32, mut value: usize) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        out.push(first | u8::try_from(value).unwrap());
        return;
    }
    out.push(first | u8::try_from(max).unwrap());
    value -= max;
    while value >= 128 {
        out.push(u8::try_from(value % 128).unwrap() | 0x80);
        value /= 128;
    }
    out.push(u8::try_from(value).unwrap());
}

/// A header block of literal fields without indexing (no Huffman), in the given order.
pub fn header_block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        hpack_int(&mut out, 0, 7, name.len());
        out.extend_from_slice(name.as_bytes());
        hpack_int(&mut out, 0, 7, value.len());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

/// A HEADERS frame (END_HEADERS; END_STREAM when `end_stream`).
pub fn headers(stream: u32, fields: &[(&str, &str)], end_stream: bool) -> Vec<u8> {
    let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
    frame(HEADERS, flags, stream, &header_block(fields))
}

/// HEADERS of a token request that announces a body, which never comes.
pub fn stalled_token_request(stream: u32) -> Vec<u8> {
    headers(
        stream,
        &[
            (":method", "POST"),
            (":scheme", "http"),
            (":authority", "127.0.0.1"),
            (":path", "/token"),
            ("content-type", "application/x-www-form-urlencoded"),
            ("content-length", "29"),
        ],
        false,
    )
}

/// A frame as read: type, flags, stream, payload.
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

/// Reads one frame; `None` when the connection ends (or `wait` passes without one).
pub async fn read_frame<S: AsyncRead + Unpin>(io: &mut S, wait: Duration) -> Option<Frame> {
    let mut head = [0u8; 9];
    tokio::time::timeout(wait, io.read_exact(&mut head))
        .await
        .ok()?
        .ok()?;
    let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
    let mut payload = vec![0u8; len];
    tokio::time::timeout(wait, io.read_exact(&mut payload))
        .await
        .ok()?
        .ok()?;
    Some(Frame {
        kind: head[3],
        flags: head[4],
        stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
        payload,
    })
}

/// Whether the peer closes the connection within `wait`, whatever it sends before; the
/// frames are read and never answered.
pub async fn closed_within<S: AsyncRead + Unpin>(io: &mut S, wait: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, io.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// A well-behaved HTTP/2 client (the `h2` crate) over `io`.
pub async fn client<S>(io: S) -> h2::client::SendRequest<Bytes>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (send, connection) = h2::client::handshake(io).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    send
}

/// Sends a request without body; returns the status, the headers and the body.
pub async fn get(
    send: &mut h2::client::SendRequest<Bytes>,
    request: http::Request<()>,
) -> (u16, http::HeaderMap, String) {
    let mut send = send.clone().ready().await.unwrap();
    let (response, _) = send.send_request(request, true).unwrap();
    let response = response.await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let mut body = response.into_body();
    let mut out = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        out.extend_from_slice(&chunk);
    }
    (status, headers, String::from_utf8_lossy(&out).into_owned())
}

/// A GET of `path` with `:authority` `authority` (and, when given, a `Host` header).
pub fn request(authority: &str, path: &str, host: Option<&str>) -> http::Request<()> {
    let uri = http::Uri::builder()
        .scheme("http")
        .authority(authority)
        .path_and_query(path)
        .build()
        .unwrap();
    let mut builder = http::Request::get(uri);
    if let Some(host) = host {
        builder = builder.header("host", host);
    }
    builder.body(()).unwrap()
}
