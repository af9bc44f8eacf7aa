// Sends a known set of events through the unmodified PostHog and Segment Node SDKs to
// a running Tally server. The Rust end-to-end test (crates/tally/tests/it/sdk_e2e.rs)
// starts the server, runs this script, then checks what landed through the read API.
//
// Usage: TALLY_URL=http://127.0.0.1:PORT TALLY_WRITE_KEY=... RUN_ID=abc node send_with_sdks.mjs
import { PostHog } from 'posthog-node';
import { Analytics } from '@segment/analytics-node';

const url = process.env.TALLY_URL;
const writeKey = process.env.TALLY_WRITE_KEY;
const run = process.env.RUN_ID ?? 'run';
if (!url || !writeKey) {
  console.error('TALLY_URL and TALLY_WRITE_KEY are required');
  process.exit(2);
}

// --- PostHog: capture, identify (anonymous -> identified), alias, group, $set/$set_once.
const posthog = new PostHog(writeKey, { host: url, flushAt: 5, flushInterval: 100 });
posthog.on('error', (err) => {
  console.error('posthog-node error:', err);
  process.exitCode = 1;
});
const anon = `ph-anon-${run}`;
const user = `ph-user-${run}`;
posthog.capture({ distinctId: anon, event: '$pageview', properties: { $current_url: 'https://example.com/pricing', plan_seen: 'pro' } });
posthog.capture({ distinctId: anon, event: 'clicked_signup', properties: { button: 'hero', amount: 12.5 } });
posthog.identify({ distinctId: user, properties: { $set: { email: `${run}@example.com`, plan: 'pro' }, $set_once: { first_seen_via: 'sdk' }, $anon_distinct_id: anon } });
posthog.alias({ distinctId: user, alias: `ph-alias-${run}` });
posthog.groupIdentify({ groupType: 'company', groupKey: `co-${run}`, properties: { name: 'Acme Inc', employees: 42 } });
posthog.capture({ distinctId: user, event: 'purchase', properties: { amount: 99.9, currency: 'EUR' }, groups: { company: `co-${run}` } });
await posthog.shutdown();

// --- Segment: track, identify, alias, group, page, screen, with Basic-auth write key.
const segment = new Analytics({ writeKey, host: url, flushAt: 4, flushInterval: 100, maxRetries: 3 });
let segmentErrors = 0;
segment.on('error', (err) => {
  segmentErrors += 1;
  console.error('segment error:', err);
});
const segAnon = `seg-anon-${run}`;
const segUser = `seg-user-${run}`;
segment.track({ anonymousId: segAnon, event: 'Viewed Docs', properties: { section: 'api' } });
segment.identify({ userId: segUser, anonymousId: segAnon, traits: { email: `seg-${run}@example.com`, plan: 'team' } });
segment.alias({ userId: segUser, previousId: `seg-old-${run}` });
segment.group({ userId: segUser, groupId: `seg-co-${run}`, traits: { name: 'Globex', industry: 'energy' } });
segment.page({ userId: segUser, name: 'Pricing', properties: { url: 'https://example.com/pricing', path: '/pricing' } });
segment.screen({ userId: segUser, name: 'Home' });
segment.track({ userId: segUser, event: 'Order Completed', properties: { revenue: 49, currency: 'USD' }, messageId: `seg-msg-${run}` });
await segment.closeAndFlush({ timeout: 10000 });
if (segmentErrors > 0) process.exitCode = 1;

console.log(JSON.stringify({ posthog: 6, segment: 7 }));
