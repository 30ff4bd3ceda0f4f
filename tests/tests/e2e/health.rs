//! Health and metrics endpoints answer while the server runs.

use herald_tests::{Herald, WS_TIMEOUT, WsClient, metric_value};

#[tokio::test]
async fn healthz_readyz_and_metrics_answer_200() {
    let herald = Herald::start();
    let health = herald.get("/healthz").await;
    assert_eq!((health.status, health.text().trim()), (200, "ok"));
    let ready = herald.get("/readyz").await;
    assert_eq!((ready.status, ready.text().trim()), (200, "ready"));
    let metrics = herald.get("/metrics").await;
    assert_eq!(metrics.status, 200);
    let content_type = metrics.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("text/plain"),
        "Prometheus text format: {content_type}"
    );
    assert!(metrics.text().contains("herald_"), "{}", metrics.text());
    assert_eq!(
        metric_value(&metrics.text(), "herald_ready", &[]),
        1.0,
        "herald_ready follows /readyz: {}",
        metrics.text()
    );
}

#[tokio::test]
async fn metrics_count_connections_and_deliveries() {
    let herald = Herald::start();
    let mut ws = WsClient::connect(&herald.ws_url("/ws")).await;
    ws.subscribe("public").await;
    let text = herald.metrics().await;
    assert_eq!(
        metric_value(&text, "herald_connections", &[("transport", "ws")]),
        1.0,
        "{text}"
    );

    herald.publish("public", "1").await;
    ws.next_message(WS_TIMEOUT).await;
    // Counted once the write has returned on the server, which may be a
    // moment after the client has read it: poll briefly.
    let deadline = std::time::Instant::now() + WS_TIMEOUT;
    loop {
        let text = herald.metrics().await;
        let delivered = metric_value(
            &text,
            "herald_messages_delivered_total",
            &[("transport", "ws")],
        );
        if delivered >= 1.0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
