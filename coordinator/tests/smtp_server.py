#!/usr/bin/env python3
"""A real SMTP server for the `email` channel tests (aiosmtpd).

Started by `coordinator/tests/it/smtp.rs`; not a product component.

    python3 smtp_server.py --mode starttls --cert CHAIN.pem --key KEY.pem --out EVENTS.jsonl

Listens on 127.0.0.1 (`--port 0` picks a free port) and prints `READY <port>` on
stdout once listening. Every event is appended to `--out` as one JSON line,
flushed at once:

- `{"event": "connect", "conn": N}` for every TCP connection;
- `{"event": "auth", "conn": N, "mechanism": ..., "login": ..., "tls": bool,
  "ok": bool}` for every AUTH attempt;
- `{"event": "message", "conn": N, "tls": bool, "mail_from": ..., "rcpt_tos": [...],
  "raw": ..., "subject": ..., "message_id": ..., "from": ..., "to": ...,
  "notification_id": ..., "parts": [{"content_type": ..., "body": ...}],
  "dropped": bool}` for every message whose content was received.

Modes: `starttls` (STARTTLS offered and required before MAIL and AUTH),
`implicit` (TLS from the first byte), `plain` (no TLS at all, and AUTH offered
in plaintext, so a client that would send credentials without TLS is caught).

AUTH LOGIN/PLAIN is required (except in `plain` mode, where it is only offered);
the credentials come from the environment: SMTP_USER, SMTP_PASSWORD.

Scripted failures:
  --fail-rcpt CODE     reply CODE (451 or 550) to RCPT TO
  --fail-data CODE     reply CODE (451 or 550) after the message content
  --drop-after-data    close the connection after the content, without a reply
  --stall-after-data S wait S seconds after the content before replying
  --fail-count N       apply the failure above to the first N attempts only
  --echo-secrets       a failed AUTH reply quotes the password it received (to
                       prove the client redacts server replies)
"""

import argparse
import asyncio
import base64
import email
import email.policy
import json
import os
import ssl
import sys

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

REPLIES = {
    451: "451 4.3.0 Temporary local problem, try again later",
    550: "550 5.7.1 Message rejected by policy",
}


class Recorder:
    def __init__(self, path):
        self.file = open(path, "a", encoding="utf-8")

    def write(self, event):
        self.file.write(json.dumps(event) + "\n")
        self.file.flush()


class Handler:
    def __init__(self, args, recorder):
        self.args = args
        self.rec = recorder
        self.failures_left = args.fail_count

    def _fail_now(self):
        if self.failures_left is None:
            return True
        if self.failures_left > 0:
            self.failures_left -= 1
            return True
        return False

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.args.fail_rcpt and self._fail_now():
            return REPLIES[self.args.fail_rcpt]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        drop = self.args.drop_after_data and self._fail_now()
        self.rec.write(message_event(server, session, envelope, self.args.mode, drop))
        if self.args.stall_after_data and self._fail_now():
            await asyncio.sleep(self.args.stall_after_data)
        if drop:
            server.transport.abort()
            # The connection is gone; aiosmtpd cancels this coroutine.
            await asyncio.sleep(3600)
        if self.args.fail_data and self._fail_now():
            return REPLIES[self.args.fail_data]
        return "250 2.0.0 Message accepted for delivery"


def is_tls(server, mode):
    return mode == "implicit" or server.session.ssl is not None


def message_event(server, session, envelope, mode, dropped):
    raw = envelope.original_content or b""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    parts = []
    for part in msg.walk():
        if part.is_multipart():
            continue
        try:
            body = part.get_content()
        except Exception as e:  # a broken part is reported, not fatal
            body = f"<undecodable: {e}>"
        parts.append({"content_type": part.get_content_type(), "body": body})
    return {
        "event": "message",
        "conn": server.conn_id,
        "tls": is_tls(server, mode),
        "mail_from": envelope.mail_from,
        "rcpt_tos": list(envelope.rcpt_tos),
        "raw": raw.decode("utf-8", errors="replace"),
        "subject": str(msg.get("Subject", "")),
        "message_id": str(msg.get("Message-ID", "")),
        "from": str(msg.get("From", "")),
        "to": str(msg.get("To", "")),
        "notification_id": str(msg.get("X-Vantage-Notification-Id", "")),
        "content_type": msg.get_content_type(),
        "parts": parts,
        "dropped": dropped,
    }


def make_authenticator(args, recorder):
    user = os.environ.get("SMTP_USER", "")
    password = os.environ.get("SMTP_PASSWORD", "")

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = False
        login = ""
        got = ""
        if isinstance(auth_data, LoginPassword):
            login = auth_data.login.decode("utf-8", errors="replace")
            got = auth_data.password.decode("utf-8", errors="replace")
            ok = bool(user) and login == user and got == password
        recorder.write({
            "event": "auth",
            "conn": server.conn_id,
            "mechanism": mechanism,
            "login": login,
            "tls": is_tls(server, args.mode),
            "ok": ok,
        })
        if ok:
            return AuthResult(success=True)
        if args.echo_secrets:
            b64 = base64.b64encode(got.encode()).decode()
            return AuthResult(
                success=False,
                handled=False,
                message=f"535 5.7.8 Bad credentials: {login} / {got} / {b64}",
            )
        return AuthResult(success=False, handled=False)

    return authenticator


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--mode", choices=["starttls", "implicit", "plain"], required=True)
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--out", required=True)
    p.add_argument("--fail-rcpt", type=int, choices=[451, 550])
    p.add_argument("--fail-data", type=int, choices=[451, 550])
    p.add_argument("--drop-after-data", action="store_true")
    p.add_argument("--stall-after-data", type=float)
    p.add_argument("--fail-count", type=int)
    p.add_argument("--echo-secrets", action="store_true")
    args = p.parse_args()

    recorder = Recorder(args.out)
    handler = Handler(args, recorder)
    authenticator = make_authenticator(args, recorder)

    ctx = None
    if args.mode != "plain":
        if not (args.cert and args.key):
            p.error("--cert and --key are required for TLS modes")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.cert, args.key)

    conn_counter = [0]

    def factory():
        conn_counter[0] += 1
        conn_id = conn_counter[0]
        recorder.write({"event": "connect", "conn": conn_id})
        smtp = SMTP(
            handler,
            hostname="smtp.test",
            tls_context=ctx if args.mode == "starttls" else None,
            require_starttls=args.mode == "starttls",
            # plain: offer AUTH without TLS, to catch a client that would use it.
            # implicit: the whole connection is TLS, which aiosmtpd cannot see.
            auth_require_tls=args.mode == "starttls",
            auth_required=args.mode != "plain",
            authenticator=authenticator,
            timeout=30,
        )
        smtp.conn_id = conn_id
        return smtp

    async def serve():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            factory,
            host="127.0.0.1",
            port=args.port,
            ssl=ctx if args.mode == "implicit" else None,
        )
        port = server.sockets[0].getsockname()[1]
        print(f"READY {port}", flush=True)
        async with server:
            await server.serve_forever()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
