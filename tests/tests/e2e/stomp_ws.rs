//! STOMP over WebSocket (`GET /stomp`): a subscriber on the maintained `@stomp/stompjs` client
//! (`tests/browser/stomp.mjs`, in Node) and a native WebSocket subscriber both receive what the
//! Orbited plugin's `Stomp.php` wire format publishes, byte for byte; receipts, unsubscribe and
//! heart-beats work; `SEND` and every malformed frame get an `ERROR` frame and the connection
//! keeps its other subscriptions; subprotocols are negotiated.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use herald_tests::{Herald, Request, Site, WS_TIMEOUT, WsClient, free_port, sites_toml};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{Message, client::IntoClientRequest, http::HeaderValue},
};

use crate::node_script::{Node, browser_dir, check_dependencies};

const STEP_TIMEOUT: Duration = Duration::from_secs(20);

/// A Herald serving `site` with the STOMP publish port (channel base `mysite`); returns it and
/// the port.
fn start(site: &Site, extra: &str) -> (Herald, u16) {
    let port = free_port();
    let top =
        format!("{extra}\n[stomp]\nlisten = \"127.0.0.1:{port}\"\nchannelbase = \"mysite\"\n");
    let herald = Herald::builder()
        .config_toml(sites_toml(&top, &[site]))
        .start();
    (herald, port)
}

/// Runs the Orbited plugin's publish flow (`tests/orbited/publish.php`, no receipts) for the
/// notice with id `id`; returns the JSON it sent.
async fn orbited_publish(port: u16, site: &Site, paths: &[&str], id: u64) -> String {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("orbited/publish.php");
    let output = tokio::process::Command::new("php")
        .arg(path)
        .args([
            "127.0.0.1",
            &port.to_string(),
            &site.key,
            site.secret(),
            "mysite",
            "0",
        ])
        .args(paths)
        .env("NOTICE_ID", id.to_string())
        .output()
        .await
        .expect("run php: scripts/install-test-deps.sh installs php-cli");
    let stdout = String::from_utf8(output.stdout).expect("UTF-8");
    assert!(output.status.success(), "publish.php: {stdout}");
    stdout.lines().next().expect("the notice's JSON").to_owned()
}

#[test]
fn stompjs_and_native_subscribers_get_the_orbited_plugins_notices() {
    let browser_dir = browser_dir();
    check_dependencies(&browser_dir);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let site = Site::new("blog");
    let (herald, port) = start(&site, "[connection]\nping_interval_secs = 1\n");
    let mut native = runtime.block_on(WsClient::connect(
        &herald.ws_url(&format!("/ws?key={}", site.key)),
    ));
    runtime.block_on(native.subscribe("public"));

    let url = herald.ws_url(&format!("/stomp?key={}", site.key));
    let mut node = Node::spawn(&browser_dir, "stomp.mjs", &[&url]);
    assert_eq!(node.expect_prefix("CONNECTED ", STEP_TIMEOUT), "1.2");
    node.send("SUB sub-0 /mysite/public");
    node.expect("SUBSCRIBED sub-0", STEP_TIMEOUT);
    node.send("SUB sub-1 /mysite/all/evan");
    node.expect("SUBSCRIBED sub-1", STEP_TIMEOUT);

    let json = runtime.block_on(orbited_publish(port, &site, &["public", "all/evan"], 1));
    let on_native = runtime.block_on(native.next_message(WS_TIMEOUT));
    assert_eq!(
        (on_native.channel.as_str(), &on_native.data),
        ("public", &json)
    );
    let mut got = [
        message_line(&node.expect_prefix("MESSAGE ", STEP_TIMEOUT)),
        message_line(&node.expect_prefix("MESSAGE ", STEP_TIMEOUT)),
    ];
    got.sort();
    let public_id = format!("{}:1", on_native.position.epoch);
    assert_eq!(
        got[0],
        (
            "sub-0".into(),
            "/mysite/public".into(),
            public_id,
            json.clone()
        ),
        "a MESSAGE names its subscription and destination, its id is the channel's position, \
         and its body is the JSON byte for byte"
    );
    assert_eq!(
        (&got[1].0[..], &got[1].1[..], &got[1].3),
        ("sub-1", "/mysite/all/evan", &json)
    );
    assert!(got[1].2.ends_with(":1"), "{:?}", got[1]);

    // SEND is refused with an ERROR frame; the connection keeps its subscriptions.
    node.send("SEND /mysite/public {\"text\":\"from a browser\"}");
    let error = node.expect_prefix("ERROR ", STEP_TIMEOUT);
    assert!(error.starts_with("forbidden: "), "{error}");

    // Unsubscribed from public: the next notice reaches only all/evan. The native client gets
    // the public one first, so it was queued for stompjs (had it still been subscribed) before
    // the second publish.
    node.send("UNSUB sub-0");
    node.expect("UNSUBSCRIBED sub-0", STEP_TIMEOUT);
    let second = runtime.block_on(orbited_publish(port, &site, &["public"], 2));
    assert_eq!(
        runtime.block_on(native.next_message(WS_TIMEOUT)).data,
        second
    );
    let third = runtime.block_on(orbited_publish(port, &site, &["all/evan"], 3));
    let next = node.expect_prefix("MESSAGE ", STEP_TIMEOUT);
    assert!(
        next.starts_with("sub-1 /mysite/all/evan ") && next.ends_with(&third),
        "after UNSUBSCRIBE only sub-1 gets messages: {next}"
    );

    // Heart-beats flowed both ways for a few seconds without closing anything.
    std::thread::sleep(Duration::from_millis(2500));
    node.send("DONE");
    let beats: u32 = node
        .expect_prefix("BYE ", STEP_TIMEOUT)
        .parse()
        .expect("a count");
    assert!(beats >= 1, "stompjs saw no server heart-beat");
    node.finish();
    drop(herald);
}

/// A `MESSAGE` line of `stomp.mjs`: subscription, destination, message id and body.
fn message_line(line: &str) -> (String, String, String, String) {
    let mut parts = line.splitn(4, ' ');
    let mut next = || parts.next().unwrap_or_default().to_owned();
    (next(), next(), next(), next())
}

type Socket = WebSocketStream<TcpStream>;

/// A raw STOMP WebSocket offering `subprotocols`; answers the socket and the one chosen.
async fn raw_stomp(url: &str, subprotocols: &str) -> (Socket, Option<String>) {
    let mut request = url.into_client_request().expect("a request");
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_str(subprotocols).expect("a header"),
    );
    let authority = request.uri().authority().expect("a host").to_string();
    let tcp = TcpStream::connect(authority).await.expect("connect");
    let (socket, response) = tokio_tungstenite::client_async(request, tcp)
        .await
        .expect("the upgrade");
    let chosen = response
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (socket, chosen)
}

/// The next STOMP frame (skipping heart-beats).
async fn next_frame(socket: &mut Socket) -> String {
    loop {
        let message = tokio::time::timeout(WS_TIMEOUT, socket.next())
            .await
            .expect("a frame in time")
            .expect("the socket is open")
            .expect("a frame");
        if let Message::Text(text) = message
            && text.as_str() != "\n"
        {
            return text.to_string();
        }
    }
}

async fn send(socket: &mut Socket, frame: &str) {
    socket
        .send(Message::text(frame.to_owned()))
        .await
        .expect("send");
}

#[tokio::test]
async fn every_bad_frame_gets_an_error_frame_and_the_connection_keeps_working() {
    let site = Site::new("blog");
    let (herald, port) = start(&site, "");
    let url = herald.ws_url(&format!("/stomp?key={}", site.key));
    let (mut stomp, chosen) = raw_stomp(&url, "v10.stomp, v12.stomp").await;
    assert_eq!(
        chosen.as_deref(),
        Some("v12.stomp"),
        "the best version offered"
    );

    let cases = [
        (
            "SUBSCRIBE\ndestination:/mysite/public\nid:0\n\n\0",
            "bad_frame: send CONNECT first",
        ),
        (
            "hello\n\n\0",
            "bad_frame: malformed frame: a frame starts with its command in capitals",
        ),
    ];
    for (frame, message) in cases {
        send(&mut stomp, frame).await;
        let error = next_frame(&mut stomp).await;
        assert!(error.starts_with("ERROR\n"), "{error:?}");
        assert!(error.contains(&format!("message:{message}\n")), "{error:?}");
        assert!(
            error.ends_with("\0\n"),
            "STOMP frames end in NUL and LF: {error:?}"
        );
    }
    send(
        &mut stomp,
        "CONNECT\naccept-version:1.1,1.2\nhost:herald\n\n\0",
    )
    .await;
    let connected = next_frame(&mut stomp).await;
    assert!(
        connected.starts_with("CONNECTED\nversion:1.2\nheart-beat:"),
        "{connected:?}"
    );

    let cases = [
        (
            "SUBSCRIBE\nid:1\n\n\0",
            "bad_frame: SUBSCRIBE needs a destination header",
        ),
        (
            "SUBSCRIBE\ndestination:/bad name\nid:1\n\n\0",
            "invalid_channel: /bad name: invalid destination",
        ),
        (
            "UNSUBSCRIBE\nid:7\n\n\0",
            "not_subscribed: no subscription 7",
        ),
        (
            "ACK\nid:1\n\n\0",
            "bad_frame: ACK: subscriptions here are ack:auto",
        ),
        (
            "BEGIN\ntransaction:t\n\n\0",
            "bad_frame: BEGIN: transactions are not served",
        ),
        (
            "SEND\ndestination:/mysite/public\n\n{}\0",
            "forbidden: SEND",
        ),
        (
            "SUBSCRIBE\ndestination:/mysite/public\nid:1\n\n",
            "bad_frame: malformed frame: a WebSocket message holds one whole frame",
        ),
        ("CONNECT\n\n\0", "bad_frame: already connected"),
        (
            "SUBSCRIBE\ndestination:/mysite/user:9\nid:1\n\n\0",
            "forbidden: user:9: this channel needs a token for its user",
        ),
    ];
    for (frame, message) in cases {
        send(&mut stomp, frame).await;
        let error = next_frame(&mut stomp).await;
        assert!(error.starts_with("ERROR\n"), "{frame:?}: {error:?}");
        assert!(
            error.contains(&format!("message:{message}")),
            "{frame:?}: {error:?}"
        );
    }

    // Still connected: a subscription with a receipt, then the plugin's notice.
    send(
        &mut stomp,
        "SUBSCRIBE\ndestination:/mysite/public\nid:s1\nreceipt:r1\n\n\0",
    )
    .await;
    assert_eq!(
        next_frame(&mut stomp).await,
        "RECEIPT\nreceipt-id:r1\n\n\0\n"
    );
    // The same destination again, under another id.
    send(
        &mut stomp,
        "SUBSCRIBE\ndestination:/mysite/public\nid:s2\n\n\0",
    )
    .await;
    let error = next_frame(&mut stomp).await;
    assert!(
        error.contains("message:already_subscribed: /mysite/public: already subscribed"),
        "{error:?}"
    );
    let json = orbited_publish(port, &site, &["public"], 5).await;
    let message = next_frame(&mut stomp).await;
    assert!(
        message.starts_with("MESSAGE\nsubscription:s1\nmessage-id:"),
        "{message:?}"
    );
    assert!(
        message.contains("\ndestination:/mysite/public\n"),
        "{message:?}"
    );
    assert!(
        message.contains("\ncontent-type:application/json\n"),
        "{message:?}"
    );
    assert!(
        message.ends_with(&format!("\n\n{json}\0")),
        "the JSON byte for byte: {message:?}"
    );
    send(&mut stomp, "DISCONNECT\nreceipt:bye\n\n\0").await;
    assert_eq!(
        next_frame(&mut stomp).await,
        "RECEIPT\nreceipt-id:bye\n\n\0\n"
    );
}

#[tokio::test]
async fn subprotocols_are_negotiated_or_refused() {
    let site = Site::new("blog");
    let (herald, _) = start(&site, "");
    let url = herald.ws_url(&format!("/stomp?key={}", site.key));
    let (_, chosen) = raw_stomp(&url, "v11.stomp").await;
    assert_eq!(chosen.as_deref(), Some("v11.stomp"));
    let refused = Request::get(herald.addr, "/stomp")
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("Sec-WebSocket-Protocol", "mqtt")
        .send()
        .await;
    refused.assert_error(400, "bad_request");
    Request::get(herald.addr, "/stomp")
        .send()
        .await
        .assert_error(426, "upgrade_required");
}
