//! Channel lifecycle: one-off channels are freed once their history expires and nobody listens,
//! so a million of them do not leak; a channel with a subscriber keeps its epoch and offsets.

use std::time::{Duration, Instant};

use herald_tests::{Herald, WS_TIMEOUT, WsClient, metric_value};

const FREE_TIMEOUT: Duration = Duration::from_secs(15);

async fn history_channels(herald: &Herald) -> f64 {
    metric_value(&herald.metrics().await, "herald_history_channels", &[])
}

#[tokio::test]
async fn one_off_channels_are_freed_and_watched_ones_kept() {
    let herald = Herald::builder()
        .env("HERALD_HISTORY_TTL_SECS", "1")
        .start();
    let mut ws = WsClient::connect(&herald.ws_url("/ws")).await;
    ws.subscribe("watched").await;
    let first = herald.publish("watched", "1").await;
    assert_eq!(ws.next_message(WS_TIMEOUT).await.position, first);

    let one_offs: Vec<String> = (0..500).map(|i| format!("notice:{i}")).collect();
    let names: Vec<&str> = one_offs.iter().map(String::as_str).collect();
    herald.publish_batch(&names, "{}").await;
    assert_eq!(history_channels(&herald).await, 501.0);

    let started = Instant::now();
    while history_channels(&herald).await > 1.0 {
        assert!(
            started.elapsed() < FREE_TIMEOUT,
            "one-off channels still held after {FREE_TIMEOUT:?}: {}",
            history_channels(&herald).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        metric_value(&herald.metrics().await, "herald_history_messages", &[]),
        0.0,
        "expired messages are gone too"
    );

    // The watched channel was kept: same epoch, the offsets go on.
    let second = herald.publish("watched", "2").await;
    assert_eq!(second.epoch, first.epoch);
    assert_eq!(second.offset, first.offset + 1);
    assert_eq!(ws.next_message(WS_TIMEOUT).await.position, second);
}
