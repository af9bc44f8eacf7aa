// Drives the unmodified posthog-js browser SDK (dist/array.js from node_modules, the
// build a <script> tag loads) in headless Debian Chromium, through playwright-core,
// against a running Tally server. The Rust end-to-end test
// (crates/tally/tests/it/sdk_e2e/browser.rs) starts the server, runs this script, then
// checks what landed.
//
// The page is served from its own origin (a second localhost port), so every capture
// is a cross-origin request to Tally, as on a real site. posthog-js is initialised the
// way its docs show, plus `property_denylist` for the user-agent properties it would
// otherwise parse itself, so that the $browser/$os values that land are Tally's own
// parse of the browser's User-Agent.
//
// Prints one JSON line on stdout: the SDK and browser versions, the anonymous id the
// SDK generated, and every request the page sent to Tally (path, the compression
// posthog-js chose, status, the events inside).
//
// Usage: TALLY_URL=http://127.0.0.1:PORT TALLY_WRITE_KEY=... RUN_ID=abc \
//        [CHROMIUM=/usr/bin/chromium] node browser/drive_posthog_js.mjs
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const tallyUrl = (process.env.TALLY_URL ?? '').replace(/\/$/, '');
const writeKey = process.env.TALLY_WRITE_KEY;
const run = process.env.RUN_ID ?? 'run';
const executablePath = process.env.CHROMIUM ?? '/usr/bin/chromium';
if (!tallyUrl || !writeKey) {
  console.error('TALLY_URL and TALLY_WRITE_KEY are required');
  process.exit(2);
}

const e2eDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const posthogDir = path.join(e2eDir, 'node_modules', 'posthog-js');
const posthogVersion = JSON.parse(fs.readFileSync(path.join(posthogDir, 'package.json'), 'utf8')).version;
const arrayJs = fs.readFileSync(path.join(posthogDir, 'dist', 'array.js'));

// The user-agent properties posthog-js derives itself; denied here so Tally derives them.
const UA_PROPERTIES = ['$browser', '$browser_version', '$os', '$os_version', '$device_type'];

const page = `<!doctype html>
<html><head><meta charset="utf-8"><title>Tally e2e ${run}</title>
<script src="/static/array.js"></script>
<script>
  posthog.init(${JSON.stringify(writeKey)}, {
    api_host: ${JSON.stringify(tallyUrl)},
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
  if (req.url === '/' || req.url.startsWith('/pricing')) {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(page);
  } else if (req.url === '/static/array.js') {
    res.writeHead(200, { 'content-type': 'application/javascript' });
    res.end(arrayJs);
  } else {
    res.writeHead(404);
    res.end();
  }
});
await new Promise((resolve) => site.listen(0, '127.0.0.1', resolve));
const siteUrl = `http://127.0.0.1:${site.address().port}`;

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
    encoding = 'base64';
  } else {
    text = body.toString('utf8');
    encoding = 'json';
  }
  const parsed = JSON.parse(text);
  return { encoding, events: Array.isArray(parsed) ? parsed : parsed.batch ?? [parsed] };
}

const requests = [];
const pageErrors = [];
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
  ],
});
let exitCode = 0;
try {
  // Headless Chromium says "HeadlessChrome" in its User-Agent, which posthog-js treats
  // as a bot and drops every event for. The visitor this test stands for runs Chrome:
  // the same User-Agent with that one word changed, in the header and in navigator.
  const probe = await browser.newPage();
  const headlessUserAgent = await probe.evaluate(() => navigator.userAgent);
  await probe.close();
  const context = await browser.newContext({ userAgent: headlessUserAgent.replace('HeadlessChrome/', 'Chrome/') });
  const tab = await context.newPage();
  tab.on('pageerror', (err) => pageErrors.push(String(err)));
  tab.on('requestfinished', async (request) => {
    if (!request.url().startsWith(tallyUrl)) return;
    const url = new URL(request.url());
    const response = await request.response();
    const entry = {
      method: request.method(),
      path: url.pathname,
      query: url.search,
      compression: url.searchParams.get('compression'),
      content_encoding: request.headers()['content-encoding'] ?? null,
      content_type: request.headers()['content-type'] ?? null,
      status: response ? response.status() : null,
      cors_allow_origin: response ? (await response.allHeaders())['access-control-allow-origin'] ?? null : null,
      events: [],
    };
    const body = request.postDataBuffer();
    if (body && entry.status === 200) {
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
  });
  tab.on('requestfailed', (request) => {
    if (request.url().startsWith(tallyUrl)) {
      requests.push({ method: request.method(), path: new URL(request.url()).pathname, failure: request.failure()?.errorText ?? 'failed', events: [] });
    }
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

  // posthog-js batches events and sends them on a timer; wait until every expected
  // event has been acknowledged by Tally.
  const expected = ['$pageview', 'clicked_cta', '$identify', 'purchase_completed'];
  const delivered = () => new Set(requests.filter((r) => r.status === 200).flatMap((r) => r.events.map((e) => e.event)));
  const deadline = Date.now() + 30000;
  while (!expected.every((name) => delivered().has(name)) && Date.now() < deadline) {
    await tab.waitForTimeout(100);
  }
  const missing = expected.filter((name) => !delivered().has(name));
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
      page_errors: pageErrors,
    }),
  );
} finally {
  await browser.close();
  site.close();
}
process.exit(exitCode);
