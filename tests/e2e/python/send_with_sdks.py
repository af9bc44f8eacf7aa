"""Sends a known set of events through the unmodified PostHog and Segment Python SDKs
(`posthog`, `segment-analytics-python`, pinned in requirements.txt) to a running Tally
server. The Rust end-to-end test (crates/tally/tests/it/sdk_e2e_python.rs) starts the
server, runs this script with the venv's Python, then checks what landed.

The SDKs talk to Tally through a small proxy started here that loses the response of
the first upload of each SDK: it forwards the request, Tally stores it, and the SDK is
answered 502 as if the connection had dropped on the way back. The SDK then retries
the same events, which is the case that `uuid` / `messageId` dedup exists for. The
proxy records the ids it saw in that lost upload and in the retry, and prints them,
with what it observed of the wire format, as one JSON line on stdout.

Usage: TALLY_URL=http://127.0.0.1:PORT TALLY_WRITE_KEY=... RUN_ID=abc python send_with_sdks.py
"""

import gzip
import json
import logging
import os
import sys
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import posthog
from posthog import Posthog
from segment.analytics import Client as SegmentClient
from segment.analytics.version import VERSION as SEGMENT_VERSION

TALLY_URL = os.environ.get("TALLY_URL", "").rstrip("/")
WRITE_KEY = os.environ.get("TALLY_WRITE_KEY", "")
RUN = os.environ.get("RUN_ID", "run")
if not TALLY_URL or not WRITE_KEY:
    print("TALLY_URL and TALLY_WRITE_KEY are required", file=sys.stderr)
    sys.exit(2)

# Headers the SDKs send that matter to Tally; hop-by-hop ones are left to urllib.
FORWARDED_HEADERS = ("Content-Type", "Content-Encoding", "Authorization", "User-Agent")


def sdk_of(path):
    """Which SDK an upload came from, by the endpoint each one posts to."""
    if path.startswith("/batch"):
        return "posthog"
    if path.startswith("/v1/"):
        return "segment"
    return "other"


def event_ids(body, content_encoding):
    """The dedup ids in an upload: PostHog `uuid`, Segment `messageId`."""
    if content_encoding == "gzip":
        body = gzip.decompress(body)
    payload = json.loads(body)
    return [e.get("uuid") or e.get("messageId") for e in payload.get("batch", [])]


class Observed:
    """What the proxy saw, per SDK. Guarded by `lock`: the server is threaded."""

    def __init__(self):
        self.lock = threading.Lock()
        self.by_sdk = {}

    def record(self, sdk):
        return self.by_sdk.setdefault(
            sdk,
            {
                "uploads": 0,
                "statuses": [],
                "content_encodings": [],
                "user_agents": [],
                "lost_upload_ids": None,
                "retried_ids": [],
            },
        )


OBSERVED = Observed()


class LossyProxy(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's naming)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        headers = {h: self.headers[h] for h in FORWARDED_HEADERS if self.headers.get(h)}
        request = urllib.request.Request(
            TALLY_URL + self.path, data=body, headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, reply = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, reply = error.code, error.read()

        sdk = sdk_of(self.path)
        ids = event_ids(body, self.headers.get("Content-Encoding"))
        with OBSERVED.lock:
            seen = OBSERVED.record(sdk)
            seen["uploads"] += 1
            seen["statuses"].append(status)
            seen["content_encodings"].append(self.headers.get("Content-Encoding") or "identity")
            seen["user_agents"].append(self.headers.get("User-Agent"))
            lose = status == 200 and seen["lost_upload_ids"] is None
            if lose:
                seen["lost_upload_ids"] = ids
            elif seen["lost_upload_ids"] is not None:
                seen["retried_ids"].extend(ids)

        if lose:
            status = 502
            reply = b'{"error": "test proxy: upstream answer lost"}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format, *args):  # quiet: the summary line is the output
        pass


def main():
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), LossyProxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    proxy_url = f"http://127.0.0.1:{proxy.server_address[1]}"

    errors = []
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    # --- PostHog: everything queued, then one explicit flush, so the whole set goes
    # in one gzip batch (the one the proxy loses) and comes back in the retry.
    ph = Posthog(
        WRITE_KEY,
        host=proxy_url,
        gzip=True,
        flush_at=100,
        flush_interval=30,
        max_retries=3,
        on_error=lambda error, batch: errors.append(f"posthog: {error}"),
    )
    anon, user = f"py-anon-{RUN}", f"py-user-{RUN}"
    ph.capture(
        "$pageview",
        distinct_id=anon,
        properties={"$current_url": "https://example.com/pricing", "plan_seen": "pro"},
    )
    ph.capture(
        "clicked_signup",
        distinct_id=anon,
        properties={"button": "hero", "amount": 12.5, "tags": ["a", "b"], "nested": {"depth": 1}},
    )
    # posthog-python 6+ has no identify(): an identify is the $identify event itself,
    # which is what the other SDKs send too.
    ph.capture(
        "$identify",
        distinct_id=user,
        properties={
            "$anon_distinct_id": anon,
            "$set": {"email": f"{RUN}@example.com"},
            "$set_once": {"first_seen_via": "python"},
        },
    )
    ph.set(distinct_id=user, properties={"plan": "pro", "email": f"{RUN}@example.com"})
    ph.set_once(distinct_id=user, properties={"first_seen_via": "ignored: already set"})
    ph.alias(previous_id=user, distinct_id=f"py-alias-{RUN}")
    ph.group_identify(
        "company", f"py-co-{RUN}", {"name": "Initech", "employees": 7}, distinct_id=user
    )
    ph.capture(
        "purchase",
        distinct_id=user,
        properties={"amount": 99.9, "currency": "EUR"},
        groups={"company": f"py-co-{RUN}"},
    )
    ph.flush()
    ph.shutdown()

    # --- Segment: track, identify, alias, group, page, screen.
    seg = SegmentClient(
        WRITE_KEY,
        host=proxy_url,
        gzip=True,
        upload_size=100,
        upload_interval=1.0,
        max_retries=3,
        on_error=lambda error, batch: errors.append(f"segment: {error}"),
    )
    seg_anon, seg_user = f"py-seg-anon-{RUN}", f"py-seg-user-{RUN}"
    seg.track(anonymous_id=seg_anon, event="Viewed Docs", properties={"section": "api"})
    seg.identify(
        user_id=seg_user,
        anonymous_id=seg_anon,
        traits={"email": f"py-seg-{RUN}@example.com", "plan": "team"},
    )
    seg.alias(previous_id=f"py-seg-old-{RUN}", user_id=seg_user)
    seg.group(user_id=seg_user, group_id=f"py-seg-co-{RUN}", traits={"name": "Hooli", "industry": "tech"})
    seg.page(
        user_id=seg_user,
        name="Pricing",
        properties={"url": "https://example.com/pricing", "path": "/pricing"},
    )
    seg.screen(user_id=seg_user, name="Home")
    seg.track(
        user_id=seg_user,
        event="Order Completed",
        properties={"revenue": 49, "currency": "USD"},
        message_id=f"py-seg-msg-{RUN}",
    )
    seg.flush()
    seg.shutdown()

    proxy.shutdown()
    with OBSERVED.lock:
        summary = {
            "sdk_versions": {"posthog": posthog.VERSION, "segment": SEGMENT_VERSION},
            "proxy": OBSERVED.by_sdk,
            "errors": errors,
        }
    print(json.dumps(summary))
    if errors:
        print("\n".join(errors), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
