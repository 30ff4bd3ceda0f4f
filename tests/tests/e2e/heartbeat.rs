//! Heartbeats: Herald pings every connection from its shared ticker, and closes a WebSocket that stays silent (`error` frame, then 4101).

use std::time::Duration;

use futures_util::StreamExt;
use herald_tests::{Herald, SSE_TIMEOUT, SseClient, WS_TIMEOUT, WsClient};
use tokio_tungstenite::tungstenite::Message;

/// Generous: the ticker runs every second in these tests.
const TICK_TIMEOUT: Duration = Duration::from_secs(10);

fn herald() -> Herald {
    Herald::builder()
        .env("HERALD_CONNECTION_PING_INTERVAL_SECS", "1")
        .env("HERALD_CONNECTION_IDLE_TIMEOUT_SECS", "2")
        .start()
}

/// Reads `client`'s socket until `n` Ping frames have arrived; tungstenite answers each with a
/// Pong, which is what keeps the client alive.
async fn read_pings(client: &mut WsClient, n: usize) {
    let mut pings = 0;
    while pings < n {
        let frame = tokio::time::timeout(TICK_TIMEOUT, client.stream_mut().next())
            .await
            .unwrap_or_else(|_| panic!("no Ping within {TICK_TIMEOUT:?} ({pings} of {n} so far)"))
            .expect("connection open")
            .expect("frame");
        match frame {
            Message::Ping(_) => pings += 1,
            other => panic!("expected only Pings, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn silent_websocket_is_closed_4101_and_an_answering_one_stays() {
    let herald = herald();
    let mut answering = WsClient::connect(&herald.ws_url("/ws")).await;
    assert_eq!(
        answering.welcome["ping_interval_ms"], 1000,
        "welcome: {}",
        answering.welcome
    );
    let mut silent = WsClient::connect(&herald.ws_url("/ws")).await;
    silent.subscribe("public").await;
    answering.subscribe("public").await;

    // Four ticks are well past the two-second idle time-out; `silent` read nothing meanwhile and
    // so answered no Ping.
    read_pings(&mut answering, 4).await;
    let (frames, code, reason) = silent.read_until_close(WS_TIMEOUT).await;
    assert_eq!((code, reason.as_str()), (4101, "idle_timeout"));
    // Like every 40xx/41xx close, it comes right behind an `error` frame with its code.
    assert_eq!(
        frames.len(),
        1,
        "one error frame, then the close: {frames:?}"
    );
    let error: serde_json::Value = serde_json::from_str(&frames[0]).expect("JSON");
    assert_eq!(
        (error["type"].as_str(), error["code"].as_str()),
        (Some("error"), Some("idle_timeout")),
        "{error}"
    );

    let position = herald.publish("public", r#""still alive""#).await;
    assert_eq!(
        answering.next_message(WS_TIMEOUT).await.position,
        position,
        "the answering client stays"
    );
}

#[tokio::test]
async fn sse_streams_get_ping_comments() {
    let herald = herald();
    let mut sse = SseClient::connect(herald.addr, "/sse?channel=public", None).await;
    sse.assert_stream();
    sse.expect_subscribed("public").await;
    sse.next_comment(TICK_TIMEOUT).await;
    sse.next_comment(TICK_TIMEOUT).await;
    // SSE streams have no idle time-out: a stream that is read stays open past it.
    let position = herald.publish("public", "1").await;
    assert_eq!(sse.next_message(SSE_TIMEOUT).await.position, position);
}
