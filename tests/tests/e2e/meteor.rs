//! The Meteor controller port (`--meteor-listen`): StatusNet's Meteor plugin code publishes
//! unchanged (`tests/meteor/publish.php`, run with `php` from `scripts/install-test-deps.sh`), and
//! Herald's own WebSocket and SSE subscribers get the notice's JSON byte for byte; the other
//! commands answer what is true, in order; bad lines get `ERR` and leave nothing behind.

use std::{path::PathBuf, time::Duration};

use herald_tests::{
    Herald, Redis, SSE_TIMEOUT, SseClient, WS_TIMEOUT, WsClient, free_port, metric_value,
};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};

const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// A Herald with the Meteor port on a free loopback port; returns it and the port.
pub(crate) fn start_with_meteor(channelbase: &str) -> (Herald, u16) {
    let port = free_port();
    let herald = Herald::builder()
        .arg("--meteor-listen")
        .arg(format!("127.0.0.1:{port}"))
        .env("HERALD_METEOR_CHANNELBASE", channelbase)
        .start();
    (herald, port)
}

/// A controller connection, read line by line.
struct Controller {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
}

impl Controller {
    async fn connect(port: u16) -> Controller {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect to the Meteor port");
        let (reader, writer) = stream.into_split();
        Controller {
            reader: BufReader::new(reader),
            writer,
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.expect("write");
    }

    /// The next reply line, with its CRLF checked and taken off.
    async fn line(&mut self) -> String {
        let mut line = String::new();
        let read = tokio::time::timeout(REPLY_TIMEOUT, self.reader.read_line(&mut line))
            .await
            .expect("a reply line in time")
            .expect("read");
        assert!(read > 0, "the port closed instead of replying");
        assert!(line.ends_with("\r\n"), "replies end in CRLF: {line:?}");
        line.truncate(line.len() - 2);
        line
    }

    /// Asserts that the port closes the connection with nothing more to say.
    async fn expect_closed(&mut self) {
        let mut rest = Vec::new();
        tokio::time::timeout(REPLY_TIMEOUT, self.reader.read_to_end(&mut rest))
            .await
            .expect("closed in time")
            .expect("read");
        assert!(rest.is_empty(), "more after the end: {rest:?}");
    }
}

fn publish_php() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("meteor/publish.php");
    assert!(path.is_file(), "no {}", path.display());
    path
}

/// Runs the plugin's publish code; returns the JSON it encoded and its replies per channel.
pub(crate) async fn php_publish(
    port: u16,
    channelbase: &str,
    paths: &[&str],
) -> (String, Vec<String>) {
    php_publish_notice(port, channelbase, paths, 123).await
}

/// [`php_publish`] of the notice with id `id`.
pub(crate) async fn php_publish_notice(
    port: u16,
    channelbase: &str,
    paths: &[&str],
    id: u64,
) -> (String, Vec<String>) {
    let output = tokio::process::Command::new("php")
        .arg(publish_php())
        .env("NOTICE_ID", id.to_string())
        .arg("127.0.0.1")
        .arg(port.to_string())
        .arg(channelbase)
        .args(paths)
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!("cannot run php ({e}): scripts/install-test-deps.sh installs php-cli")
        });
    let stdout = String::from_utf8(output.stdout).expect("UTF-8");
    assert!(
        output.status.success(),
        "php publish.php: {}\nstdout: {stdout}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let mut lines = stdout.lines();
    let json = lines.next().expect("the notice's JSON").to_owned();
    (json, lines.map(str::to_owned).collect())
}

#[tokio::test]
async fn the_plugins_own_publish_code_reaches_websocket_and_sse_byte_for_byte() {
    let (herald, port) = start_with_meteor("mysite");
    let mut ws = WsClient::connect(&herald.ws_url("/ws")).await;
    ws.subscribe("all-evan").await;
    let mut sse = SseClient::connect(herald.addr, "/sse?channel=public", None).await;
    sse.assert_stream();
    sse.expect_subscribed("public").await;

    let (json, replies) = php_publish(port, "mysite", &["public", "all/evan", "tag/rust"]).await;
    assert!(
        json.contains(r#"It's a \"quoted\" notice with a back\\slash"#) && json.contains(r"\/"),
        "the notice has what addslashes and json_encode escape: {json}"
    );
    assert_eq!(
        replies,
        [
            "mysite-public\tOK\t1",
            "mysite-all-evan\tOK\t1",
            "mysite-tag-rust\tOK\t1",
        ],
        "one reply per ADDMESSAGE, its id the channel's offset"
    );

    let on_ws = ws.next_message(WS_TIMEOUT).await;
    assert_eq!(on_ws.channel, "all-evan", "the channel base comes off");
    assert_eq!(on_ws.data, json, "WebSocket: the JSON as PHP encoded it");
    assert_eq!(on_ws.position.offset, 1);
    let on_sse = sse.next_message(SSE_TIMEOUT).await;
    assert_eq!(on_sse.channel, "public");
    assert_eq!(on_sse.data, json, "SSE: the JSON as PHP encoded it");

    // The same socket code again: a second notice, the next ids.
    let (_, replies) = php_publish(port, "mysite", &["all/evan"]).await;
    assert_eq!(replies, ["mysite-all-evan\tOK\t2"]);
    assert_eq!(ws.next_message(WS_TIMEOUT).await.position.offset, 2);
}

/// On the Redis engine a message published through the Meteor port of one node is an ordinary
/// publish: a subscriber on another node gets it, and a client resuming there recovers it.
#[tokio::test]
async fn on_redis_a_meteor_publish_reaches_other_nodes_and_is_recovered() {
    let redis = Redis::start();
    let port = free_port();
    let a = crate::redis::node(&redis.url())
        .arg("--meteor-listen")
        .arg(format!("127.0.0.1:{port}"))
        .start();
    let b = crate::redis::node(&redis.url()).start();
    let mut on_b = WsClient::connect(&b.ws_url("/ws")).await;
    on_b.subscribe("public").await;

    let (json, replies) = php_publish(port, "", &["public"]).await;
    assert_eq!(replies, ["public\tOK\t1"]);
    let first = on_b.next_message(WS_TIMEOUT).await;
    assert_eq!((first.position.offset, &first.data), (1, &json));

    // Published while nobody listens on node A; a client resuming there from the first gets it.
    let (_, replies) = php_publish(port, "", &["public"]).await;
    assert_eq!(replies, ["public\tOK\t2"]);
    let mut on_a = WsClient::connect(&a.ws_url("/ws")).await;
    let subscribed = on_a
        .subscribe_since("public", &first.position.epoch, 1)
        .await;
    assert_eq!(subscribed["recovered"], true, "{subscribed}");
    let missed = on_a.next_message(WS_TIMEOUT).await;
    assert_eq!((missed.position.offset, &missed.data), (2, &json));
    assert_eq!(on_b.next_message(WS_TIMEOUT).await.position.offset, 2);
}

#[tokio::test]
async fn commands_sent_together_are_answered_in_order_with_what_is_true() {
    let (herald, port) = start_with_meteor("");
    let mut subscribers = Vec::new();
    for channel in ["public", "public", "tag-rust"] {
        let mut ws = WsClient::connect(&herald.ws_url("/ws")).await;
        ws.subscribe(channel).await;
        subscribers.push(ws);
    }

    let mut controller = Controller::connect(port).await;
    controller
        .send(
            b"ADDMESSAGE public {\\\"n\\\":1}\r\n\
              COUNTSUBSCRIBERS public\n\
              COUNTSUBSCRIBERS nobody\n\
              LISTCHANNELS\n\
              SHOWSTATS\n\
              QUIT\n",
        )
        .await;
    assert_eq!(controller.line().await, "OK\t1");
    assert_eq!(controller.line().await, "OK 2");
    assert_eq!(controller.line().await, "OK 0", "an unknown channel");
    let mut listed = Vec::new();
    loop {
        let line = controller.line().await;
        if line == "--EOT--" {
            break;
        }
        listed.push(line);
    }
    assert_eq!(
        listed,
        ["OK", "public(1/2)", "tag-rust(0/1)"],
        "sorted by name: messages kept / subscribers; COUNTSUBSCRIBERS created nothing"
    );
    assert_eq!(controller.line().await, "OK");
    let uptime = controller.line().await;
    assert!(uptime.starts_with("uptime: "), "{uptime}");
    let mut stats = Vec::new();
    loop {
        let line = controller.line().await;
        if line == "--EOT--" {
            break;
        }
        stats.push(line);
    }
    assert_eq!(
        stats,
        [
            "channel_count: 2",
            "total_requests: 5",
            "current_subscribers: 3",
            "unique_messages: 1",
        ]
    );
    assert_eq!(controller.line().await, "OK", "QUIT");
    controller.expect_closed().await;

    for ws in &mut subscribers[..2] {
        let message = ws.next_message(WS_TIMEOUT).await;
        assert_eq!(message.data, r#"{"n":1}"#, "addslashes undone");
    }
}

#[tokio::test]
async fn bad_lines_get_err_and_leave_nothing_published_or_stuck() {
    let (herald, port) = start_with_meteor("");
    let mut ws = WsClient::connect(&herald.ws_url("/ws")).await;
    ws.subscribe("public").await;
    let mut controller = Controller::connect(port).await;

    controller.send(b"HELLO\n").await;
    assert_eq!(controller.line().await, "ERR Invalid command syntax");
    controller.send(b"ADDMESSAGE public\n").await;
    assert_eq!(controller.line().await, "ERR Invalid command syntax");
    controller.send(b"ADDMESSAGE bad/name {}\n").await;
    let reply = controller.line().await;
    assert!(reply.starts_with("ERR Invalid channel name"), "{reply}");

    // Longer than any message the site accepts, escaped: refused whole, in pieces.
    let mut long = b"ADDMESSAGE public \"".to_vec();
    long.extend(std::iter::repeat_n(b'x', 300 * 1024));
    for piece in long.chunks(16 * 1024) {
        controller.send(piece).await;
    }
    controller.send(b"\"\n").await;
    let reply = controller.line().await;
    assert!(reply.starts_with("ERR Line too long"), "{reply}");

    // Within the line bound, over the site's 64 KiB per message.
    let mut large = b"ADDMESSAGE public ".to_vec();
    large.extend(std::iter::repeat_n(b'y', 70 * 1024));
    large.push(b'\n');
    controller.send(&large).await;
    let reply = controller.line().await;
    assert!(reply.starts_with("ERR Message too large"), "{reply}");

    // The connection still works, and nothing refused was published: this is offset 1.
    controller
        .send(b"ADDMESSAGE public {\\\"ok\\\":true}\n")
        .await;
    assert_eq!(controller.line().await, "OK\t1");
    // Text that is not JSON goes out as a JSON string.
    controller
        .send(b"ADDMESSAGE public it\\'s plain text\n")
        .await;
    assert_eq!(controller.line().await, "OK\t2");

    let first = ws.next_message(WS_TIMEOUT).await;
    assert_eq!(
        (first.position.offset, first.data.as_str()),
        (1, r#"{"ok":true}"#)
    );
    let second = ws.next_message(WS_TIMEOUT).await;
    assert_eq!(
        (second.position.offset, second.data.as_str()),
        (2, r#""it's plain text""#)
    );

    // A peer that drops mid-line publishes nothing either.
    let mut dropped = Controller::connect(port).await;
    dropped.send(b"ADDMESSAGE public {\\\"half\\\":").await;
    drop(dropped);
    controller.send(b"ADDMESSAGE public 3\n").await;
    assert_eq!(controller.line().await, "OK\t3");
    assert_eq!(ws.next_message(WS_TIMEOUT).await.data, "3");

    // Counted by result: the bad channel and the message too large were refused publishes
    // (lines that were no command at all are not publishes).
    let metrics = herald.metrics().await;
    let count = |result| {
        metric_value(
            &metrics,
            "herald_compat_publishes_total",
            &[("port", "meteor"), ("result", result)],
        )
    };
    assert_eq!(
        (count("published"), count("refused")),
        (3.0, 2.0),
        "{metrics}"
    );
}

/// A controller that sends and never reads its replies stalls only itself: another publisher on
/// the port is answered at once.
#[tokio::test]
async fn a_peer_that_never_reads_stalls_no_other_publisher() {
    let (herald, port) = start_with_meteor("");
    let mut ws = WsClient::connect(&herald.ws_url("/ws")).await;
    ws.subscribe("public").await;
    let mut deaf = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    // Far more replies than two socket buffers hold, none of them read.
    let flood = "SHOWSTATS\n".repeat(100_000);
    let writing = tokio::spawn(async move {
        let _ = deaf.write_all(flood.as_bytes()).await;
        deaf
    });
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut controller = Controller::connect(port).await;
    controller.send(b"ADDMESSAGE public 1\n").await;
    assert_eq!(controller.line().await, "OK\t1");
    assert_eq!(ws.next_message(WS_TIMEOUT).await.data, "1");
    writing.abort();
}

/// The site's publish rate holds on the port as on HTTP: past the burst, `ERR` and nothing
/// published.
#[tokio::test]
async fn past_the_sites_publish_rate_an_addmessage_is_refused() {
    let port = free_port();
    let herald = Herald::builder()
        .arg("--meteor-listen")
        .arg(format!("127.0.0.1:{port}"))
        .env("HERALD_LIMITS_PUBLISH_RATE", "1")
        .env("HERALD_LIMITS_PUBLISH_BURST", "1")
        .start();
    let mut ws = WsClient::connect(&herald.ws_url("/ws")).await;
    ws.subscribe("public").await;
    let mut controller = Controller::connect(port).await;
    controller
        .send(b"ADDMESSAGE public 1\nADDMESSAGE public 2\n")
        .await;
    assert_eq!(controller.line().await, "OK\t1");
    let reply = controller.line().await;
    assert!(
        reply.starts_with("ERR Publish rate limit reached; nothing was published"),
        "{reply}"
    );
    assert_eq!(ws.next_message(WS_TIMEOUT).await.data, "1");
}

#[test]
fn the_port_stays_on_loopback_unless_the_network_is_allowed() {
    let finished = Herald::builder()
        .arg("--meteor-listen")
        .arg("0.0.0.0:4671")
        .arg("--check-config")
        .run_to_exit(Duration::from_secs(20));
    assert_eq!(finished.status.code(), Some(64), "{}", finished.stderr);
    assert!(
        finished.stderr.contains("meteor.listen"),
        "names the key: {}",
        finished.stderr
    );
}

/// `meteor.udp_listen`: one `ADDMESSAGE` per datagram, published with no reply; a datagram over
/// 8192 bytes, or any other command, publishes nothing and is counted as refused.
#[tokio::test]
async fn the_udp_listener_publishes_each_addmessage_datagram() {
    let (port, udp_port) = (free_port(), free_port());
    let herald = Herald::builder()
        .arg("--meteor-listen")
        .arg(format!("127.0.0.1:{port}"))
        .env("HERALD_METEOR_UDP_LISTEN", format!("127.0.0.1:{udp_port}"))
        .start();
    let mut ws = WsClient::connect(&herald.ws_url("/ws")).await;
    ws.subscribe("public").await;
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    udp.connect(("127.0.0.1", udp_port)).await.expect("connect");

    let oversized = format!("ADDMESSAGE public \"{}\"", "x".repeat(8192));
    for datagram in [oversized.as_str(), "LISTCHANNELS", "ADDMESSAGE bad%name 1"] {
        udp.send(datagram.as_bytes()).await.expect("send");
    }
    udp.send(b"ADDMESSAGE public {\\\"via\\\":\\\"udp\\\"}\n")
        .await
        .expect("send");
    let message = ws.next_message(WS_TIMEOUT).await;
    assert_eq!(
        (message.position.offset, message.data.as_str()),
        (1, r#"{"via":"udp"}"#),
        "only the good datagram was published, addslashes undone"
    );
    // Counted once the publish returns, which may be a moment after the delivery: polled.
    let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
    loop {
        let metrics = herald_tests::Request::get(herald.addr, "/metrics")
            .send()
            .await
            .text();
        let count = |result| {
            metric_value(
                &metrics,
                "herald_compat_publishes_total",
                &[("port", "meteor"), ("result", result)],
            )
        };
        let counts = (count("published"), count("refused"));
        if counts == (1.0, 3.0) || tokio::time::Instant::now() > deadline {
            assert_eq!(counts, (1.0, 3.0), "published, refused");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
