//! The HTTP/1.1 exchange of the load client, written for one job: send a
//! request serialized once per run and read the response as fast as the
//! socket delivers it.
//!
//! Why not hyper here: a load generator spends most of its user-space time
//! per request in the client. hyper's general client (a dispatcher task
//! protocol, a channel per request, a `HeaderMap` built and cloned per
//! request and per response) cost about 6 µs of CPU per request on loopback,
//! more than the kernel's share; the load engine only needs a fixed request
//! written with one `write` and a response parsed in place with `httparse`
//! (the parser hyper itself uses). Probes keep hyper: they need redirects,
//! HTTP/2 and full header access, and run a few requests a second.
//!
//! What a response may be: `Content-Length`, `Transfer-Encoding: chunked`
//! (with extensions and trailers) or close-delimited bodies; no body for
//! `HEAD`, 204 and 304; interim 1xx responses are skipped. A connection is
//! kept for the next request only when the response allows it (HTTP/1.1
//! without `Connection: close`, or HTTP/1.0 with `keep-alive`) and nothing
//! was left unread.

use std::time::Instant;

use bytes::{BufMut as _, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use crate::probe::http::Finder;

/// Largest response head (status line and headers) accepted.
pub const MAX_HEAD: usize = 64 * 1024;
/// Largest chunk-size or trailer line accepted.
const MAX_LINE: usize = 8 * 1024;
/// Headers parsed per response; more is an error, as in hyper's default.
const MAX_HEADERS: usize = 100;
/// Read buffer size: one read takes a small response whole.
const READ_CHUNK: usize = 16 * 1024;

/// Serializes a request once: request line, `headers` (which must hold
/// `Host`), `Content-Length` when there is a body, and the body.
pub fn serialize(
    method: &http::Method,
    path_and_query: &str,
    headers: &http::HeaderMap,
    body: &[u8],
) -> Bytes {
    let mut out = BytesMut::with_capacity(128 + body.len());
    out.put_slice(method.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(path_and_query.as_bytes());
    out.put_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"\r\n");
    out.put_slice(body);
    out.freeze()
}

/// A connection's read buffer: bytes `start..end` of `buf` are unread.
pub struct ReadBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Default for ReadBuf {
    fn default() -> Self {
        ReadBuf {
            buf: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
        }
    }
}

impl ReadBuf {
    fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn is_empty(&self) -> bool {
        self.start == self.end
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Forgets what is buffered (the connection is gone).
    pub fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// Reads once more from `io`; the bytes read (0 at end of stream).
    /// Unread bytes move to the front, and the buffer grows when it is full
    /// of them (bounded by the callers' limits).
    async fn fill<S: AsyncRead + Unpin>(&mut self, io: &mut S) -> std::io::Result<usize> {
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                self.buf.resize(self.buf.len() * 2, 0);
            }
        }
        let n = io.read(&mut self.buf[self.end..]).await?;
        self.end += n;
        Ok(n)
    }
}

/// A complete response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    /// Status code of the final (non-1xx) response.
    pub status: u16,
    /// Body bytes (decoded, for chunked bodies).
    pub bytes: u64,
    /// Whether the body held the needle (None: no needle).
    pub body_matched: Option<bool>,
    /// Whether the connection may carry the next request.
    pub reusable: bool,
    /// When the first response byte arrived.
    pub first_byte: Instant,
}

/// Why an exchange failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeError {
    /// The request could not be written, or the connection closed before
    /// any response byte: on a kept-alive connection the server closed it
    /// while idle, and the request may be sent again on a new one.
    NoResponse,
    /// The response was cut short, malformed, or the read failed.
    Broken,
}

/// How the body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

/// What the head says.
struct Head {
    status: u16,
    framing: Framing,
    keep_alive: bool,
}

/// Parses one response head at the start of `data`: `Ok(None)` when more
/// bytes are needed, else the head and its length.
fn parse_head(data: &[u8], head_request: bool) -> Result<Option<(Head, usize)>, ExchangeError> {
    // Uninitialized slots: no 100-header memset per response.
    let mut headers =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        data,
        &mut headers,
    ) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(ExchangeError::Broken),
    };
    let status = resp.code.ok_or(ExchangeError::Broken)?;
    let http11 = resp.version == Some(1);
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut encoded = false;
    let mut close = false;
    let mut keep_alive = false;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or(ExchangeError::Broken)?;
            // Differing lengths are a smuggling vector: refuse them.
            if length.is_some_and(|l| l != v) {
                return Err(ExchangeError::Broken);
            }
            length = Some(v);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            encoded = true;
            // Chunked must be the last coding applied.
            chunked = h
                .value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    let framing = if head_request || status == 204 || status == 304 || (100..200).contains(&status)
    {
        Framing::Empty
    } else if encoded {
        // Transfer-Encoding wins over Content-Length (RFC 9112 §6.3).
        if chunked {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else if let Some(l) = length {
        Framing::Length(l)
    } else {
        Framing::UntilClose
    };
    let keep_alive = !close && (http11 || keep_alive) && framing != Framing::UntilClose;
    Ok(Some((
        Head {
            status,
            framing,
            keep_alive,
        },
        len,
    )))
}

/// Counts body bytes and looks for the needle.
struct Body<'n> {
    bytes: u64,
    finder: Option<Finder<'n>>,
    found: bool,
}

impl Body<'_> {
    fn push(&mut self, data: &[u8]) {
        self.bytes += data.len() as u64;
        if let (Some(f), false) = (self.finder.as_mut(), self.found) {
            self.found = f.push(data);
        }
    }
}

/// Writes `wire` and reads one whole response into `buf`'s keeping.
/// `buf` must be empty (no request is pipelined).
pub async fn exchange<S>(
    io: &mut S,
    buf: &mut ReadBuf,
    wire: &[u8],
    head_request: bool,
    needle: Option<&[u8]>,
) -> Result<Response, ExchangeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if io.write_all(wire).await.is_err() || io.flush().await.is_err() {
        return Err(ExchangeError::NoResponse);
    }
    let mut first_byte = None;
    let head = loop {
        if !buf.is_empty() {
            if let Some((head, len)) = parse_head(buf.data(), head_request)? {
                buf.consume(len);
                // An interim response (100 Continue, 103 Early Hints): the
                // final one follows. 101 would switch protocols, which a
                // load request never asks for.
                if (100..200).contains(&head.status) {
                    if head.status == 101 {
                        return Err(ExchangeError::Broken);
                    }
                    continue;
                }
                break head;
            }
            if buf.data().len() >= MAX_HEAD {
                return Err(ExchangeError::Broken);
            }
        }
        match buf.fill(io).await {
            Ok(0) | Err(_) if first_byte.is_none() => return Err(ExchangeError::NoResponse),
            Ok(0) | Err(_) => return Err(ExchangeError::Broken),
            Ok(_) => {
                first_byte.get_or_insert_with(Instant::now);
            }
        }
    };
    let first_byte = first_byte.unwrap_or_else(Instant::now);
    let mut body = Body {
        bytes: 0,
        finder: needle.map(Finder::new),
        // An empty needle is in every body, even an empty one.
        found: needle.is_some_and(<[u8]>::is_empty),
    };
    match head.framing {
        Framing::Empty => {}
        Framing::Length(n) => read_exact(io, buf, n, &mut body).await?,
        Framing::Chunked => read_chunked(io, buf, &mut body).await?,
        Framing::UntilClose => loop {
            if !buf.is_empty() {
                body.push(buf.data());
                buf.clear();
            }
            match buf.fill(io).await {
                Ok(0) => break,
                Ok(_) => {}
                Err(_) => return Err(ExchangeError::Broken),
            }
        },
    }
    // Bytes after the response that nobody asked for: the connection's
    // framing is not to be trusted any more.
    let reusable = head.keep_alive && buf.is_empty();
    Ok(Response {
        status: head.status,
        bytes: body.bytes,
        body_matched: needle.map(|_| body.found),
        reusable,
        first_byte,
    })
}

/// Reads `n` body bytes.
async fn read_exact<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut ReadBuf,
    mut n: u64,
    body: &mut Body<'_>,
) -> Result<(), ExchangeError> {
    while n > 0 {
        if buf.is_empty() && fill_some(io, buf).await.is_err() {
            return Err(ExchangeError::Broken);
        }
        let take = buf
            .data()
            .len()
            .min(usize::try_from(n).unwrap_or(usize::MAX));
        body.push(&buf.data()[..take]);
        buf.consume(take);
        n -= take as u64;
    }
    Ok(())
}

/// One read that must return bytes.
async fn fill_some<S: AsyncRead + Unpin>(io: &mut S, buf: &mut ReadBuf) -> Result<(), ()> {
    match buf.fill(io).await {
        Ok(0) | Err(_) => Err(()),
        Ok(_) => Ok(()),
    }
}

/// The length of the line at the start of the buffer (without its CRLF),
/// reading until a whole line is there.
async fn line<S: AsyncRead + Unpin>(io: &mut S, buf: &mut ReadBuf) -> Result<usize, ExchangeError> {
    let mut searched: usize = 0;
    loop {
        let data = buf.data();
        if let Some(i) = data[searched.saturating_sub(1)..]
            .windows(2)
            .position(|w| w == b"\r\n")
        {
            return Ok(searched.saturating_sub(1) + i);
        }
        searched = data.len();
        if searched > MAX_LINE {
            return Err(ExchangeError::Broken);
        }
        fill_some(io, buf)
            .await
            .map_err(|()| ExchangeError::Broken)?;
    }
}

/// Parses a chunk-size line: hex digits, then optional `;extensions`.
fn chunk_size(line: &[u8]) -> Result<u64, ExchangeError> {
    let digits = line
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    if digits.is_empty() || digits.len() > 15 {
        return Err(ExchangeError::Broken);
    }
    let mut size = 0u64;
    for &d in digits {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            b'A'..=b'F' => d - b'A' + 10,
            _ => return Err(ExchangeError::Broken),
        };
        size = size * 16 + u64::from(v);
    }
    Ok(size)
}

/// Reads a chunked body, its last chunk and trailers.
async fn read_chunked<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut ReadBuf,
    body: &mut Body<'_>,
) -> Result<(), ExchangeError> {
    loop {
        let len = line(io, buf).await?;
        let size = chunk_size(&buf.data()[..len])?;
        buf.consume(len + 2);
        if size == 0 {
            // Trailers, up to an empty line.
            loop {
                let len = line(io, buf).await?;
                buf.consume(len + 2);
                if len == 0 {
                    return Ok(());
                }
            }
        }
        read_exact(io, buf, size, body).await?;
        if line(io, buf).await? != 0 {
            return Err(ExchangeError::Broken);
        }
        buf.consume(2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Runs one exchange against `response`, delivered in pieces cut at
    /// `cuts`, then the server side closes if `close` (else stays open).
    async fn run(
        response: &[u8],
        cuts: &[usize],
        head_request: bool,
        needle: Option<&[u8]>,
        close: bool,
    ) -> (Result<Response, ExchangeError>, Vec<u8>) {
        let (mut client, mut server) = tokio::io::duplex(1 << 20);
        let response = response.to_vec();
        let mut cuts: Vec<usize> = cuts
            .iter()
            .map(|&c| c.min(response.len()))
            .chain([response.len()])
            .collect();
        cuts.sort_unstable();
        let server_side = tokio::spawn(async move {
            let mut request = vec![0u8; 4096];
            let n = server.read(&mut request).await.unwrap();
            request.truncate(n);
            let mut from = 0;
            for to in cuts {
                server.write_all(&response[from..to]).await.unwrap();
                server.flush().await.unwrap();
                from = to;
                tokio::task::yield_now().await;
            }
            if !close {
                // Keep the stream open until the client is done.
                let mut rest = [0u8; 1];
                let _ = server.read(&mut rest).await;
            }
            request
        });
        let mut buf = ReadBuf::default();
        let out = exchange(
            &mut client,
            &mut buf,
            b"GET / HTTP/1.1\r\nHost: t\r\n\r\n",
            head_request,
            needle,
        )
        .await;
        drop(client);
        (out, server_side.await.unwrap())
    }

    #[tokio::test]
    async fn content_length_keep_alive() {
        let (r, req) = run(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            &[3, 20],
            false,
            Some(b"ell"),
            false,
        )
        .await;
        let r = r.unwrap();
        assert_eq!(
            (r.status, r.bytes, r.body_matched, r.reusable),
            (200, 5, Some(true), true)
        );
        assert_eq!(req, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    }

    #[tokio::test]
    async fn chunked_with_extensions_and_trailers() {
        let resp = b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: gzip, chunked\r\n\r\n4;ext=1\r\nwiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-Trailer: 1\r\n\r\n";
        let (r, _) = run(resp, &[10, 70, 71, 72, 90], false, Some(b"pedia in"), false).await;
        let r = r.unwrap();
        assert_eq!(
            (r.status, r.bytes, r.body_matched, r.reusable),
            (404, 23, Some(true), true)
        );
    }

    #[tokio::test]
    async fn close_delimited_and_connection_close() {
        let (r, _) = run(
            b"HTTP/1.1 200 OK\r\n\r\nuntil the end",
            &[],
            false,
            None,
            true,
        )
        .await;
        let r = r.unwrap();
        assert_eq!((r.bytes, r.reusable), (13, false));
        let (r, _) = run(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
            &[],
            false,
            None,
            false,
        )
        .await;
        assert!(!r.unwrap().reusable);
        let (r, _) = run(
            b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
            &[],
            false,
            None,
            false,
        )
        .await;
        assert!(!r.unwrap().reusable, "HTTP/1.0 closes by default");
        let (r, _) = run(
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
            &[],
            false,
            None,
            false,
        )
        .await;
        assert!(r.unwrap().reusable);
    }

    #[tokio::test]
    async fn no_body_for_head_204_304_and_interim_responses_skipped() {
        let (r, _) = run(
            b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n",
            &[],
            true,
            None,
            false,
        )
        .await;
        assert_eq!(r.unwrap().bytes, 0);
        let (r, _) = run(b"HTTP/1.1 204 No Content\r\n\r\n", &[], false, None, false).await;
        assert_eq!(r.unwrap().status, 204);
        let (r, _) = run(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n", &[5], false, None, false).await;
        let r = r.unwrap();
        assert_eq!((r.status, r.bytes, r.reusable), (201, 0, true));
    }

    #[tokio::test]
    async fn bad_responses_are_errors_not_panics() {
        for resp in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
            b"SMTP 220 hello\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n",
        ] {
            let (r, _) = run(resp, &[], false, None, true).await;
            assert_eq!(
                r,
                Err(ExchangeError::Broken),
                "{}",
                String::from_utf8_lossy(resp)
            );
        }
        // Nothing at all: the server closed an idle connection.
        let (r, _) = run(b"", &[], false, None, true).await;
        assert_eq!(r, Err(ExchangeError::NoResponse));
        // A head larger than the limit.
        let mut big = b"HTTP/1.1 200 OK\r\n".to_vec();
        while big.len() <= MAX_HEAD {
            big.extend_from_slice(
                b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
            );
        }
        let (r, _) = run(&big, &[], false, None, true).await;
        assert_eq!(r, Err(ExchangeError::Broken));
    }

    #[tokio::test]
    async fn leftover_bytes_make_the_connection_unusable() {
        let (r, _) = run(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA",
            &[],
            false,
            None,
            false,
        )
        .await;
        let r = r.unwrap();
        assert_eq!((r.bytes, r.reusable), (2, false));
    }

    #[test]
    fn serialize_writes_one_request() {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::HOST, "example.test:8080".parse().unwrap());
        headers.insert(http::header::CONTENT_LENGTH, 4.into());
        let wire = serialize(&http::Method::POST, "/a?b=1", &headers, b"body");
        assert_eq!(
            &wire[..],
            b"POST /a?b=1 HTTP/1.1\r\nhost: example.test:8080\r\ncontent-length: 4\r\n\r\nbody"
        );
    }

    proptest! {
        /// However the bytes are cut into reads, a chunked body decodes to
        /// the same bytes and count.
        #[test]
        fn chunked_decoding_ignores_read_boundaries(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..300), 0..6),
            cuts in proptest::collection::vec(0usize..2000, 0..8),
        ) {
            let mut resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            let mut all = Vec::new();
            for c in &chunks {
                resp.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                resp.extend_from_slice(c);
                resp.extend_from_slice(b"\r\n");
                all.extend_from_slice(c);
            }
            resp.extend_from_slice(b"0\r\n\r\n");
            let needle = all.get(all.len() / 3..(all.len() / 3 + 4).min(all.len())).map(<[u8]>::to_vec);
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let (r, _) = rt.block_on(run(&resp, &cuts, false, needle.as_deref(), false));
            let r = r.unwrap();
            prop_assert_eq!(r.bytes, all.len() as u64);
            prop_assert_eq!(r.body_matched, needle.map(|_| true));
            prop_assert!(r.reusable);
        }
    }
}
