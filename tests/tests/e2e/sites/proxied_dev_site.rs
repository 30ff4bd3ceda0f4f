//! The dev site behind a proxy (docs/security.md): the dev site trusts loopback, and a proxy on the
//! same machine makes every internet request come from loopback. So the dev site refuses every
//! request that carries `Forwarded`, `X-Forwarded-For` or `Via` with 403 `proxied_dev_site`, on
//! every route, while a site with a secret serves proxied requests as usual.

use herald_tests::{Delivery, Herald, Request, Site, WsClient, publish_body, publish_results};

use super::support::{
    Connect, expect_sse_error, expect_stream, sse_with_headers, start, ws_handshake,
};

/// Each header a proxy adds, as nginx, a standard proxy and a caching proxy write them.
const PROXY_HEADERS: [(&str, &str); 3] = [
    ("X-Forwarded-For", "203.0.113.7"),
    ("Forwarded", "for=203.0.113.7;proto=https"),
    ("Via", "1.1 proxy.example"),
];

#[tokio::test]
async fn the_dev_site_refuses_proxied_requests_on_every_route() {
    let herald = Herald::start();
    let body = publish_body("public", r#""through a proxy""#);
    for (name, value) in PROXY_HEADERS {
        let what = format!("with {name}");
        Request::post(herald.addr, "/api/publish")
            .header(name, value)
            .json_body(&body)
            .send()
            .await
            .assert_error(403, "proxied_dev_site");
        Request::post(herald.addr, "/api/deliver")
            .header(name, value)
            .json_body(&Delivery::user([1], "1").body())
            .send()
            .await
            .assert_error(403, "proxied_dev_site");
        Request::get(herald.addr, "/api/history?channel=user:1")
            .header(name, value)
            .send()
            .await
            .assert_error(403, "proxied_dev_site");
        let options = Connect {
            headers: vec![(name, value.to_string())],
            source: None,
        };
        let refused = ws_handshake(&herald.ws_url("/ws"), &options).await;
        assert_eq!(refused.err(), Some(403), "/ws {what}: no upgrade at all");
        expect_sse_error(
            herald.addr,
            "/sse?channel=user:1",
            &[(name, value)],
            403,
            "proxied_dev_site",
        )
        .await;
    }
    // Straight from loopback, the dev site serves as always.
    let mut ws = WsClient::connect(&herald.ws_url("/ws")).await;
    ws.subscribe("public").await;
    let position = herald.publish("public", r#""direct""#).await;
    let message = ws.next_message(herald_tests::WS_TIMEOUT).await;
    assert_eq!(message.position, position);
    let mut sse = sse_with_headers(herald.addr, "/sse?channel=public", &[]).await;
    expect_stream(&mut sse, &["public"]).await;
}

#[tokio::test]
async fn a_site_with_a_secret_serves_proxied_requests() {
    let a = Site::new("a");
    let herald = start("", &[&a]);
    for (name, value) in PROXY_HEADERS {
        let response = a
            .publish_request(herald.addr, "public", r#""via nginx""#)
            .header(name, value)
            .send()
            .await;
        publish_results(&response, &["public"]);
        let options = Connect {
            headers: vec![(name, value.to_string())],
            source: None,
        };
        let url = herald.ws_url(&format!("/ws?key={}", a.key));
        assert!(
            ws_handshake(&url, &options).await.is_ok(),
            "/ws with {name}"
        );
    }
}
