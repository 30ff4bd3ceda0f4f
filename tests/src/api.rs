//! Shortcuts for Herald's HTTP API (publish, history, metrics, health) on a running [`Herald`].

use serde_json::{Value, json};

use crate::herald::Herald;
use crate::http::{Request, Response};
use crate::message::Position;

// === impl Herald: the HTTP API ===

impl Herald {
    /// `GET path`.
    pub async fn get(&self, path: &str) -> Response {
        Request::get(self.addr, path).send().await
    }

    /// `POST /api/publish` with `body` sent byte for byte, from 127.0.0.1 and without a secret.
    pub async fn publish_raw(&self, body: &str) -> Response {
        Request::post(self.addr, "/api/publish")
            .json_body(body)
            .send()
            .await
    }

    /// Publishes `data` (JSON text, sent byte for byte) to one channel; asserts a 200 and returns
    /// the position Herald assigned.
    pub async fn publish(&self, channel: &str, data: &str) -> Position {
        let channel_json = Value::from(channel).to_string();
        let response = self
            .publish_raw(&format!(r#"{{"channel":{channel_json},"data":{data}}}"#))
            .await;
        let positions = publish_results(&response, &[channel]);
        positions.into_iter().next().expect("one result")
    }

    /// Publishes `data` to several channels in one request; asserts a 200 and returns the
    /// positions in request order.
    pub async fn publish_batch(&self, channels: &[&str], data: &str) -> Vec<Position> {
        let channels_json = json!(channels).to_string();
        let response = self
            .publish_raw(&format!(r#"{{"channels":{channels_json},"data":{data}}}"#))
            .await;
        publish_results(&response, channels)
    }

    /// `GET /metrics` as text; asserts a 200.
    pub async fn metrics(&self) -> String {
        let response = self.get("/metrics").await;
        assert_eq!(response.status, 200, "/metrics: {}", response.text());
        response.text()
    }
}

/// Checks a publish answer and returns its positions, in the order of `channels`.
pub fn publish_results(response: &Response, channels: &[&str]) -> Vec<Position> {
    assert_eq!(response.status, 200, "publish answer: {}", response.text());
    let json = response.json();
    let results = json["results"]
        .as_array()
        .unwrap_or_else(|| panic!("publish answer has no results array: {json}"));
    assert_eq!(
        results.len(),
        channels.len(),
        "one result per channel: {json}"
    );
    results
        .iter()
        .zip(channels)
        .map(|(result, channel)| {
            assert_eq!(
                result["channel"], *channel,
                "results follow the request order: {json}"
            );
            Position::from_json(result)
        })
        .collect()
}
