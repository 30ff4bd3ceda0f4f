//! `SIGHUP`: sites added, removed and changed at once (the removed site's clients told
//! `site_removed`, the others untouched), and an invalid file that leaves the running
//! configuration in place.

use std::time::Duration;

use herald_tests::{ConfigFile, SSE_TIMEOUT, Site, SseClient, SseNext, WS_TIMEOUT, sites_toml};
use serde_json::Value;

use super::support::{
    Bystanders, connect, connect_with_token, expect_stream, expect_ws_refused, publish,
    reload_and_wait, reloads, start_with_file,
};

#[tokio::test]
async fn a_reload_adds_and_removes_sites_and_leaves_the_others_alone() {
    let old = Site::new("old");
    let stay = Site::new("stay");
    let new = Site::new("new");
    let file = ConfigFile::new(&sites_toml("", &[&old, &stay]));
    let herald = start_with_file(&file);

    let mut bystanders = Bystanders::connect(&herald, &[&stay]).await;
    let mut stay_sse =
        SseClient::connect(herald.addr, "/sse?key=stay-key&channel=public", None).await;
    expect_stream(&mut stay_sse, &["public"]).await;
    let mut old_ws = connect(&herald, &old).await;
    old_ws.subscribe("public").await;
    let mut old_sse =
        SseClient::connect(herald.addr, "/sse?key=old-key&channel=public", None).await;
    expect_stream(&mut old_sse, &["public"]).await;
    bystanders.publish(&herald, "before").await;
    let position = publish(&herald, &old, "public", r#""old news""#).await;
    assert_eq!(old_ws.next_message(WS_TIMEOUT).await.position, position);
    assert_eq!(old_sse.next_message(SSE_TIMEOUT).await.position, position);
    let fits_until_now = format!(r#""{}""#, "x".repeat(100));
    publish(&herald, &stay, "other", &fits_until_now).await;

    // Remove `old`, add `new`, and change `stay`: a new key, private, a lower message limit.
    let stay_changed = Site {
        key: "stay-key-2".into(),
        ..stay.clone()
    }
    .private()
    .limit("max_message_bytes", 50);
    file.write(&sites_toml("", &[&stay_changed, &new]));
    reload_and_wait(&herald, "ok", 1).await;

    let (frames, code, reason) = old_ws.read_until_close(WS_TIMEOUT).await;
    assert_eq!((code, reason.as_str()), (4010, "site_removed"));
    let error: Value =
        serde_json::from_str(frames.last().expect("an error frame before the close"))
            .expect("JSON");
    assert_eq!(
        (error["type"].as_str(), error["code"].as_str()),
        (Some("error"), Some("site_removed")),
        "{frames:?}"
    );
    let event = old_sse.next_event(SSE_TIMEOUT).await;
    assert_eq!(event.event, "error", "{event:?}");
    assert_eq!(event.json()["code"], "site_removed", "{event:?}");
    assert_eq!(old_sse.try_next_event(SSE_TIMEOUT).await, SseNext::Ended);

    // The changed site's open connections (anonymous, by the old key) keep their subscriptions.
    bystanders.publish(&herald, "after").await;
    bystanders.assert_received().await;
    for label in ["before", "after"] {
        let message = stay_sse.next_message(SSE_TIMEOUT).await;
        let data: Value = serde_json::from_str(&message.data).expect("JSON");
        assert_eq!(data["bystander"], label, "{message:?}");
    }

    // The new site serves; the removed one is unknown; the changed site has its new key, mode
    // and limit for new connections and publishes.
    let mut new_ws = connect(&herald, &new).await;
    new_ws.subscribe("public").await;
    let mut new_sse =
        SseClient::connect(herald.addr, "/sse?key=new-key&channel=public", None).await;
    expect_stream(&mut new_sse, &["public"]).await;
    let position = publish(&herald, &new, "public", r#""hello new""#).await;
    assert_eq!(position.offset, 1);
    assert_eq!(new_ws.next_message(WS_TIMEOUT).await.position, position);
    assert_eq!(new_sse.next_message(SSE_TIMEOUT).await.position, position);
    expect_ws_refused(&herald.ws_url("/ws?key=old-key"), "site_unknown", 4004).await;
    old.publish_request(herald.addr, "public", "1")
        .send()
        .await
        .assert_error(401, "unauthorized");
    expect_ws_refused(&herald.ws_url("/ws?key=stay-key"), "site_unknown", 4004).await;
    expect_ws_refused(&herald.ws_url("/ws?key=stay-key-2"), "token_required", 4002).await;
    let mut member =
        connect_with_token(&herald, &stay_changed, &stay_changed.token("1", 600)).await;
    member.subscribe("public").await;
    let position = publish(&herald, &stay_changed, "public", r#""members""#).await;
    bystanders.published(0, r#""members""#);
    assert_eq!(member.next_message(WS_TIMEOUT).await.position, position);
    bystanders.assert_received().await;
    stay.publish_request(herald.addr, "other", &fits_until_now)
        .send()
        .await
        .assert_error(413, "payload_too_large");
    assert_eq!(reloads(&herald, "error").await, 0.0);
}

#[tokio::test]
async fn an_invalid_reload_keeps_the_running_configuration() {
    let a = Site::new("a");
    let b = Site::new("b");
    let file = ConfigFile::new(&sites_toml("", &[&a, &b]));
    let mut herald = start_with_file(&file);
    let mut bystanders = Bystanders::connect(&herald, &[&a, &b]).await;
    bystanders.publish(&herald, "before").await;

    let bad_configs = [
        ("not TOML", "[[sites]\nid = \n".to_owned()),
        (
            "a secret under 16 bytes",
            sites_toml("", &[&a, &b.clone().with_secrets(&["short"])]),
        ),
        (
            "two sites with one key",
            sites_toml(
                "",
                &[
                    &a,
                    &Site {
                        key: a.key.clone(),
                        ..b.clone()
                    },
                ],
            ),
        ),
        (
            "a bad site id",
            sites_toml("", &[&a, &b, &Site::new("Bad Id!")]),
        ),
    ];
    for (i, (what, toml)) in bad_configs.iter().enumerate() {
        file.write(toml);
        let count = u32::try_from(i + 1).expect("small");
        reload_and_wait(&herald, "error", count).await;
        assert!(
            herald.wait_exit(Duration::ZERO).is_none(),
            "Herald keeps running after a reload with {what}"
        );
        // The sites as they were still publish and serve.
        bystanders.publish(&herald, what).await;
    }
    bystanders.assert_received().await;
    assert_eq!(reloads(&herald, "ok").await, 0.0);
    let mut late = connect(&herald, &b).await;
    late.subscribe("public").await;
    let position = publish(&herald, &b, "public", r#""late""#).await;
    bystanders.published(1, r#""late""#);
    assert_eq!(late.next_message(WS_TIMEOUT).await.position, position);

    // A valid file after all that is taken.
    let c = Site::new("c");
    file.write(&sites_toml("", &[&a, &b, &c]));
    reload_and_wait(&herald, "ok", 1).await;
    let mut on_c = connect(&herald, &c).await;
    on_c.subscribe("public").await;
    let position = publish(&herald, &c, "public", r#""c""#).await;
    assert_eq!(on_c.next_message(WS_TIMEOUT).await.position, position);
    bystanders.publish(&herald, "after").await;
    bystanders.assert_received().await;
}
