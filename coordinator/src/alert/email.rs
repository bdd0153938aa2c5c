//! The `email` channel: one multipart/alternative message (plain text and
//! HTML) per notification, sent over SMTP with lettre (RELIABILITY.md §5).
//!
//! # Transport security
//! The connection is always encrypted before anything else is sent:
//! [`SmtpTls::StartTls`] uses lettre's `Tls::Required` (a server that does not
//! offer `STARTTLS` is refused, so credentials and mail never travel in
//! plaintext), [`SmtpTls::Implicit`] uses `Tls::Wrapper` (TLS from the first
//! byte). There is no opportunistic or plaintext mode. The server certificate
//! is checked by rustls (ring) against the webpki roots plus the PEM
//! certificates of `ca_file`, for the name `host`.
//!
//! # Connections
//! lettre keeps a pool of open connections: at most [`POOL_MAX_SIZE`] idle,
//! each closed after [`POOL_IDLE_TIMEOUT`]. A parked connection is tested with
//! `NOOP` before reuse, and lettre drops a connection that failed (it aborts
//! it on any error reply or I/O error, and never parks one that failed while
//! being opened). lettre's pool has no limit on connections in use and no
//! wait timeout, so the channel adds both: a semaphore of [`POOL_MAX_SIZE`]
//! permits, and one deadline of `timeout` over the whole attempt (waiting for
//! a permit, connecting, TLS, AUTH and the SMTP exchange). lettre itself only
//! bounds the TCP connect. When the deadline cuts an exchange short, the
//! connection may be left in the middle of a command (lettre would park it and
//! read its late reply as the answer to the next command), so the channel
//! discards the whole pool and opens a fresh one on the next send.
//!
//! RELIABILITY.md §5 asks to retry once on a fresh connection after a
//! transport error. lettre does this where it is safe, for a parked
//! connection that fails its `NOOP` check; beyond that the channel does not
//! retry (the outbox owns retries, see [`super`]).
//!
//! # Outcomes
//! | what happened | [`Delivery`] |
//! | --- | --- |
//! | `250` after the message data | `Accepted` |
//! | a `4xx` reply (greeting, AUTH, MAIL, RCPT, DATA or after the data) | `Retry` |
//! | a `5xx` reply (e.g. `535` bad password, `550` rejected) | `Permanent` |
//! | connect, name resolution or TLS handshake failed (also the STARTTLS upgrade) | `Retry` |
//! | no connection free within `timeout` | `Retry` |
//! | the server does not offer STARTTLS, or no usable AUTH mechanism | `Permanent` |
//! | connection lost or garbled reply, no final reply | `Ambiguous` |
//! | `timeout` elapsed during the SMTP exchange | `Ambiguous` |
//!
//! A `4xx`/`5xx` reply means the server answered, so the message was not
//! accepted at any stage. When the connection is lost without a reply, lettre
//! reports the same error (`incomplete response` or an I/O error) whether that
//! happened at the greeting or after the message data was sent: its transport
//! does not say how far the exchange got. The channel then answers
//! `Ambiguous`, the conservative choice: the outbox retries either way, and a
//! needless "possible duplicate" mark is better than an unmarked duplicate.
//! The same holds for the deadline. Only failures that certainly happened
//! before the session started (connect, TLS) are `Retry`.
//!
//! A `STARTTLS`-less server is `Permanent`: retrying cannot make the channel
//! send safely, and a person must fix the server or the config (or find who
//! strips `STARTTLS` on the way); `Permanent` gets that person alerted on
//! another channel. An untrusted certificate is `Retry`, like other handshake
//! failures, since it can be fixed on the server without a config change.
//!
//! # Secrets
//! Reasons are built from lettre's error text, which may quote the server's
//! reply. Before a reason leaves the channel, the password (also in the
//! base64 forms AUTH PLAIN and LOGIN send) is replaced by `[redacted]`, control
//! characters are removed and the text is cut to [`MAX_REASON_CHARS`]. The
//! channel's `Debug` shows no credentials.
//!
//! # The message
//! - Subject: [`Notification::title`], plus ` (possible duplicate)` when
//!   the notification is so marked.
//! - `Message-ID: <{id}@vantage>`, derived from [`Notification::id`] only, so a
//!   resend of the same notification has the same id and mail servers and
//!   clients can drop the copy; the id is encoded to RFC 5322 `atext`
//!   (see [`message_id`]).
//! - `X-Vantage-Notification-Id`: the notification id as is.
//! - Both bodies carry the summary, severity, rule, the value in each region
//!   (breaching ones marked), firing since and at (RFC 3339, UTC), the
//!   dashboard link when set, and the notification id. Every dynamic text is
//!   HTML-escaped in the HTML part.

use std::fmt::{self, Write as _};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::transport::smtp::{AsyncSmtpTransportBuilder, PoolConfig};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tokio::sync::Semaphore;

use super::{BoxFuture, Channel, Delivery, EmailConfig, Notification, SmtpTls};

/// Connections kept open and in use at once. One outbox worker sends one
/// notification at a time per channel; a second connection lets a send proceed
/// while lettre is still closing or testing the other.
pub const POOL_MAX_SIZE: u32 = 2;

/// How long an idle connection stays open (lettre's cleanup runs once per this
/// period, so in practice 30–60 s). Shorter than server idle timeouts (RFC 5321
/// asks servers to wait at least 5 min), so we close first instead of finding
/// a dead socket on reuse.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest reason text, in characters: enough for a server reply line, small
/// enough for the outbox entry and the `channel_failed` alert.
pub const MAX_REASON_CHARS: usize = 300;

/// Time given to a discarded pool to say `QUIT` to its idle connections before
/// they are just closed.
const DISCARD_GRACE: Duration = Duration::from_secs(5);

/// Header carrying [`Notification::id`] verbatim.
pub const NOTIFICATION_ID_HEADER: &str = "X-Vantage-Notification-Id";

/// Domain part of the `Message-ID`s the channel generates.
pub const MESSAGE_ID_DOMAIN: &str = "vantage";

/// An `email` channel: sends each notification to `to` over SMTP.
pub struct EmailChannel {
    name: String,
    host: String,
    port: u16,
    tls: SmtpTls,
    username: Option<String>,
    from: Mailbox,
    to: Vec<Mailbox>,
    timeout: Duration,
    /// Everything needed to open a pool; kept so a discarded pool can be
    /// replaced.
    builder: AsyncSmtpTransportBuilder,
    /// The pool, created on first use: lettre spawns its cleanup task when the
    /// transport is built, which needs a tokio runtime, and [`EmailChannel::new`]
    /// may run outside one.
    transport: Mutex<Option<AsyncSmtpTransport<Tokio1Executor>>>,
    /// Caps connections in use at [`POOL_MAX_SIZE`] (lettre does not).
    permits: Semaphore,
    /// Secret strings that must never appear in a reason.
    redact: Vec<String>,
}

impl fmt::Debug for EmailChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmailChannel")
            .field("name", &self.name)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.redact.first().map(|_| "[redacted]"))
            .field("from", &self.from.to_string())
            .field(
                "to",
                &self.to.iter().map(ToString::to_string).collect::<Vec<_>>(),
            )
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl EmailChannel {
    /// Checks `cfg` and prepares the SMTP client. No connection is opened
    /// until the first [`Channel::send`].
    ///
    /// Errors, each naming the offending value (never the password): `from` or
    /// a `to` entry is not a mailbox (`Name <user@example.com>` or
    /// `user@example.com`), `to` is empty, `host` is empty, `timeout` is zero,
    /// `username` and `password` are not set together, or `ca_file` cannot be
    /// read or holds no PEM certificate.
    pub fn new(name: String, cfg: &EmailConfig) -> Result<Self, String> {
        let ctx = format!("email channel {name:?}");
        if cfg.host.trim().is_empty() {
            return Err(format!("{ctx}: host is empty"));
        }
        if cfg.timeout.is_zero() {
            return Err(format!("{ctx}: timeout must be greater than zero"));
        }
        let from = parse_mailbox(&cfg.from)
            .map_err(|e| format!("{ctx}: from {:?} is not a valid mailbox: {e}", cfg.from))?;
        if cfg.to.is_empty() {
            return Err(format!("{ctx}: to lists no recipient"));
        }
        let to = cfg
            .to
            .iter()
            .map(|t| {
                parse_mailbox(t)
                    .map_err(|e| format!("{ctx}: to entry {t:?} is not a valid mailbox: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;

        let mut tls_params = TlsParameters::builder(cfg.host.clone())
            .certificate_store(CertificateStore::WebpkiRoots);
        if let Some(path) = &cfg.ca_file {
            for cert in read_ca_file(path).map_err(|e| format!("{ctx}: {e}"))? {
                tls_params = tls_params.add_root_certificate(cert);
            }
        }
        let tls_params = tls_params
            .build_rustls()
            .map_err(|e| format!("{ctx}: TLS settings: {e}"))?;

        let builder = match cfg.tls {
            SmtpTls::StartTls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&cfg.host)
                .map(|b| b.tls(Tls::Required(tls_params))),
            SmtpTls::Implicit => AsyncSmtpTransport::<Tokio1Executor>::relay(&cfg.host)
                .map(|b| b.tls(Tls::Wrapper(tls_params))),
        }
        .map_err(|e| format!("{ctx}: SMTP settings: {e}"))?
        .port(cfg.port)
        .timeout(Some(cfg.timeout))
        .pool_config(
            PoolConfig::new()
                .min_idle(0)
                .max_size(POOL_MAX_SIZE)
                .idle_timeout(POOL_IDLE_TIMEOUT),
        );

        let (builder, redact) = match (&cfg.username, &cfg.password) {
            (Some(user), Some(password)) => (
                builder.credentials(Credentials::new(user.clone(), password.expose().to_owned())),
                secret_forms(user, password.expose()),
            ),
            (None, None) => (builder, Vec::new()),
            (Some(_), None) => {
                return Err(format!("{ctx}: username is set but password is not"));
            }
            (None, Some(_)) => {
                return Err(format!("{ctx}: password is set but username is not"));
            }
        };

        Ok(EmailChannel {
            name,
            host: cfg.host.clone(),
            port: cfg.port,
            tls: cfg.tls,
            username: cfg.username.clone(),
            from,
            to,
            timeout: cfg.timeout,
            builder,
            transport: Mutex::new(None),
            permits: Semaphore::new(POOL_MAX_SIZE as usize),
            redact,
        })
    }

    /// Builds the message for `n` (exposed for tests and previews).
    pub fn render(&self, n: &Notification) -> Result<Message, String> {
        let mut b = Message::builder()
            .from(self.from.clone())
            .subject(subject(n))
            .message_id(Some(message_id(&n.id)))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str(NOTIFICATION_ID_HEADER),
                one_line(&n.id),
            ));
        for to in &self.to {
            b = b.to(to.clone());
        }
        b.multipart(MultiPart::alternative_plain_html(
            render_text(n),
            render_html(n),
        ))
        .map_err(|e| format!("cannot build the message: {e}"))
    }

    /// The pool, opened if there is none.
    fn transport(&self) -> AsyncSmtpTransport<Tokio1Executor> {
        let mut slot = self.transport.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert_with(|| self.builder.clone().build())
            .clone()
    }

    /// Drops the pool after an exchange was cut short: its connection may be
    /// mid-command and must not be reused. Idle connections get `QUIT` within
    /// [`DISCARD_GRACE`], then are closed.
    fn discard_transport(&self) {
        let old = self
            .transport
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(old) = old {
            tokio::spawn(async move {
                let _ = tokio::time::timeout(DISCARD_GRACE, old.shutdown()).await;
            });
        }
    }

    async fn deliver(&self, n: &Notification) -> Delivery {
        let message = match self.render(n) {
            Ok(m) => m,
            Err(reason) => return Delivery::Permanent { reason },
        };
        let deadline = tokio::time::Instant::now() + self.timeout;
        let _permit = match tokio::time::timeout_at(deadline, self.permits.acquire()).await {
            Ok(Ok(permit)) => permit,
            // The semaphore is never closed; treat it like a busy pool.
            Ok(Err(_)) | Err(_) => {
                return Delivery::Retry {
                    after: None,
                    reason: format!(
                        "SMTP {}:{}: all {POOL_MAX_SIZE} connections busy for {}",
                        self.host,
                        self.port,
                        humantime::format_duration(self.timeout)
                    ),
                };
            }
        };
        let transport = self.transport();
        match tokio::time::timeout_at(deadline, transport.send(message)).await {
            Ok(Ok(_)) => Delivery::Accepted,
            Ok(Err(e)) => self.classify(&e),
            Err(_) => {
                drop(transport);
                self.discard_transport();
                Delivery::Ambiguous {
                    reason: format!(
                        "SMTP {}:{}: no final reply within {}; the message may have been sent",
                        self.host,
                        self.port,
                        humantime::format_duration(self.timeout)
                    ),
                }
            }
        }
    }

    /// Maps a lettre error to a [`Delivery`] (see the module docs).
    fn classify(&self, e: &lettre::transport::smtp::Error) -> Delivery {
        let text = format!("SMTP {}:{}: {e}", self.host, self.port);
        if e.is_transient() {
            return Delivery::Retry {
                after: None,
                reason: self.sanitize(&text),
            };
        }
        if e.is_permanent() {
            return Delivery::Permanent {
                reason: self.sanitize(&text),
            };
        }
        if e.is_client() {
            // lettre refused before sending anything: no STARTTLS on offer, no
            // AUTH mechanism in common, or a message the server cannot take.
            return Delivery::Permanent {
                reason: self.sanitize(&text),
            };
        }
        if e.is_transport_shutdown() || e.is_tls() || is_connect_error(e) {
            return Delivery::Retry {
                after: None,
                reason: self.sanitize(&text),
            };
        }
        Delivery::Ambiguous {
            reason: self.sanitize(&format!(
                "{text} (connection lost without a final reply; the message may have been sent)"
            )),
        }
    }

    /// Redacts secrets, removes control characters and bounds the length.
    fn sanitize(&self, text: &str) -> String {
        let mut s = text.to_owned();
        for secret in &self.redact {
            s = s.replace(secret.as_str(), "[redacted]");
        }
        let mut out = String::with_capacity(s.len().min(MAX_REASON_CHARS + 3));
        for (i, c) in s.chars().enumerate() {
            if i == MAX_REASON_CHARS {
                out.push('…');
                break;
            }
            out.push(if c.is_control() { ' ' } else { c });
        }
        out
    }
}

impl Drop for EmailChannel {
    fn drop(&mut self) {
        // lettre's pool spawns a tokio task when dropped, which panics outside
        // a runtime; there (process exit) leak it instead: the OS closes the
        // sockets.
        let slot = self.transport.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = slot.take() {
            if tokio::runtime::Handle::try_current().is_err() {
                std::mem::forget(t);
            }
        }
    }
}

impl Channel for EmailChannel {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "email"
    }

    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Delivery> {
        Box::pin(self.deliver(n))
    }
}

/// Whether lettre failed while connecting: resolving the host, the TCP
/// connect or a TLS handshake (implicit or after `STARTTLS`). Nothing of the
/// message has been sent then. lettre has no accessor for this kind, only its
/// `Display` prefix; the integration tests pin it (closed port, untrusted
/// certificate → `Retry`).
fn is_connect_error(e: &lettre::transport::smtp::Error) -> bool {
    e.to_string().starts_with("Connection error")
}

/// Parses one mailbox, refusing anything lettre would silently cut off (its
/// parser ignores trailing text, so `a@x.org, b@x.org` would be `a@x.org`).
fn parse_mailbox(s: &str) -> Result<Mailbox, String> {
    let mb: Mailbox = s.trim().parse().map_err(|e| format!("{e}"))?;
    let reparsed: Mailbox = mb.to_string().parse().map_err(|e| format!("{e}"))?;
    if reparsed != mb || !same_address_text(s, &mb) {
        return Err("expected exactly one address".into());
    }
    Ok(mb)
}

/// The input ends with the parsed address: bare (`a@x.org`) or in angle
/// brackets (`Name <a@x.org>`), with nothing after it.
fn same_address_text(input: &str, mb: &Mailbox) -> bool {
    let addr = mb.email.to_string();
    let t = input.trim();
    if t.ends_with('>') {
        t.ends_with(&format!("<{addr}>"))
    } else {
        t == addr
    }
}

/// Reads the extra trust anchors. The error names the file.
fn read_ca_file(path: &std::path::Path) -> Result<Vec<Certificate>, String> {
    use rustls_pki_types::pem::PemObject as _;
    let pem =
        std::fs::read(path).map_err(|e| format!("cannot read ca_file {}: {e}", path.display()))?;
    let ders = rustls_pki_types::CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("ca_file {} is not valid PEM: {e}", path.display()))?;
    if ders.is_empty() {
        return Err(format!(
            "ca_file {} holds no PEM certificate",
            path.display()
        ));
    }
    ders.into_iter()
        .map(|der| {
            Certificate::from_der(der.to_vec())
                .map_err(|e| format!("ca_file {}: {e}", path.display()))
        })
        .collect()
}

/// The password and the encodings it travels in (AUTH PLAIN initial
/// response, AUTH LOGIN), so a server echoing any of them is redacted.
fn secret_forms(user: &str, password: &str) -> Vec<String> {
    if password.is_empty() {
        return Vec::new();
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut forms = vec![
        password.to_owned(),
        b64.encode(password),
        b64.encode(format!("\0{user}\0{password}")),
    ];
    // Longest first, so a longer form is not half-replaced via a shorter one.
    forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
    forms
}

/// `Message-ID` for a notification id: `<{encoded}@vantage>`. The id is kept
/// where it is ASCII letters, digits, `-` and `_`; every other byte becomes
/// `=XX` (hex), so distinct ids give distinct Message-IDs and the result is
/// valid RFC 5322 `dot-atom-text`. An empty id becomes `=`, which no
/// non-empty id encodes to.
pub fn message_id(id: &str) -> String {
    let mut enc = String::with_capacity(id.len() + 16);
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            enc.push(char::from(b));
        } else {
            let _ = write!(enc, "={b:02X}");
        }
    }
    if enc.is_empty() {
        enc.push('=');
    }
    format!("<{enc}@{MESSAGE_ID_DOMAIN}>")
}

/// The subject line.
fn subject(n: &Notification) -> String {
    let mut s = one_line(&n.title());
    if n.possible_duplicate {
        s.push_str(" (possible duplicate)");
    }
    s
}

/// Control characters (line breaks included) become spaces.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn severity_label(n: &Notification) -> &'static str {
    match n.severity {
        super::Severity::Warning => "warning",
        super::Severity::Critical => "critical",
    }
}

fn format_value(v: Option<f64>) -> String {
    match v {
        Some(v) => format!("{v}"),
        None => "no data".to_owned(),
    }
}

/// RFC 3339 in UTC, seconds precision; raw milliseconds when out of range.
pub fn format_unix_ms(ms: i64) -> String {
    // humantime cannot show years past 9999 (its Display fails, which would
    // panic in format!).
    const MAX_SECS: u64 = 253_402_300_799;
    match u64::try_from(ms) {
        Ok(ms) if ms / 1000 <= MAX_SECS => {
            let t: SystemTime = UNIX_EPOCH + Duration::from_millis(ms);
            humantime::format_rfc3339_seconds(t).to_string()
        }
        _ => format!("{ms} ms since the Unix epoch"),
    }
}

fn render_text(n: &Notification) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "{}", one_line(&n.title()));
    if n.possible_duplicate {
        let _ = writeln!(
            t,
            "\n(possible duplicate: an earlier attempt to send this may have arrived)"
        );
    }
    let _ = writeln!(t, "\n{}\n", one_line(&n.summary));
    let _ = writeln!(t, "Severity:      {}", severity_label(n));
    let _ = writeln!(t, "Subject:       {}", one_line(&n.subject));
    let _ = writeln!(t, "Rule:          {}", one_line(&n.rule));
    let _ = writeln!(
        t,
        "Firing since:  {}",
        format_unix_ms(n.firing_since_unix_ms)
    );
    let _ = writeln!(t, "At:            {}", format_unix_ms(n.at_unix_ms));
    if !n.observed.is_empty() {
        let _ = writeln!(t, "\nObserved (* = breaching):");
        let width = n.observed.iter().map(|r| r.region.chars().count()).max();
        let width = width.unwrap_or(0);
        for r in &n.observed {
            let mark = if r.breaching { '*' } else { ' ' };
            let _ = writeln!(
                t,
                "{mark} {:<width$}  {}",
                one_line(&r.region),
                format_value(r.value)
            );
        }
    }
    if !n.breaching_regions.is_empty() {
        let _ = writeln!(
            t,
            "\nBreaching in: {}",
            one_line(&n.breaching_regions.join(", "))
        );
    }
    if let Some(url) = &n.dashboard_url {
        let _ = writeln!(t, "\nDashboard: {}", one_line(url));
    }
    let _ = writeln!(t, "\nNotification id: {}", one_line(&n.id));
    t
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn render_html(n: &Notification) -> String {
    let e = escape_html;
    let title = e(&one_line(&n.title()));
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title></head>\n<body>\n<h2>{title}</h2>\n"
    );
    if n.possible_duplicate {
        h.push_str("<p><em>Possible duplicate: an earlier attempt to send this may have arrived.</em></p>\n");
    }
    let _ = writeln!(h, "<p>{}</p>", e(&one_line(&n.summary)));
    h.push_str("<table>\n");
    for (k, v) in [
        ("Severity", severity_label(n).to_owned()),
        ("Subject", n.subject.clone()),
        ("Rule", n.rule.clone()),
        ("Firing since", format_unix_ms(n.firing_since_unix_ms)),
        ("At", format_unix_ms(n.at_unix_ms)),
    ] {
        let _ = writeln!(
            h,
            "<tr><th align=\"left\">{k}</th><td>{}</td></tr>",
            e(&one_line(&v))
        );
    }
    h.push_str("</table>\n");
    if !n.observed.is_empty() {
        h.push_str("<h3>Observed</h3>\n<table>\n<tr><th align=\"left\">Region</th><th align=\"right\">Value</th><th></th></tr>\n");
        for r in &n.observed {
            let (open, close, mark) = if r.breaching {
                ("<strong>", "</strong>", "breaching")
            } else {
                ("", "", "")
            };
            let _ = writeln!(
                h,
                "<tr><td>{open}{}{close}</td><td align=\"right\">{open}{}{close}</td><td>{mark}</td></tr>",
                e(&one_line(&r.region)),
                e(&format_value(r.value))
            );
        }
        h.push_str("</table>\n");
    }
    if let Some(url) = &n.dashboard_url {
        // Only web links become links; anything else (e.g. `javascript:`) is
        // shown as text.
        let lower = url.trim_start().to_ascii_lowercase();
        if lower.starts_with("https://") || lower.starts_with("http://") {
            let _ = writeln!(h, "<p><a href=\"{}\">Open on the dashboard</a></p>", e(url));
        } else {
            let _ = writeln!(h, "<p>Dashboard: {}</p>", e(url));
        }
    }
    let _ = writeln!(
        h,
        "<p style=\"color:#777;font-size:small\">Notification id: {}</p>\n</body></html>",
        e(&n.id)
    );
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{NotificationKind, RegionValue, Severity};
    use crate::secret::Secret;

    fn cfg() -> EmailConfig {
        EmailConfig {
            host: "smtp.example.com".into(),
            port: 587,
            tls: SmtpTls::StartTls,
            username: Some("vantage".into()),
            password: Some(Secret::new("canary-Pa55word")),
            from: "Vantage <vantage@example.com>".into(),
            to: vec!["ops@example.com".into(), "Jo <jo@example.org>".into()],
            ca_file: None,
            timeout: Duration::from_secs(10),
        }
    }

    fn notification() -> Notification {
        Notification {
            id: "homepage/p(95)<500/3/firing".into(),
            kind: NotificationKind::Firing,
            subject: "homepage".into(),
            rule: "p(95)<500".into(),
            severity: Severity::Critical,
            summary: "p95 812 ms > 500 ms in eu, us".into(),
            observed: vec![
                RegionValue {
                    region: "eu".into(),
                    value: Some(812.0),
                    breaching: true,
                },
                RegionValue {
                    region: "ap".into(),
                    value: None,
                    breaching: false,
                },
            ],
            breaching_regions: vec!["eu".into()],
            firing_since_unix_ms: 1_714_564_800_000,
            at_unix_ms: 1_714_565_100_500,
            dashboard_url: Some("https://vantage.example.com/checks/homepage?a=1&b=2".into()),
            possible_duplicate: false,
        }
    }

    #[test]
    fn addresses_are_validated_and_named_in_errors() {
        let mut c = cfg();
        c.from = "not an address".into();
        let e = EmailChannel::new("mail".into(), &c).unwrap_err();
        assert!(e.contains("\"not an address\""), "{e}");
        assert!(e.contains("from"), "{e}");

        let mut c = cfg();
        c.to.push("ops@example.com, evil@example.net".into());
        let e = EmailChannel::new("mail".into(), &c).unwrap_err();
        assert!(e.contains("ops@example.com, evil@example.net"), "{e}");

        let mut c = cfg();
        c.to.clear();
        assert!(EmailChannel::new("mail".into(), &c)
            .unwrap_err()
            .contains("no recipient"));

        for ok in [
            "a@example.com",
            "A B <a@example.com>",
            "\"B, C\" <b@example.com>",
        ] {
            assert!(parse_mailbox(ok).is_ok(), "{ok}");
        }
        for bad in ["a@example.com junk", "a@example.com>", "<a@example.com", ""] {
            assert!(parse_mailbox(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn credentials_come_in_pairs_and_ca_file_errors_name_the_file() {
        let mut c = cfg();
        c.password = None;
        let e = EmailChannel::new("mail".into(), &c).unwrap_err();
        assert!(e.contains("password is not"), "{e}");

        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg();
        c.ca_file = Some(dir.path().join("missing.pem"));
        let e = EmailChannel::new("mail".into(), &c).unwrap_err();
        assert!(e.contains("missing.pem"), "{e}");

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "nothing here\n").unwrap();
        c.ca_file = Some(empty);
        let e = EmailChannel::new("mail".into(), &c).unwrap_err();
        assert!(e.contains("empty.pem") && e.contains("no PEM"), "{e}");
    }

    #[test]
    fn debug_never_shows_the_password() {
        let c = cfg();
        let ch = EmailChannel::new("mail".into(), &c).unwrap();
        for text in [format!("{ch:?}"), format!("{c:?}")] {
            assert!(!text.contains("canary-Pa55word"), "{text}");
        }
        assert!(format!("{ch:?}").contains("[redacted]"));
    }

    #[test]
    fn reasons_redact_the_password_in_every_form() {
        let ch = EmailChannel::new("mail".into(), &cfg()).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD;
        let text = format!(
            "535 no: canary-Pa55word {} {}\r\nnext",
            b64.encode("canary-Pa55word"),
            b64.encode("\0vantage\0canary-Pa55word")
        );
        let s = ch.sanitize(&text);
        assert!(!s.contains("canary"), "{s}");
        assert!(!s.contains(&b64.encode("canary-Pa55word")), "{s}");
        assert!(!s.contains('\r') && !s.contains('\n'), "{s}");
        assert_eq!(s.matches("[redacted]").count(), 3, "{s}");
        let long = ch.sanitize(&"x".repeat(1000));
        assert_eq!(long.chars().count(), MAX_REASON_CHARS + 1);
    }

    #[test]
    fn message_id_is_stable_injective_and_atext() {
        let a = message_id("homepage/p(95)<500/3/firing");
        assert_eq!(a, message_id("homepage/p(95)<500/3/firing"));
        assert_eq!(a, "<homepage=2Fp=2895=29=3C500=2F3=2Ffiring@vantage>");
        assert_ne!(message_id("a.b"), message_id("a=2Eb"));
        assert_ne!(message_id("a b"), message_id("a_b"));
        assert_eq!(message_id(""), "<=@vantage>");
        assert_ne!(message_id(""), message_id("empty"));
        let inner = message_id("é\r\n<x>@y");
        assert!(inner
            .trim_start_matches('<')
            .trim_end_matches('>')
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "=-_@".contains(c)));
    }

    #[test]
    fn timestamps_are_rfc3339_utc_and_never_panic() {
        assert_eq!(format_unix_ms(1_714_564_800_000), "2024-05-01T12:00:00Z");
        assert_eq!(format_unix_ms(0), "1970-01-01T00:00:00Z");
        assert!(format_unix_ms(-5).contains("-5 ms"));
        assert!(format_unix_ms(i64::MAX).contains("ms since"));
    }

    #[test]
    fn text_and_html_carry_the_facts_and_html_is_escaped() {
        let mut n = notification();
        n.summary = "<script>alert(1)</script> & more".into();
        n.subject = "home<b>page</b>".into();
        let text = render_text(&n);
        assert!(text.contains("<script>alert(1)</script> & more"), "{text}");
        assert!(text.contains("* eu  812"), "{text}");
        assert!(text.contains("  ap  no data"), "{text}");
        assert!(text.contains("Severity:      critical"), "{text}");
        assert!(
            text.contains("Firing since:  2024-05-01T12:00:00Z"),
            "{text}"
        );
        assert!(
            text.contains("At:            2024-05-01T12:05:00Z"),
            "{text}"
        );
        assert!(text.contains("Dashboard: https://vantage.example.com/checks/homepage?a=1&b=2"));

        let html = render_html(&n);
        assert!(!html.contains("<script>"), "{html}");
        assert!(!html.contains("<b>page"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; more"));
        assert!(html.contains("home&lt;b&gt;page&lt;/b&gt;"));
        assert!(html.contains("p(95)&lt;500"));
        assert!(html.contains("href=\"https://vantage.example.com/checks/homepage?a=1&amp;b=2\""));
        assert!(html.contains("<strong>eu</strong>"));

        n.dashboard_url = Some("javascript:alert(1)\" onclick=\"x".into());
        let html = render_html(&n);
        assert!(!html.contains("href"), "{html}");
        assert!(!html.contains("\" onclick"), "{html}");
    }

    #[test]
    fn subject_marks_possible_duplicates_and_stays_on_one_line() {
        let mut n = notification();
        assert_eq!(subject(&n), "[FIRING] homepage: p(95)<500");
        n.possible_duplicate = true;
        n.subject = "a\r\nBcc: x@evil".into();
        let s = subject(&n);
        assert_eq!(s, "[FIRING] a  Bcc: x@evil: p(95)<500 (possible duplicate)");
        let ch = EmailChannel::new("mail".into(), &cfg()).unwrap();
        let raw = String::from_utf8(ch.render(&n).unwrap().formatted()).unwrap();
        let (headers, _) = raw.split_once("\r\n\r\n").unwrap();
        assert!(!headers.contains("\nBcc:"), "{headers}");
        assert!(!raw.contains("\nBcc:"), "{raw}");
        assert!(raw.contains("Message-ID: <homepage=2Fp=2895=29=3C500=2F3=2Ffiring@vantage>"));
        assert!(raw.contains("X-Vantage-Notification-Id: homepage/p(95)<500/3/firing"));
        assert!(raw.contains("multipart/alternative"));
    }
}
