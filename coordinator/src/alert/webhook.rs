//! The `webhook` channel: a JSON POST of the [`Notification`] as-is.
//!
//! Headers: `Content-Type: application/json`,
//! `User-Agent: vantage-coordinator/<version>`, and
//! `Idempotency-Key: <notification id>` so a receiver can drop the duplicate
//! of an ambiguous attempt (the id is stable per transition). Any 2xx is
//! accepted. See `alert/http.rs` for the classification and the secrecy of
//! the URL.

use std::fmt;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};

use super::http::HttpPoster;
use super::{BoxFuture, Channel, Delivery, Notification, WebhookConfig};

/// The idempotency header, named as in the IETF draft
/// (draft-ietf-httpapi-idempotency-key-header) and by Stripe.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// A generic JSON webhook channel.
pub struct WebhookChannel {
    name: String,
    poster: HttpPoster,
}

impl fmt::Debug for WebhookChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookChannel")
            .field("name", &self.name)
            .field("poster", &self.poster)
            .finish()
    }
}

impl WebhookChannel {
    /// A channel posting to `cfg.url`.
    ///
    /// Fails (without quoting the URL) when the URL is not `https://` (or
    /// `http://` to a loopback host), when the timeout is zero, or when
    /// `ca_file` cannot be read or holds no certificate.
    pub fn new(name: String, cfg: &WebhookConfig) -> Result<Self, String> {
        let poster = HttpPoster::new(
            &format!("channel {name}: webhook url"),
            "webhook",
            &cfg.url,
            cfg.timeout,
            cfg.ca_file.as_deref(),
        )?;
        Ok(WebhookChannel { name, poster })
    }
}

impl Channel for WebhookChannel {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "webhook"
    }

    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Delivery> {
        Box::pin(async move {
            let body = match serde_json::to_vec(n) {
                Ok(b) => Bytes::from(b),
                Err(e) => {
                    return Delivery::Permanent {
                        reason: format!("webhook: cannot encode the notification ({e})"),
                    }
                }
            };
            let key = idempotency_key(&n.id);
            self.poster.post_json(body, &[(IDEMPOTENCY_KEY, key)]).await
        })
    }
}

/// The id as a header value: visible ASCII as-is, anything else (and `%`)
/// percent-encoded, so every id yields a valid, stable key.
pub fn idempotency_key(id: &str) -> HeaderValue {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_graphic() && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    // Only visible ASCII remains, which is always a valid header value.
    HeaderValue::from_str(&out).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_keys() {
        assert_eq!(
            idempotency_key("homepage/p95/3/firing"),
            "homepage/p95/3/firing"
        );
        assert_eq!(idempotency_key("a b%ü\n"), "a%20b%25%C3%BC%0A");
    }
}
