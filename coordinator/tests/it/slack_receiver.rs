//! A real local receiver for the `slack` and `webhook` channels: an HTTP/1.1
//! server (optionally HTTPS) on `127.0.0.1:0` that checks every request
//! against a contract, records what it accepted, and answers from a script.
//!
//! - [`Contract::Slack`] checks Slack's incoming-webhook contract: `POST`,
//!   `Content-Type: application/json`, a JSON object with a non-empty string
//!   `text` and `blocks`, an array of at most 50 objects of a known `type`
//!   (`header`, `section`, `context`, `actions`, `divider`), with header text
//!   `plain_text` of at most 150 characters, section text of at most 3000,
//!   at most 10 fields of at most 2000 each. A violation is answered
//!   `400 invalid_payload` (as Slack does) and recorded in
//!   [`SlackReceiver::rejections`].
//! - [`Contract::Json`] (generic webhooks) checks `POST`,
//!   `Content-Type: application/json` and a JSON body.
//!
//! A valid request takes the next [`Canned`] response from the script; with
//! the script empty it is answered `200 ok`. Requests answered 2xx are
//! recorded, with their arrival time, in [`SlackReceiver::messages`].
//!
//! Reusable by end-to-end tests: `start()`, `url(path)`, `script(..)`,
//! `messages()`, `wait_for(n, timeout)`.

#![allow(dead_code)] // a kit: not every test uses every method

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{HeaderMap, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// Largest request body the receiver reads (Slack rejects far smaller ones).
const MAX_REQUEST_BODY: usize = 1024 * 1024;

/// What the receiver checks on every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contract {
    /// Slack's incoming-webhook contract.
    Slack,
    /// Any JSON POST (the `webhook` channel).
    Json,
}

/// One scripted answer.
#[derive(Debug, Clone)]
pub enum Canned {
    /// A response with this status, headers and body.
    Status {
        code: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
    /// Read the whole request, then close the connection without answering.
    Close,
    /// Read the whole request, wait this long, then answer `200 ok`.
    Stall(Duration),
}

impl Canned {
    /// `code` with a `text/plain` body.
    pub fn status(code: u16, body: &str) -> Self {
        Canned::Status {
            code,
            headers: vec![],
            body: body.to_owned(),
        }
    }

    /// `code` with `Retry-After: value`.
    pub fn retry_after(code: u16, value: &str) -> Self {
        Canned::status(code, "rate_limited").with_header("retry-after", value)
    }

    /// This response with one more header (ignored for `Close`/`Stall`).
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        if let Canned::Status { headers, .. } = &mut self {
            headers.push((name.to_owned(), value.to_owned()));
        }
        self
    }
}

/// A request the receiver accepted (answered 2xx).
#[derive(Debug, Clone)]
pub struct Received {
    /// When it arrived (fully read).
    pub at: Instant,
    /// Request target (path and query).
    pub path: String,
    /// Request headers.
    pub headers: HeaderMap,
    /// The JSON body.
    pub body: Value,
}

#[derive(Default)]
struct State {
    script: Mutex<VecDeque<Canned>>,
    messages: Mutex<Vec<Received>>,
    rejections: Mutex<Vec<String>>,
    requests: AtomicUsize,
    arrivals: Mutex<Vec<Instant>>,
    arrived: Notify,
}

/// The receiver; stops when dropped.
pub struct SlackReceiver {
    addr: SocketAddr,
    tls: bool,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SlackReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SlackReceiver {
    /// A plain-HTTP receiver checking Slack's contract.
    pub async fn start() -> Self {
        Self::start_with(Contract::Slack, None).await
    }

    /// A receiver checking `contract`, over TLS when `tls` is given.
    pub async fn start_with(contract: Contract, tls: Option<rustls::ServerConfig>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let acceptor = tls.map(|cfg| tokio_rustls::TlsAcceptor::from(Arc::new(cfg)));
        let is_tls = acceptor.is_some();
        let st = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let st = Arc::clone(&st);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    match acceptor {
                        None => serve(TokioIo::new(tcp), contract, st).await,
                        Some(a) => {
                            if let Ok(tls) = a.accept(tcp).await {
                                serve(TokioIo::new(tls), contract, st).await;
                            }
                        }
                    }
                });
            }
        });
        SlackReceiver {
            addr,
            tls: is_tls,
            state,
            task,
        }
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A URL of this receiver: `http://127.0.0.1:<port><path>`, or
    /// `https://localhost:<port><path>` for TLS (the certificate's name).
    pub fn url(&self, path: &str) -> String {
        if self.tls {
            format!("https://localhost:{}{path}", self.addr.port())
        } else {
            format!("http://{}{path}", self.addr)
        }
    }

    /// Appends answers for the next valid requests, one per request.
    pub fn script(&self, answers: impl IntoIterator<Item = Canned>) {
        self.state.script.lock().unwrap().extend(answers);
    }

    /// Every accepted (2xx) request so far.
    pub fn messages(&self) -> Vec<Received> {
        self.state.messages.lock().unwrap().clone()
    }

    /// Why each contract violation was rejected.
    pub fn rejections(&self) -> Vec<String> {
        self.state.rejections.lock().unwrap().clone()
    }

    /// When each request arrived (valid or not, whatever the answer).
    pub fn arrivals(&self) -> Vec<Instant> {
        self.state.arrivals.lock().unwrap().clone()
    }

    /// How many requests arrived (valid or not).
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` messages were accepted; panics after
    /// `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.state.arrived.notified();
            let got = self.messages();
            if got.len() >= n {
                return got;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "receiver: {} of {n} messages within {timeout:?} (rejections: {:?})",
                    got.len(),
                    self.rejections()
                );
            }
        }
    }
}

/// Serves one connection until it ends or a `Close` answer kills it.
async fn serve<IO>(io: IO, contract: Contract, state: Arc<State>)
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let kill = Arc::new(Notify::new());
    let k = Arc::clone(&kill);
    let svc = hyper::service::service_fn(move |req| {
        let (state, kill) = (Arc::clone(&state), Arc::clone(&k));
        async move { Ok::<_, std::convert::Infallible>(handle(req, contract, state, kill).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new().serve_connection(io, svc);
    tokio::select! {
        _ = conn => {}
        // Dropping the connection closes the socket without a response.
        _ = kill.notified() => {}
    }
}

async fn handle(
    req: Request<hyper::body::Incoming>,
    contract: Contract,
    state: Arc<State>,
    kill: Arc<Notify>,
) -> Response<Full<Bytes>> {
    state.requests.fetch_add(1, Ordering::SeqCst);
    state.arrivals.lock().unwrap().push(Instant::now());
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_REQUEST_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return reject(&state, format!("reading the body: {e}")),
    };
    let at = Instant::now();
    let json = match validate(contract, &parts, &body) {
        Ok(v) => v,
        Err(why) => return reject(&state, why),
    };
    let answer = state.script.lock().unwrap().pop_front();
    let (code, headers, text) = match answer {
        None => (200, vec![], "ok".to_owned()),
        Some(Canned::Status {
            code,
            headers,
            body,
        }) => (code, headers, body),
        Some(Canned::Close) => {
            kill.notify_one();
            return std::future::pending().await;
        }
        Some(Canned::Stall(d)) => {
            tokio::time::sleep(d).await;
            (200, vec![], "ok".to_owned())
        }
    };
    if (200..300).contains(&code) {
        state.messages.lock().unwrap().push(Received {
            at,
            path: parts
                .uri
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default(),
            headers: parts.headers.clone(),
            body: json,
        });
        state.arrived.notify_waiters();
    }
    let mut resp = Response::builder()
        .status(code)
        .header("content-type", "text/plain");
    for (name, value) in headers {
        resp = resp.header(name, value);
    }
    resp.body(Full::new(Bytes::from(text))).unwrap()
}

fn reject(state: &State, why: String) -> Response<Full<Bytes>> {
    state.rejections.lock().unwrap().push(why);
    Response::builder()
        .status(StatusCode::BAD_REQUEST)
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from_static(b"invalid_payload")))
        .unwrap()
}

/// Checks a request against the contract; returns its JSON body.
pub fn validate(
    contract: Contract,
    parts: &http::request::Parts,
    body: &[u8],
) -> Result<Value, String> {
    if parts.method != http::Method::POST {
        return Err(format!("method {} is not POST", parts.method));
    }
    let ct = parts
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ct.split(';').next().map(str::trim) != Some("application/json") {
        return Err(format!("content-type {ct:?} is not application/json"));
    }
    let json: Value = serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    if contract == Contract::Slack {
        validate_slack(&json)?;
    }
    Ok(json)
}

/// Slack's incoming-webhook message contract (the parts Vantage uses).
pub fn validate_slack(m: &Value) -> Result<(), String> {
    let obj = m.as_object().ok_or("body is not an object")?;
    match obj.get("text").and_then(Value::as_str) {
        Some(t) if !t.trim().is_empty() => {}
        _ => return Err("text must be a non-empty string".into()),
    }
    let blocks = obj
        .get("blocks")
        .and_then(Value::as_array)
        .ok_or("blocks must be an array")?;
    if blocks.len() > 50 {
        return Err(format!("{} blocks > 50", blocks.len()));
    }
    for (i, b) in blocks.iter().enumerate() {
        let ty = b
            .get("type")
            .and_then(Value::as_str)
            .ok_or(format!("blocks[{i}] has no type"))?;
        match ty {
            "header" => {
                let t = &b["text"];
                if t["type"] != "plain_text" {
                    return Err(format!("blocks[{i}] header text must be plain_text"));
                }
                text_within(&t["text"], 150, &format!("blocks[{i}].text"))?;
            }
            "section" => {
                let has_text = b.get("text").is_some();
                if has_text {
                    let t = &b["text"];
                    if t["type"] != "mrkdwn" && t["type"] != "plain_text" {
                        return Err(format!("blocks[{i}].text has a bad type"));
                    }
                    text_within(&t["text"], 3000, &format!("blocks[{i}].text"))?;
                }
                match b.get("fields") {
                    None if has_text => {}
                    None => return Err(format!("blocks[{i}] section needs text or fields")),
                    Some(f) => {
                        let f = f
                            .as_array()
                            .ok_or(format!("blocks[{i}].fields is not an array"))?;
                        if f.is_empty() || f.len() > 10 {
                            return Err(format!("blocks[{i}] has {} fields (1..=10)", f.len()));
                        }
                        for (j, field) in f.iter().enumerate() {
                            text_within(&field["text"], 2000, &format!("blocks[{i}].fields[{j}]"))?;
                        }
                    }
                }
            }
            "context" | "actions" => {
                let e = b["elements"]
                    .as_array()
                    .ok_or(format!("blocks[{i}].elements is not an array"))?;
                if e.is_empty() {
                    return Err(format!("blocks[{i}].elements is empty"));
                }
                for el in e {
                    if let Some(url) = el.get("url") {
                        text_within(url, 3000, &format!("blocks[{i}] url"))?;
                    }
                }
            }
            "divider" => {}
            other => return Err(format!("blocks[{i}] has unknown type {other:?}")),
        }
    }
    Ok(())
}

fn text_within(v: &Value, max: usize, what: &str) -> Result<(), String> {
    let t = v.as_str().ok_or(format!("{what} is not a string"))?;
    let n = t.chars().count();
    if n == 0 || n > max {
        return Err(format!("{what} has {n} characters (1..={max})"));
    }
    Ok(())
}

/// A self-signed certificate for `localhost` and 127.0.0.1: the rustls
/// server config, and the certificate as PEM (for a client's `ca_file`).
pub fn self_signed_tls() -> (rustls::ServerConfig, String) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let key = rustls_pki_types::PrivateKeyDer::try_from(ck.signing_key.serialize_der()).unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![ck.cert.der().clone()], key)
    .unwrap();
    (cfg, ck.cert.pem())
}
