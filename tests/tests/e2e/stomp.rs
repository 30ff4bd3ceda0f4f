//! The STOMP publish port (`stomp.listen`): StatusNet's Orbited plugin publishing through the
//! STOMP wire format of its bundled `Stomp.php` (`tests/orbited/publish.php`, run with `php`)
//! reaches Herald's WebSocket and SSE subscribers byte for byte, on the channel the Meteor plugin
//! would name; credentials are the site's key and publish secret; every refusal is an `ERROR`
//! frame, after which the connection closes and nothing is published.

use std::{path::PathBuf, time::Duration};

use herald_tests::{
    Herald, SSE_TIMEOUT, Site, SseClient, WS_TIMEOUT, WsClient, free_port, metric_value, sites_toml,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// A Herald serving `site` with the STOMP port (channel base `mysite`); returns it and the port.
fn start(site: &Site) -> (Herald, u16) {
    let port = free_port();
    let top = format!("[stomp]\nlisten = \"127.0.0.1:{port}\"\nchannelbase = \"mysite\"\n");
    let herald = Herald::builder()
        .config_toml(sites_toml(&top, &[site]))
        .start();
    (herald, port)
}

fn publish_php() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("orbited/publish.php");
    assert!(path.is_file(), "no {}", path.display());
    path
}

/// Runs the Orbited publish flow; returns its exit code and the lines it printed.
async fn php_publish(port: u16, login: &str, passcode: &str, paths: &[&str]) -> (i32, Vec<String>) {
    let output = tokio::process::Command::new("php")
        .arg(publish_php())
        .args([
            "127.0.0.1",
            &port.to_string(),
            login,
            passcode,
            "mysite",
            "1",
        ])
        .args(paths)
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!("cannot run php ({e}): scripts/install-test-deps.sh installs php-cli")
        });
    let stdout = String::from_utf8(output.stdout).expect("UTF-8");
    let code = output.status.code().unwrap_or(-1);
    assert!(
        matches!(code, 0 | 3),
        "php publish.php: {}\nstdout: {stdout}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    (code, stdout.lines().map(str::to_owned).collect())
}

fn ws_url(herald: &Herald, site: &Site) -> String {
    herald.ws_url(&format!("/ws?key={}", site.key))
}

#[tokio::test]
async fn the_orbited_plugins_frames_reach_websocket_and_sse_byte_for_byte() {
    let site = Site::new("blog");
    let (herald, port) = start(&site);
    let mut ws = WsClient::connect(&ws_url(&herald, &site)).await;
    ws.subscribe("all-evan").await;
    let path = format!("/sse?key={}&channel=public", site.key);
    let mut sse = SseClient::connect(herald.addr, &path, None).await;
    sse.assert_stream();
    sse.expect_subscribed("public").await;

    let (code, lines) = php_publish(port, &site.key, site.secret(), &["public", "all/evan"]).await;
    assert_eq!(code, 0, "{lines:?}");
    let json = &lines[0];
    assert_eq!(
        &lines[1..],
        [
            "CONNECTED",
            "/mysite/public\tRECEIPT\tr-public",
            "/mysite/all/evan\tRECEIPT\tr-all/evan",
        ]
    );
    let on_ws = ws.next_message(WS_TIMEOUT).await;
    assert_eq!(
        on_ws.channel, "all-evan",
        "/all/evan is the Meteor plugin's all-evan"
    );
    assert_eq!(&on_ws.data, json, "WebSocket: the JSON as PHP encoded it");
    let on_sse = sse.next_message(SSE_TIMEOUT).await;
    assert_eq!(on_sse.channel, "public");
    assert_eq!(&on_sse.data, json, "SSE: the JSON as PHP encoded it");
}

#[tokio::test]
async fn wrong_credentials_get_an_error_frame_and_publish_nothing() {
    let site = Site::new("blog");
    let (herald, port) = start(&site);
    let mut ws = WsClient::connect(&ws_url(&herald, &site)).await;
    ws.subscribe("public").await;

    for (login, passcode) in [
        (site.key.as_str(), "not-the-secret-0123"),
        ("someone-else", site.secret()),
        (site.key.as_str(), ""),
    ] {
        let (code, lines) = php_publish(port, login, passcode, &["public"]).await;
        assert_eq!(code, 3, "{lines:?}");
        assert!(lines[1].starts_with("ERROR login failed"), "{lines:?}");
    }
    // The right ones still work, and this is the channel's first message.
    let (code, _) = php_publish(port, &site.key, site.secret(), &["public"]).await;
    assert_eq!(code, 0);
    assert_eq!(ws.next_message(WS_TIMEOUT).await.position.offset, 1);
}

/// Sends `bytes` on a fresh connection and reads what the port answers until it closes.
async fn exchange(port: u16, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    stream.write_all(bytes).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(REPLY_TIMEOUT, stream.read_to_end(&mut answer))
        .await
        .expect("the port answers and closes in time")
        .expect("read");
    String::from_utf8(answer).expect("UTF-8")
}

#[tokio::test]
async fn every_refusal_is_an_error_frame_then_the_close() {
    let site = Site::new("blog");
    let (herald, port) = start(&site);
    let mut ws = WsClient::connect(&ws_url(&herald, &site)).await;
    ws.subscribe("public").await;
    let connect = format!(
        "CONNECT\naccept-version:1.2\nlogin:{}\npasscode:{}\n\n\0",
        site.key,
        site.secret()
    );
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            b"SEND\ndestination:/public\n\n1\0".to_vec(),
            "send CONNECT first",
        ),
        (b"hello\n\n\0".to_vec(), "malformed frame"),
        (
            format!("{connect}{connect}").into_bytes(),
            "already connected",
        ),
        (
            format!("{connect}SEND\n\n1\0").into_bytes(),
            "SEND needs a destination header",
        ),
        (
            format!("{connect}SEND\ndestination:/mysite/bad name\n\n1\0").into_bytes(),
            "invalid destination",
        ),
        (
            format!("{connect}SUBSCRIBE\ndestination:/public\nid:0\n\n\0").into_bytes(),
            "SUBSCRIBE is not served on this port",
        ),
        (
            format!(
                "{connect}SEND\ndestination:/public\n\n\"{}\"\0",
                "x".repeat(70 * 1024)
            )
            .into_bytes(),
            "Message too large",
        ),
        (
            format!(
                "{connect}SEND\ndestination:/public\n\n{}",
                "y".repeat(200 * 1024)
            )
            .into_bytes(),
            "frame too large",
        ),
    ];
    for (bytes, expected) in cases {
        let answer = exchange(port, &bytes).await;
        let error = answer
            .split("\0\n")
            .find(|frame| frame.starts_with("ERROR\n"))
            .unwrap_or_else(|| panic!("no ERROR frame for {expected:?}: {answer:?}"));
        assert!(
            error.contains(&format!("message:{expected}")),
            "{expected:?}: {error:?}"
        );
        assert!(
            answer.ends_with("\0\n"),
            "frames end in NUL and LF: {answer:?}"
        );
    }

    // STOMP 1.2 with a content-length body, a receipt and DISCONNECT's receipt; nothing
    // refused above was published, so this is offset 1.
    let answer = exchange(
        port,
        format!(
            "{connect}SEND\ndestination:/mysite/public\ncontent-length:7\nreceipt:a\n\n{{\"n\":1}}\0\
             DISCONNECT\nreceipt:b\n\n\0"
        )
        .as_bytes(),
    )
    .await;
    let frames: Vec<&str> = answer.split("\0\n").filter(|f| !f.is_empty()).collect();
    assert_eq!(frames.len(), 3, "{answer:?}");
    assert!(frames[0].starts_with("CONNECTED\n") && frames[0].contains("\nversion:1.2\n"));
    assert_eq!(frames[1], "RECEIPT\nreceipt-id:a\n\n");
    assert_eq!(frames[2], "RECEIPT\nreceipt-id:b\n\n");
    let message = ws.next_message(WS_TIMEOUT).await;
    assert_eq!(
        (message.position.offset, message.data.as_str()),
        (1, r#"{"n":1}"#)
    );

    // Counted by result: no destination, a bad one and a message too large were refused SENDs.
    let metrics = herald.metrics().await;
    let count = |result| {
        metric_value(
            &metrics,
            "herald_compat_publishes_total",
            &[("port", "stomp"), ("result", result)],
        )
    };
    assert_eq!(
        (count("published"), count("refused")),
        (1.0, 3.0),
        "{metrics}"
    );
}

#[test]
fn the_port_stays_on_loopback_unless_the_network_is_allowed() {
    let finished = Herald::builder()
        .arg("--stomp-listen")
        .arg("0.0.0.0:61613")
        .arg("--check-config")
        .run_to_exit(Duration::from_secs(20));
    assert_eq!(finished.status.code(), Some(64), "{}", finished.stderr);
    assert!(
        finished.stderr.contains("stomp.listen"),
        "{}",
        finished.stderr
    );
}
