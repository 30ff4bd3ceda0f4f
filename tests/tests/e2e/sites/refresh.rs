//! Token expiry and refresh: a connection lives at most one tick past its token's `exp` (close
//! 4003, SSE `event: error`), unless a `refresh` frame with a new token of the same user and site
//! moved the expiry; a refused refresh leaves the old token in force.

use std::time::Duration;

use herald_tests::{
    SSE_TIMEOUT, Site, SseClient, SseEvent, SseNext, Token, WS_TIMEOUT, WsEvent, unix_now,
    unix_now_f64,
};
use serde_json::{Value, json};

use super::support::{Bystanders, connect_with_token, expect_stream, publish, start};

/// One tick a second; the idle time-out stays out of the way.
const TOP: &str = "[connection]\nping_interval_secs = 1\nidle_timeout_secs = 30\n";

/// How long after `exp` a connection may still be open: one tick, plus room for a busy machine.
const PAST_EXP: f64 = 1.0 + 2.0;

fn refresh(token: &str) -> Value {
    json!({"type": "refresh", "token": token})
}

#[tokio::test]
async fn a_refreshed_token_keeps_the_connection_past_the_first_expiry() {
    let a = Site::new("a");
    let b = Site::new("b");
    let herald = start(TOP, &[&a, &b]);
    let first = Token::new("1", unix_now() + 3).kid(&a.key);
    let first_exp = first.exp();
    let mut ws = connect_with_token(&herald, &a, &first.sign(a.secret())).await;
    assert_eq!(ws.welcome["expires_at"], first_exp, "{}", ws.welcome);
    ws.subscribe("user:1").await;

    let now = unix_now();
    let refused = [
        (
            "another user's token",
            Token::new("2", now + 60).kid(&a.key).sign(a.secret()),
            "token_invalid",
        ),
        (
            "a token of site b",
            Token::new("1", now + 60).kid(&b.key).sign(b.secret()),
            "token_invalid",
        ),
        (
            "an expired token",
            Token::new("1", now - 5).kid(&a.key).sign(a.secret()),
            "token_expired",
        ),
        ("not a token", "garbage".to_owned(), "token_invalid"),
    ];
    for (what, token, code) in &refused {
        ws.send_json(&refresh(token)).await;
        let error = ws.next_json(WS_TIMEOUT).await;
        assert_eq!(
            (error["type"].as_str(), error["code"].as_str()),
            (Some("error"), Some(*code)),
            "refresh with {what}: {error}"
        );
    }
    let position = publish(&herald, &a, "user:1", r#""still here""#).await;
    assert_eq!(
        ws.next_message(WS_TIMEOUT).await.position,
        position,
        "refused refreshes leave the connection working"
    );

    let second = Token::new("1", unix_now() + 60).kid(&a.key);
    ws.send_json(&refresh(&second.sign(a.secret()))).await;
    let answer = ws.next_json(WS_TIMEOUT).await;
    assert_eq!(answer["type"], "refreshed", "{answer}");
    assert_eq!(answer["expires_at"], second.exp(), "{answer}");

    // Past the first expiry and the tick after it, nothing arrives and nothing closes.
    let wait = (first_exp as f64 + PAST_EXP - unix_now_f64()).max(0.0);
    match ws.next_event(Duration::from_secs_f64(wait)).await {
        WsEvent::Timeout => {}
        other => panic!("a refreshed connection got {other:?} around its first expiry"),
    }
    let position = publish(&herald, &a, "user:1", r#""after the first exp""#).await;
    assert_eq!(ws.next_message(WS_TIMEOUT).await.position, position);
}

#[tokio::test]
async fn without_a_refresh_the_connection_ends_at_expiry() {
    let a = Site::new("a");
    let b = Site::new("b");
    let herald = start(TOP, &[&a, &b]);
    let mut bystanders = Bystanders::connect(&herald, &[&a, &b]).await;
    let exp = unix_now() + 2;
    let token = Token::new("1", exp).kid(&a.key).sign(a.secret());

    let mut ws = connect_with_token(&herald, &a, &token).await;
    ws.subscribe("public").await;
    // A refused refresh leaves the old token, and its expiry, in force.
    let other_user = Token::for_user("2", 60).kid(&a.key).sign(a.secret());
    ws.send_json(&refresh(&other_user)).await;
    ws.expect_error("token_invalid").await;
    let mut sse = SseClient::connect(
        herald.addr,
        &format!("/sse?channel=public&token={token}"),
        None,
    )
    .await;
    expect_stream(&mut sse, &["public"]).await;
    bystanders.publish(&herald, "before").await;

    let ws_end = async {
        let (frames, code, reason) = ws.read_until_close(WS_TIMEOUT).await;
        (unix_now_f64(), frames, code, reason)
    };
    let sse_end = async {
        let mut events: Vec<SseEvent> = Vec::new();
        loop {
            let event = sse.next_event(SSE_TIMEOUT).await;
            if event.event == "error" {
                let at = unix_now_f64();
                let next = sse.try_next_event(SSE_TIMEOUT).await;
                return (at, event, events, next);
            }
            events.push(event);
        }
    };
    let ((ws_at, frames, code, reason), (sse_at, error, sse_events, after)) =
        tokio::join!(ws_end, sse_end);

    assert_eq!((code, reason.as_str()), (4003, "token_expired"));
    let last: Value =
        serde_json::from_str(frames.last().expect("frames before the close")).expect("JSON");
    assert_eq!(
        (last["type"].as_str(), last["code"].as_str()),
        (Some("error"), Some("token_expired")),
        "{frames:?}"
    );
    assert_eq!(
        frames.len(),
        2,
        "the bystanders' message, then the error: {frames:?}"
    );
    assert_eq!(error.json()["code"], "token_expired", "{error:?}");
    assert_eq!(after, SseNext::Ended, "the stream ends after token_expired");
    assert_eq!(sse_events.len(), 1, "{sse_events:?}");
    for (what, at) in [("WebSocket", ws_at), ("SSE", sse_at)] {
        assert!(
            at >= exp as f64 - 0.05,
            "{what} ended {:.2} s before the token expired",
            exp as f64 - at
        );
        assert!(
            at <= exp as f64 + PAST_EXP,
            "{what} ended {:.2} s after the token expired",
            at - exp as f64
        );
    }

    // The others serve on; the SSE client comes back with a new token and its last event id and
    // loses nothing.
    bystanders.publish(&herald, "after").await;
    let missed = publish(&herald, &a, "public", r#""missed""#).await;
    bystanders.published(0, r#""missed""#);
    bystanders.assert_received().await;
    let cursor = sse.last_event_id().to_owned();
    let fresh = Token::for_user("1", 600).kid(&a.key).sign(a.secret());
    let mut again = SseClient::connect(
        herald.addr,
        &format!("/sse?channel=public&token={fresh}&last_event_id={cursor}"),
        None,
    )
    .await;
    let (_, subscribed) = {
        again.assert_stream();
        again.expect_subscribed("public").await
    };
    assert_eq!(subscribed["recovered"], true, "{subscribed}");
    let after_message = again.next_message(SSE_TIMEOUT).await;
    assert!(
        after_message.data.contains(r#""after""#),
        "{after_message:?}"
    );
    assert_eq!(again.next_message(SSE_TIMEOUT).await.position, missed);
}
