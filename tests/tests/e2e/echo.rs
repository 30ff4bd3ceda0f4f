//! `GET /ws/echo`, the Autobahn conformance route: off by default, loopback
//! only, and on the same codec and limits as `/ws`.

use std::time::Duration;

use herald_tests::{Herald, Request, WS_TIMEOUT, WsClient, WsEvent, free_port};

#[tokio::test]
async fn echo_route_returns_each_message_as_it_came_under_the_ws_limits() {
    let herald = Herald::builder()
        .env("HERALD_TESTING_WS_ECHO", "true")
        .start();
    let mut ws = WsClient::connect_silent(&herald.ws_url("/ws/echo")).await;
    ws.send_text("héllo").await;
    assert_eq!(
        ws.next_event(WS_TIMEOUT).await,
        WsEvent::Text("héllo".into())
    );
    ws.send_binary(&[0, 1, 255]).await;
    assert_eq!(
        ws.next_event(WS_TIMEOUT).await,
        WsEvent::Binary(vec![0, 1, 255])
    );
    let at_limit = "x".repeat(4096);
    ws.send_text(&at_limit).await;
    assert_eq!(ws.next_event(WS_TIMEOUT).await, WsEvent::Text(at_limit));

    // Just over the default connection.max_frame_bytes (4096), as on /ws.
    ws.send_text(&"x".repeat(4097)).await;
    assert_eq!(ws.expect_close(WS_TIMEOUT).await.0, 1009);
}

#[tokio::test]
async fn echo_route_is_off_by_default() {
    let herald = Herald::start();
    let answer = Request::get(herald.addr, "/ws/echo")
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await;
    assert_eq!(answer.status, 404, "{answer:?}");
}

#[test]
fn echo_route_refuses_to_start_on_a_non_loopback_listen() {
    // A site with a secret, so that the dev site's own loopback rule is not what refuses it.
    let toml = format!(
        "listen = \"0.0.0.0:{}\"\n\n[publish]\nsecret = \"a-secret-of-16-bytes-or-more\"\n\n\
         [testing]\nws_echo = true\n",
        free_port()
    );
    let finished = Herald::builder()
        .config_toml(toml)
        .no_listen_flag()
        .arg("--check-config")
        .run_to_exit(Duration::from_secs(20));
    assert_eq!(finished.status.code(), Some(64), "{}", finished.stderr);
    assert!(
        finished.stderr.contains("testing.ws_echo"),
        "{}",
        finished.stderr
    );
}
