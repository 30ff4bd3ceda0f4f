//! Meteor's subscriber side (`GET /push/<hostid>/<mode>/<channel>…` and `/meteor.js`): a page
//! that loads `/meteor.js` and runs the Meteor plugin's `meteorupdater.js` flow renders what the
//! plugin's publish code sent, in Chromium, streaming and long-polling; the lines follow
//! Meteor's default templates, with the notice's JSON byte for byte inside them; `.r<id>`,
//! `.b<n>` and `.h` replay from history, on Redis across two nodes; `compat.user_timelines` makes
//! `all-<nick>` the user's timeline; bad URLs get their status and harm no other stream.

use std::{net::SocketAddr, time::Duration};

use herald_tests::{
    Herald, Redis, Request, Site, WS_TIMEOUT, WsClient, free_port, metric_value, sites_toml,
};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};

use crate::meteor::{php_publish, php_publish_notice, start_with_meteor};
use crate::node_script::{Node, browser_dir, check_dependencies};

const LINE_TIMEOUT: Duration = Duration::from_secs(10);
const READY_TIMEOUT: Duration = Duration::from_secs(45);
const SEE_TIMEOUT: Duration = Duration::from_secs(25);

/// A `/push` response read line by line: HTTP/1.0, so that the body is the bytes as sent,
/// ending when the server ends the response.
struct PushStream {
    status: u16,
    head: String,
    body: BufReader<TcpStream>,
}

impl PushStream {
    async fn open(addr: SocketAddr, path: &str) -> PushStream {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET {path} HTTP/1.0\r\nHost: herald\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut body = BufReader::new(stream);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            let read = tokio::time::timeout(LINE_TIMEOUT, body.read_line(&mut line))
                .await
                .expect("the response head in time")
                .expect("read");
            assert!(read > 0, "closed in the head: {head}");
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {head:?}"));
        PushStream { status, head, body }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// The next line, its CRLF checked and taken off; `None` at the end of the response.
    async fn line(&mut self) -> Option<String> {
        let mut line = String::new();
        let read = tokio::time::timeout(LINE_TIMEOUT, self.body.read_line(&mut line))
            .await
            .expect("a line in time")
            .expect("read");
        if read == 0 {
            return None;
        }
        assert!(line.ends_with("\r\n"), "Meteor lines end in CRLF: {line:?}");
        line.truncate(line.len() - 2);
        Some(line)
    }

    async fn expect_line(&mut self) -> String {
        self.line()
            .await
            .expect("a line, not the end of the response")
    }

    /// The next line as a message: `p(id,"channel","text")` → (id, channel, text).
    async fn message(&mut self) -> (i64, String, String) {
        let line = self.expect_line().await;
        parse_p(&line).unwrap_or_else(|| panic!("not a p() line: {line:?}"))
    }

    async fn expect_end(&mut self) {
        let mut rest = String::new();
        tokio::time::timeout(LINE_TIMEOUT, self.body.read_to_string(&mut rest))
            .await
            .expect("the response ends in time")
            .expect("read");
        assert!(rest.is_empty(), "more after the answer: {rest:?}");
    }
}

/// `<script>p(id,"channel","text");</script>`, its arguments read as JSON (the JavaScript string
/// literals Herald writes are JSON strings).
fn parse_p(line: &str) -> Option<(i64, String, String)> {
    let args = line
        .strip_prefix("<script>p(")?
        .strip_suffix(");</script>")?;
    let args: serde_json::Value = serde_json::from_str(&format!("[{args}]")).ok()?;
    Some((
        args[0].as_i64()?,
        args[1].as_str()?.to_owned(),
        args[2].as_str()?.to_owned(),
    ))
}

fn ch(name: &str, last: u64) -> String {
    format!("<script>ch(\"{name}\", {last});</script>")
}

#[test]
fn a_page_loading_meteor_js_renders_the_plugins_notices_streaming_and_long_polling() {
    let browser_dir = browser_dir();
    check_dependencies(&browser_dir);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (herald, port) = start_with_meteor("mysite");
    let base_url = format!("http://{}", herald.addr);
    for mode in ["stream", "longpoll"] {
        let mut node = Node::spawn(
            &browser_dir,
            "meteor.mjs",
            &[&base_url, "mysite-public", mode],
        );
        node.expect("READY", READY_TIMEOUT);
        // Long-polling, each answer ends the request: notices published back to back reach the
        // page through the next request's `.r<id>`, from history.
        for id in 1..=3 {
            let notice_id = if mode == "stream" { id } else { 10 + id };
            let (json, replies) =
                runtime.block_on(php_publish_notice(port, "mysite", &["public"], notice_id));
            assert_eq!(replies.len(), 1, "{replies:?}");
            let notice: serde_json::Value = serde_json::from_str(&json).expect("JSON");
            let text = notice["text"].as_str().expect("a text");
            node.send(&format!("SEE {id} {notice_id} {text}"));
        }
        for id in 1..=3 {
            node.expect(&format!("SEEN {id}"), SEE_TIMEOUT);
        }
        node.send("COUNT");
        node.expect("COUNT 3", SEE_TIMEOUT);
        node.send("DONE");
        node.expect("BYE", SEE_TIMEOUT);
        node.finish();
    }
    // The long-polling page asked again after each answer.
    let metrics = runtime.block_on(herald.metrics());
    let answered = metric_value(
        &metrics,
        "herald_disconnects_total",
        &[("reason", "answered")],
    );
    assert!(answered >= 1.0, "no long-poll was answered: {answered}");
    drop(herald);
}

#[tokio::test]
async fn streams_follow_meteors_templates_with_the_json_byte_for_byte() {
    let port = free_port();
    let herald = Herald::builder()
        .arg("--meteor-listen")
        .arg(format!("127.0.0.1:{port}"))
        .env("HERALD_METEOR_CHANNELBASE", "mysite")
        .env("HERALD_CONNECTION_PING_INTERVAL_SECS", "1")
        .start();
    let mut stream = PushStream::open(
        herald.addr,
        "/push/4711/xhrinteractive/mysite-public/mysite-all-evan",
    )
    .await;
    assert_eq!(stream.status, 200, "{}", stream.head);
    assert_eq!(
        stream.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(stream.header("access-control-allow-origin"), Some("*"));
    assert_eq!(stream.expect_line().await, ch("mysite-public", 0));
    assert_eq!(stream.expect_line().await, ch("mysite-all-evan", 0));

    let (json, _) = php_publish(port, "mysite", &["public", "all/evan"]).await;
    let mut messages = Vec::new();
    let mut pings = 0;
    while messages.len() < 2 {
        let line = stream.expect_line().await;
        if line == r#"<script>p(-1,"");</script>"# {
            pings += 1;
            continue;
        }
        messages.push(parse_p(&line).unwrap_or_else(|| panic!("not a message: {line:?}")));
    }
    assert_eq!(
        messages,
        [
            (1, "mysite-public".to_owned(), json.clone()),
            (1, "mysite-all-evan".to_owned(), json.clone()),
        ],
        "one p() per channel, named as the client named it, with the plugin's JSON"
    );
    // The heartbeat is Meteor's ping.
    while pings == 0 {
        assert_eq!(stream.expect_line().await, r#"<script>p(-1,"");</script>"#);
        pings += 1;
    }
}

#[tokio::test]
async fn a_long_poll_answers_its_messages_or_a_ping_then_ends() {
    let port = free_port();
    let herald = Herald::builder()
        .arg("--meteor-listen")
        .arg(format!("127.0.0.1:{port}"))
        .env("HERALD_CONNECTION_PING_INTERVAL_SECS", "2")
        .start();
    for id in 1..=2 {
        php_publish_notice(port, "", &["public"], id).await;
    }
    // `.h`: everything kept, in one answer.
    let mut poll = PushStream::open(herald.addr, "/push/1/longpoll/public.h").await;
    assert_eq!(poll.status, 200);
    assert_eq!(poll.expect_line().await, ch("public", 0));
    assert_eq!(poll.message().await.0, 1);
    assert_eq!(poll.message().await.0, 2);
    poll.expect_end().await;

    // `.r3`: nothing yet, so the poll waits for the next message, and ends with it.
    let mut poll = PushStream::open(herald.addr, "/push/1/longpoll/public.r3").await;
    assert_eq!(poll.expect_line().await, ch("public", 2));
    let (json, _) = php_publish_notice(port, "", &["public"], 3).await;
    let line = poll.expect_line().await;
    if line == r#"<script>p(-1,"");</script>"# {
        // The heartbeat came first and answered this poll; the next one gets the message.
        poll.expect_end().await;
        poll = PushStream::open(herald.addr, "/push/1/longpoll/public.r3").await;
        assert_eq!(poll.expect_line().await, ch("public", 2));
        assert_eq!(poll.message().await, (3, "public".to_owned(), json));
    } else {
        assert_eq!(parse_p(&line), Some((3, "public".to_owned(), json)));
    }
    poll.expect_end().await;

    // With nothing to say, a poll ends at the heartbeat, with the ping.
    let mut poll = PushStream::open(herald.addr, "/push/1/longpoll/public").await;
    assert_eq!(poll.expect_line().await, ch("public", 3));
    assert_eq!(poll.expect_line().await, r#"<script>p(-1,"");</script>"#);
    poll.expect_end().await;
}

/// Meteor ids are channel offsets, so `.r<id>` resumes through history, on any node.
#[tokio::test]
async fn on_redis_resume_suffixes_replay_exactly_what_was_missed_on_another_node() {
    let redis = Redis::start();
    let (port_a, port_b) = (free_port(), free_port());
    let a = crate::redis::node(&redis.url())
        .arg("--meteor-listen")
        .arg(format!("127.0.0.1:{port_a}"))
        .start();
    let b = crate::redis::node(&redis.url())
        .arg("--meteor-listen")
        .arg(format!("127.0.0.1:{port_b}"))
        .start();
    let mut sent = Vec::new();
    for id in 1..=4 {
        sent.push(php_publish_notice(port_a, "", &["public"], id).await.0);
    }
    // Stream mode on node B: `.r3` replays 3 and 4, then live messages follow without a gap.
    let mut stream = PushStream::open(b.addr, "/push/9/xhrinteractive/public.r3").await;
    assert_eq!(stream.status, 200);
    assert_eq!(stream.expect_line().await, ch("public", 2));
    assert_eq!(
        stream.message().await,
        (3, "public".to_owned(), sent[2].clone())
    );
    assert_eq!(
        stream.message().await,
        (4, "public".to_owned(), sent[3].clone())
    );
    let (fifth, _) = php_publish_notice(port_a, "", &["public"], 5).await;
    assert_eq!(
        stream.message().await,
        (5, "public".to_owned(), fifth.clone())
    );

    // `.b2`: the last two; `.r99`: nothing replayed, live from now.
    let mut poll = PushStream::open(b.addr, "/push/9/longpoll/public.b2").await;
    assert_eq!(poll.expect_line().await, ch("public", 3));
    assert_eq!(poll.message().await.0, 4);
    assert_eq!(poll.message().await.0, 5);
    poll.expect_end().await;
    let mut live = PushStream::open(a.addr, "/push/9/xhrinteractive/public.r99").await;
    assert_eq!(live.expect_line().await, ch("public", 5));
    let (sixth, _) = php_publish_notice(port_b, "", &["public"], 6).await;
    assert_eq!(
        live.message().await,
        (6, "public".to_owned(), sixth.clone())
    );
    assert_eq!(stream.message().await, (6, "public".to_owned(), sixth));
}

#[tokio::test]
async fn bad_urls_get_their_status_and_no_other_stream_notices() {
    let (herald, port) = start_with_meteor("");
    let mut stream = PushStream::open(herald.addr, "/push/1/xhrinteractive/public").await;
    assert_eq!(stream.expect_line().await, ch("public", 0));

    let cases: &[(&str, &str, u16, &str)] = &[
        ("GET", "/push/1/smartpoll/public", 400, "bad_request"),
        (
            "GET",
            "/push/1/xhrinteractive/bad%20name",
            400,
            "invalid_channel",
        ),
        (
            "GET",
            "/push/1/longpoll/public/public.h",
            400,
            "duplicate_channel",
        ),
        ("GET", "/push/1/longpoll/", 400, "missing_channel"),
        (
            "GET",
            "/push/1/longpoll/public.r99999999999999999999999",
            400,
            "bad_request",
        ),
        ("GET", "/push/1", 404, "not_found"),
        ("GET", "/push/bad!id/longpoll/public", 400, "bad_request"),
        ("POST", "/push/1/longpoll/public", 405, "method_not_allowed"),
    ];
    for (method, path, status, code) in cases {
        let response = Request::new(method, herald.addr, path).send().await;
        response.assert_error(*status, code);
        assert_eq!(
            response.header("access-control-allow-origin"),
            Some("*"),
            "{path}"
        );
    }
    let many: Vec<String> = (0..=64).map(|i| format!("c{i}")).collect();
    let path = format!("/push/1/longpoll/{}", many.join("/"));
    Request::get(herald.addr, &path)
        .send()
        .await
        .assert_error(400, "too_many_channels");

    // The open stream still gets the next notice.
    let (json, _) = php_publish(port, "", &["public"]).await;
    assert_eq!(stream.message().await, (1, "public".to_owned(), json));

    // Without a Meteor port there is no Meteor subscriber side.
    let plain = Herald::start();
    Request::get(plain.addr, "/push/1/longpoll/public")
        .send()
        .await
        .assert_error(404, "not_found");
}

/// `compat.nicks_file`: the plugin's `all-evan` is user 7's home timeline, so a client with a
/// token for user 7 on `user:7` gets the notice, and `/push` readers of `all-evan` need that
/// token too.
#[tokio::test]
async fn with_a_nick_table_all_nick_is_the_users_timeline() {
    let site = Site::new("blog");
    let nicks = std::env::temp_dir().join(format!("herald-nicks-{}.txt", std::process::id()));
    std::fs::write(&nicks, "# nick id\nevan 7\n").expect("write the nick table");
    let port = free_port();
    let top = format!(
        "[meteor]\nlisten = \"127.0.0.1:{port}\"\n\n[compat]\nnicks_file = \"{}\"\n",
        nicks.display()
    );
    let herald = Herald::builder()
        .config_toml(sites_toml(&top, &[&site]))
        .start();
    let token = site.token("7", 600);
    let mut ws = WsClient::connect(&herald.ws_url(&format!("/ws?token={token}"))).await;
    ws.subscribe("user:7").await;
    let mut other = WsClient::connect(&herald.ws_url("/ws?key=blog-key")).await;
    other.subscribe("all-zach").await;

    Request::get(herald.addr, "/push/1/xhrinteractive/all-evan")
        .send()
        .await
        .assert_error(403, "forbidden");
    let mut page = PushStream::open(
        herald.addr,
        &format!("/push/1/xhrinteractive/all-evan?token={token}"),
    )
    .await;
    assert_eq!(page.status, 200, "{}", page.head);
    assert_eq!(page.expect_line().await, ch("all-evan", 0));

    let (json, replies) = php_publish(port, "", &["all/evan", "all/zach"]).await;
    assert_eq!(replies, ["all-evan\tOK\t1", "all-zach\tOK\t1"]);
    let on_timeline = ws.next_message(WS_TIMEOUT).await;
    assert_eq!(
        (on_timeline.channel.as_str(), &on_timeline.data),
        ("user:7", &json)
    );
    assert_eq!(
        page.message().await,
        (1, "all-evan".to_owned(), json.clone())
    );
    // A nick the table does not list stays a plain channel.
    let plain = other.next_message(WS_TIMEOUT).await;
    assert_eq!((plain.channel.as_str(), &plain.data), ("all-zach", &json));
    let _ = std::fs::remove_file(&nicks);
}

/// Past a limit (here the site's connections), a `/push` request is 503 `unavailable` with
/// `Retry-After: 2`, and the stream already open keeps going.
#[tokio::test]
async fn past_a_limit_a_push_request_is_told_to_retry() {
    let port = free_port();
    let herald = Herald::builder()
        .arg("--meteor-listen")
        .arg(format!("127.0.0.1:{port}"))
        .env("HERALD_LIMITS_CONNECTIONS", "1")
        .start();
    let mut open = PushStream::open(herald.addr, "/push/1/xhrinteractive/public").await;
    assert_eq!(open.expect_line().await, ch("public", 0));
    let refused = Request::get(herald.addr, "/push/2/longpoll/public")
        .send()
        .await;
    refused.assert_error(503, "unavailable");
    assert_eq!(refused.header("retry-after"), Some("2"));
    let (json, _) = php_publish(port, "", &["public"]).await;
    assert_eq!(open.message().await, (1, "public".to_owned(), json));
}
