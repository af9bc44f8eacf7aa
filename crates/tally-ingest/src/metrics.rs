//! Metric names and their closed label sets. Labels are bounded by construction:
//! endpoints and rejection reasons are enums, statuses a short list; never a tenant,
//! distinct id, key or path.

use axum::http::StatusCode;

pub const REQUESTS_TOTAL: &str = "tally_ingest_requests_total";
pub const EVENTS_TOTAL: &str = "tally_ingest_events_total";
pub const BYTES_TOTAL: &str = "tally_ingest_bytes_total";
pub const REJECTED_EVENTS_TOTAL: &str = "tally_ingest_rejected_events_total";
pub const ACK_SECONDS: &str = "tally_ingest_ack_seconds";

/// The ingest endpoints, as metric label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    PostHogCapture,
    PostHogBatch,
    SegmentTrack,
    SegmentIdentify,
    SegmentAlias,
    SegmentGroup,
    SegmentPage,
    SegmentScreen,
    SegmentBatch,
    NativeBatch,
}

impl Endpoint {
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::PostHogCapture => "posthog_capture",
            Endpoint::PostHogBatch => "posthog_batch",
            Endpoint::SegmentTrack => "segment_track",
            Endpoint::SegmentIdentify => "segment_identify",
            Endpoint::SegmentAlias => "segment_alias",
            Endpoint::SegmentGroup => "segment_group",
            Endpoint::SegmentPage => "segment_page",
            Endpoint::SegmentScreen => "segment_screen",
            Endpoint::SegmentBatch => "segment_batch",
            Endpoint::NativeBatch => "native_batch",
        }
    }
}

/// The status as a label: the codes ingest answers with, anything else folded.
pub fn status_label(status: StatusCode) -> &'static str {
    match status.as_u16() {
        200 => "200",
        204 => "204",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        413 => "413",
        500 => "500",
        503 => "503",
        _ => "other",
    }
}
