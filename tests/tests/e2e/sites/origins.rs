//! `allowed_origins`: a browser page on another origin cannot open a WebSocket (403 before the
//! upgrade: no cross-site WebSocket hijacking) or an event stream; the listed origin and clients
//! without an `Origin` header (apps, servers) can.

use herald_tests::{SSE_TIMEOUT, Site, SseClient, WS_TIMEOUT, WsClient};

use super::support::{
    Bystanders, Connect, RawWs, assert_rejections, expect_sse_error, expect_stream, publish,
    sse_with_headers, start, ws_handshake, ws_url,
};

const ALLOWED: &str = "https://a.example";
const EVIL: &str = "https://evil.example";

/// Sends a WebSocket upgrade request by hand with `Origin` and reads the answer as an error
/// response: its status and `error.code`.
async fn upgrade_with_origin(
    herald: &herald_tests::Herald,
    path: &str,
    origin: &str,
) -> (u16, String) {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Origin: {origin}\r\n\r\n",
        herald.addr
    );
    // SseClient reads any HTTP answer and its JSON error body; the request goes to /ws.
    let mut answer = SseClient::connect_raw(herald.addr, request.as_bytes()).await;
    let status = answer.status;
    assert_ne!(status, 101, "{path} from {origin}: upgraded");
    (status, answer.error_code().await)
}

#[tokio::test]
async fn other_origins_are_refused_before_the_upgrade() {
    let a = Site::new("a").allowed_origins(&[ALLOWED]);
    let b = Site::new("b");
    let herald = start("", &[&a, &b]);
    let mut bystanders = Bystanders::connect(&herald, &[&a, &b]).await;
    bystanders.publish(&herald, "before").await;

    assert_eq!(
        upgrade_with_origin(&herald, "/ws?key=a-key", EVIL).await,
        (403, "origin_not_allowed".to_owned()),
        "a WebSocket from another origin"
    );
    let refused = ws_handshake(
        &ws_url(&herald, &a, ""),
        &Connect {
            headers: vec![("Origin", EVIL.to_owned())],
            source: None,
        },
    )
    .await;
    assert_eq!(refused.err(), Some(403), "what a browser's WebSocket sees");
    expect_sse_error(
        herald.addr,
        "/sse?key=a-key&channel=public",
        &[("Origin", EVIL)],
        403,
        "origin_not_allowed",
    )
    .await;
    bystanders.publish(&herald, "during").await;

    // The allowed origin, and no Origin at all, are served.
    let mut allowed = RawWs::connect(
        &ws_url(&herald, &a, ""),
        &Connect {
            headers: vec![("Origin", ALLOWED.to_owned())],
            source: None,
        },
    )
    .await;
    allowed.subscribe("public").await;
    let mut no_origin = WsClient::connect(&ws_url(&herald, &a, "")).await;
    no_origin.subscribe("public").await;
    let mut allowed_sse = sse_with_headers(
        herald.addr,
        "/sse?key=a-key&channel=public",
        &[("Origin", ALLOWED)],
    )
    .await;
    expect_stream(&mut allowed_sse, &["public"]).await;
    // Site b lists no origins: any origin is fine there.
    let mut b_page = RawWs::connect(
        &ws_url(&herald, &b, ""),
        &Connect {
            headers: vec![("Origin", EVIL.to_owned())],
            source: None,
        },
    )
    .await;
    b_page.subscribe("public").await;

    let on_a = publish(&herald, &a, "public", r#""to a""#).await;
    bystanders.published(0, r#""to a""#);
    let on_b = publish(&herald, &b, "public", r#""to b""#).await;
    bystanders.published(1, r#""to b""#);
    assert_eq!(allowed.next_message().await.position, on_a);
    assert_eq!(no_origin.next_message(WS_TIMEOUT).await.position, on_a);
    assert_eq!(allowed_sse.next_message(SSE_TIMEOUT).await.position, on_a);
    assert_eq!(b_page.next_message().await.position, on_b);

    bystanders.publish(&herald, "after").await;
    bystanders.assert_received().await;
    assert_rejections(&herald, "a", "origin_not_allowed", 3).await;
}
