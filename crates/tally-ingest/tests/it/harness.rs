//! The test server: a recording sink whose failure mode can be switched, a fixed key
//! directory, and the router served with connect info like the real binary does.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tally_core::{Event, EventBatch, EventSink, SinkError, TenantDirectory, TenantId};
use tally_ingest::{IngestConfig, IngestState, router};

pub const KEY: &str = "phc_test_key";
pub const OTHER_KEY: &str = "phc_other_key";
pub const TENANT: TenantId = TenantId(7);
pub const OTHER_TENANT: TenantId = TenantId(8);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    None,
    Overloaded,
    Internal,
    /// A bug in the sink: it panics inside `submit`.
    Panic,
}

pub struct RecordingSink {
    batches: Mutex<Vec<EventBatch>>,
    failure: Mutex<Failure>,
}

impl RecordingSink {
    pub fn fail_with(&self, failure: Failure) {
        *self.failure.lock().unwrap() = failure;
    }

    pub fn batches(&self) -> Vec<EventBatch> {
        self.batches.lock().unwrap().clone()
    }

    pub fn events(&self) -> Vec<Event> {
        self.batches().into_iter().flat_map(|b| b.events).collect()
    }

    pub fn take_events(&self) -> Vec<Event> {
        let batches = std::mem::take(&mut *self.batches.lock().unwrap());
        batches.into_iter().flat_map(|b| b.events).collect()
    }
}

#[async_trait::async_trait]
impl EventSink for RecordingSink {
    async fn submit(&self, batch: EventBatch) -> Result<(), SinkError> {
        // Copy out first: a panicking arm must not poison the lock.
        let failure = *self.failure.lock().unwrap();
        match failure {
            Failure::None => {}
            Failure::Overloaded => {
                return Err(SinkError::Overloaded {
                    reason: "test backlog",
                    retry_after: Duration::from_millis(2500),
                });
            }
            Failure::Internal => return Err(SinkError::Internal("disk on fire at /var/x".into())),
            Failure::Panic => panic!("test sink panicked on purpose"),
        }
        self.batches.lock().unwrap().push(batch);
        Ok(())
    }
}

struct Keys(HashMap<String, TenantId>);

#[async_trait::async_trait]
impl TenantDirectory for Keys {
    async fn tenant_for_write_key(&self, write_key: &str) -> Option<TenantId> {
        self.0.get(write_key).copied()
    }
}

pub struct TestServer {
    pub url: String,
    pub sink: Arc<RecordingSink>,
    pub http: reqwest::Client,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::with_config(IngestConfig::default()).await
    }

    pub async fn with_config(config: IngestConfig) -> TestServer {
        let sink = Arc::new(RecordingSink {
            batches: Mutex::new(Vec::new()),
            failure: Mutex::new(Failure::None),
        });
        let keys = Keys(HashMap::from([
            (KEY.to_string(), TENANT),
            (OTHER_KEY.to_string(), OTHER_TENANT),
        ]));
        let state = IngestState::new(sink.clone(), Arc::new(keys), config).unwrap();
        let app = router(Arc::new(state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
            .unwrap();
        });
        TestServer {
            url: format!("http://{addr}"),
            sink,
            http: reqwest::Client::new(),
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// POSTs JSON and returns status and parsed body.
    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap();
        read(r).await
    }

    /// POSTs raw bytes with extra headers.
    pub async fn post_bytes(
        &self,
        path: &str,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut req = self.http.post(self.url(path)).body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        read(req.send().await.unwrap()).await
    }

    /// POSTs to the native endpoint with the test key in a Bearer header.
    pub async fn native(&self, events: Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.url("/v1/events/batch"))
            .bearer_auth(KEY)
            .json(&serde_json::json!({ "events": events }))
            .send()
            .await
            .unwrap();
        read(r).await
    }
}

pub async fn read(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}
