// Drives the unmodified posthog-js browser SDK (dist/array.js from node_modules, the
// build a <script> tag loads) in headless Debian Chromium, through playwright-core,
// against a running Tally server. The Rust end-to-end test
// (crates/tally/tests/it/sdk_e2e/browser.rs) starts the server, runs this script, then
// checks what landed.
//
// The page is served from its own origin (a second localhost port), so every request
// to Tally is cross-origin, as on a real site. Between the browser and Tally sits a
// transparent tap: it forwards every request unchanged (method, path, headers, body)
// and relays Tally's answer unchanged (status, headers — CORS included — body), and
// records what crossed. The browser sees Tally's own CORS answers, preflights
// included, and the tap also sees the sendBeacon posthog-js sends while the page
// unloads, which no page-level hook reports.
//
// posthog-js is initialised the way its docs show, plus `property_denylist` for the
// user-agent properties it would otherwise parse itself, so that the $browser/$os
// values that land are Tally's own parse of the browser's User-Agent.
//
// Prints one JSON line on stdout: the SDK and browser versions, the ids the SDK used,
// every request that reached Tally (method, path and query, what it was for — capture,
// remote config or flags —, the compression posthog-js chose for its body, status, the
// events inside), the compression posthog-js settled on, and what the page itself saw
// go wrong (HTTP errors on its requests, console errors, uncaught exceptions).
//
// Usage: TALLY_URL=http://127.0.0.1:PORT TALLY_WRITE_KEY=... RUN_ID=abc \
//        [CHROMIUM=/usr/bin/chromium] node browser/drive_posthog_js.mjs
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const tallyUrl = new URL(process.env.TALLY_URL ?? 'http://invalid');
const writeKey = process.env.TALLY_WRITE_KEY;
const run = process.env.RUN_ID ?? 'run';
const executablePath = process.env.CHROMIUM ?? '/usr/bin/chromium';
if (!process.env.TALLY_URL || !writeKey) {
  console.error('TALLY_URL and TALLY_WRITE_KEY are required');
  process.exit(2);
}

const e2eDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const posthogDir = path.join(e2eDir, 'node_modules', 'posthog-js');
const posthogVersion = JSON.parse(fs.readFileSync(path.join(posthogDir, 'package.json'), 'utf8')).version;
const arrayJs = fs.readFileSync(path.join(posthogDir, 'dist', 'array.js'));

// The user-agent properties posthog-js derives itself; denied here so Tally derives them.
const UA_PROPERTIES = ['$browser', '$browser_version', '$os', '$os_version', '$device_type'];

async function listen(server) {
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${server.address().port}`;
}

function readBody(stream) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    stream.on('data', (c) => chunks.push(c));
    stream.on('end', () => resolve(Buffer.concat(chunks)));
    stream.on('error', reject);
  });
}

/** What a request to Tally was for, by its path. */
function requestKind(pathname) {
  if (pathname.startsWith('/array/')) return 'remote_config';
  if (/^\/(flags|decide)\/?$/.test(pathname)) return 'flags';
  return 'capture';
}

/** The compression of a body: gzip (with or without the `compression` hint), base64, or none. */
function bodyCompression(url, body) {
  const hint = url.searchParams.get('compression');
  if (body.length > 2 && body[0] === 0x1f && body[1] === 0x8b) return 'gzip';
  if (hint === 'base64') return 'base64';
  return 'none';
}

/**
 * Decodes a posthog-js request body into its events, whichever encoding it chose, and
 * names that encoding: the `compression` query hint when present, else what the bytes are.
 */
function decodeEvents(url, body) {
  const hint = url.searchParams.get('compression');
  const gzipMagic = body.length > 2 && body[0] === 0x1f && body[1] === 0x8b;
  let text;
  let encoding;
  if (hint === 'gzip-js' || hint === 'gzip' || gzipMagic) {
    text = zlib.gunzipSync(body).toString('utf8');
    encoding = hint ? `gzip (compression=${hint})` : 'gzip (no hint; magic bytes)';
  } else if (hint === 'base64') {
    const raw = body.toString('utf8');
    const data = raw.startsWith('data=') ? decodeURIComponent(raw.slice(5).replace(/\+/g, ' ')) : raw;
    text = Buffer.from(data, 'base64').toString('utf8');
    encoding = 'base64 form';
  } else {
    text = body.toString('utf8');
    encoding = 'json';
  }
  const parsed = JSON.parse(text);
  return { encoding, events: Array.isArray(parsed) ? parsed : parsed.batch ?? [parsed] };
}

// --- The tap in front of Tally -----------------------------------------------------
const requests = [];
const tap = http.createServer(async (req, res) => {
  const arrivedMs = Date.now();
  const body = await readBody(req);
  const headers = { ...req.headers, host: tallyUrl.host };
  const upstream = http.request(
    { host: tallyUrl.hostname, port: tallyUrl.port, method: req.method, path: req.url, headers },
    async (answer) => {
      const reply = await readBody(answer);
      res.writeHead(answer.statusCode, answer.headers);
      res.end(reply);
      const url = new URL(req.url, tallyUrl);
      const kind = requestKind(url.pathname);
      const entry = {
        method: req.method,
        path: url.pathname,
        query: url.search,
        kind,
        arrived_ms: arrivedMs,
        answered_ms: Date.now(),
        compression: req.method === 'POST' && body.length > 0 ? bodyCompression(url, body) : null,
        content_type: req.headers['content-type'] ?? null,
        content_encoding: req.headers['content-encoding'] ?? null,
        origin: req.headers.origin ?? null,
        preflight_for: req.headers['access-control-request-method'] ?? null,
        status: answer.statusCode,
        cors_allow_origin: answer.headers['access-control-allow-origin'] ?? null,
        events: [],
      };
      if (kind === 'capture' && req.method === 'POST' && answer.statusCode === 200 && body.length > 0) {
        try {
          const decoded = decodeEvents(url, body);
          entry.body_encoding = decoded.encoding;
          entry.events = decoded.events.map((e) => ({
            event: e.event,
            uuid: e.uuid ?? null,
            // Which of the denied user-agent properties the SDK still sent: none, or
            // the server's parse is not what the test reads.
            ua_properties_sent: UA_PROPERTIES.filter((k) => e.properties && k in e.properties),
          }));
        } catch (err) {
          entry.decode_error = String(err);
        }
      }
      requests.push(entry);
    },
  );
  upstream.on('error', (err) => {
    requests.push({ method: req.method, path: req.url, failure: String(err), events: [] });
    res.writeHead(502);
    res.end();
  });
  upstream.end(body);
});
const apiHost = await listen(tap);

// --- The site ----------------------------------------------------------------------
const page = `<!doctype html>
<html><head><meta charset="utf-8"><title>Tally e2e ${run}</title>
<script src="/static/array.js"></script>
<script>
  posthog.init(${JSON.stringify(writeKey)}, {
    api_host: ${JSON.stringify(apiHost)},
    autocapture: false,
    capture_pageview: true,
    capture_pageleave: false,
    disable_session_recording: true,
    disable_surveys: true,
    // Under automation navigator.webdriver is true, which posthog-js's bot filter
    // drops events for; its docs name this switch for end-to-end tests.
    opt_out_useragent_filter: true,
    property_denylist: ${JSON.stringify(UA_PROPERTIES)},
    loaded: () => { window.__tallyLoaded = true; },
  });
</script>
</head><body><h1>Pricing</h1><button id="cta">Start trial</button></body></html>`;

const site = http.createServer((req, res) => {
  if (req.url === '/thanks') {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end('<!doctype html><title>Thanks</title><p>Thanks</p>');
  } else if (req.url === '/' || req.url.startsWith('/pricing')) {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(page);
  } else if (req.url === '/favicon.ico') {
    // Answered so that the browser's own favicon request puts no 404 in the console,
    // which the test keeps free of errors.
    res.writeHead(204);
    res.end();
  } else if (req.url === '/static/array.js') {
    res.writeHead(200, { 'content-type': 'application/javascript' });
    res.end(arrayJs);
  } else {
    res.writeHead(404);
    res.end();
  }
});
const siteUrl = await listen(site);

// --- The visit ---------------------------------------------------------------------
const delivered = () => new Set(requests.filter((r) => r.status === 200).flatMap((r) => r.events.map((e) => e.event)));
/** Waits until Tally has acknowledged every event named, for at most 30 s. */
async function awaitDelivery(tab, names) {
  const deadline = Date.now() + 30000;
  while (!names.every((name) => delivered().has(name)) && Date.now() < deadline) {
    await tab.waitForTimeout(100);
  }
  return names.filter((name) => !delivered().has(name));
}

const pageErrors = [];
// What the page saw fail: HTTP errors on any of its requests (scripts included) and
// console errors (posthog-js logs failed config and flags requests there).
const httpErrors = [];
const consoleErrors = [];
const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    // Containers often have a small /dev/shm; Chromium then crashes renderers.
    '--disable-dev-shm-usage',
  ],
});
let exitCode = 0;
try {
  // Headless Chromium says "HeadlessChrome" in its User-Agent. The visitor this test
  // stands for runs Chrome: the same User-Agent with that one word changed, in the
  // header and in navigator.
  const probe = await browser.newPage();
  const headlessUserAgent = await probe.evaluate(() => navigator.userAgent);
  await probe.close();
  const context = await browser.newContext({ userAgent: headlessUserAgent.replace('HeadlessChrome/', 'Chrome/') });
  const tab = await context.newPage();
  tab.on('pageerror', (err) => pageErrors.push(String(err)));
  tab.on('response', (r) => {
    if (r.status() >= 400) httpErrors.push({ url: r.url(), status: r.status() });
  });
  tab.on('requestfailed', (r) => httpErrors.push({ url: r.url(), failure: r.failure()?.errorText ?? 'failed' }));
  tab.on('console', (m) => {
    if (m.type() === 'error') consoleErrors.push({ text: m.text(), url: m.location()?.url ?? null });
  });

  await tab.goto(`${siteUrl}/pricing?utm_source=e2e`);
  await tab.waitForFunction(() => window.__tallyLoaded === true, null, { timeout: 15000 });
  const anonDistinctId = await tab.evaluate(() => window.posthog.get_distinct_id());
  await tab.evaluate(
    ({ run }) => {
      window.posthog.capture('clicked_cta', { plan: 'pro', price: 12.5, run });
      window.posthog.identify(`web-user-${run}`, { email: `web-${run}@example.com` }, { first_touch: 'browser' });
      window.posthog.capture('purchase_completed', { amount: 99.9, currency: 'EUR' });
    },
    { run },
  );
  const identifiedDistinctId = await tab.evaluate(() => window.posthog.get_distinct_id());
  const userAgent = await tab.evaluate(() => navigator.userAgent);
  // posthog-js batches events and sends them on a timer.
  const missing = await awaitDelivery(tab, ['$pageview', 'clicked_cta', '$identify', 'purchase_completed']);
  // The compression posthog-js uses from here on: what the remote config told it
  // (fetched at start-up; the first captures above waited on a timer).
  const sdkCompression = await tab.evaluate(() => window.posthog.compression ?? null);

  // Leaving the page: posthog-js flushes what it still queues with navigator.sendBeacon
  // on pagehide.
  await tab.evaluate(() => window.posthog.capture('left_pricing', { reason: 'navigated' }));
  await tab.goto(`${siteUrl}/thanks`);
  missing.push(...(await awaitDelivery(tab, ['left_pricing'])));

  if (missing.length > 0) {
    console.error(`events not delivered within 30 s: ${missing.join(', ')}`);
    exitCode = 1;
  }
  console.log(
    JSON.stringify({
      posthog_js_version: posthogVersion,
      browser_version: browser.version(),
      user_agent: userAgent,
      site_origin: siteUrl,
      anon_distinct_id: anonDistinctId,
      identified_distinct_id: identifiedDistinctId,
      requests,
      sdk_compression: sdkCompression,
      page_errors: pageErrors,
      http_errors: httpErrors,
      console_errors: consoleErrors,
    }),
  );
} finally {
  await browser.close();
  site.close();
  tap.close();
}
process.exit(exitCode);
