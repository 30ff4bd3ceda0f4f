//! Pusher webhooks (`[[sites]] webhook_url`): a local receiver started by the test gets
//! `channel_occupied`, `channel_vacated`, `member_added` and `member_removed` as signed,
//! batched POSTs (`X-Pusher-Key`, `X-Pusher-Signature`), a POST the receiver fails is sent
//! again, and on Redis each event comes once for the whole deployment, including the leaves and
//! vacated channels of a SIGKILLed node.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener},
    sync::mpsc,
    time::{Duration, Instant},
};

use herald_tests::{Herald, Redis, Site, WS_TIMEOUT, WsClient, hmac_hex, sites_toml};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

/// One POST the receiver got.
struct Posted {
    key: String,
    signature: String,
    body: String,
}

/// An HTTP receiver on a free loopback port: answers each POST with the next status of
/// `statuses` (200 once they run out) and hands the POST to the test.
struct Receiver {
    addr: SocketAddr,
    posts: mpsc::Receiver<Posted>,
    /// Events already read out of POSTs, not yet taken by the test.
    pending: Vec<Value>,
}

impl Receiver {
    fn start(statuses: Vec<u16>) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, posts) = mpsc::channel();
        std::thread::spawn(move || {
            let mut statuses = statuses.into_iter();
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let Some(posted) = read_post(&stream) else {
                    continue;
                };
                let status = statuses.next().unwrap_or(200);
                let mut stream = stream;
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                if tx.send(posted).is_err() {
                    return;
                }
            }
        });
        Receiver {
            addr,
            posts,
            pending: Vec::new(),
        }
    }

    fn url(&self) -> String {
        format!("http://{}/pusher/webhook", self.addr)
    }

    /// The next POST, checked to be signed by `site`.
    fn next_post(&mut self, site: &Site) -> Value {
        let posted = self.posts.recv_timeout(WAIT).expect("a webhook POST");
        assert_eq!(posted.key, site.key);
        assert_eq!(
            posted.signature,
            hmac_hex(site.secret(), &posted.body),
            "X-Pusher-Signature is the HMAC of the body"
        );
        let body: Value = serde_json::from_str(&posted.body).expect("JSON");
        assert!(body["time_ms"].as_u64().is_some(), "{body}");
        body
    }

    /// The next event, whichever POST it came in.
    fn next_event(&mut self, site: &Site) -> Value {
        while self.pending.is_empty() {
            let body = self.next_post(site);
            self.pending = body["events"].as_array().expect("events").clone();
        }
        self.pending.remove(0)
    }
}

fn read_post(stream: &std::net::TcpStream) -> Option<Posted> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    if !line.starts_with("POST ") {
        return None;
    }
    let (mut length, mut key, mut signature) = (0, String::new(), String::new());
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        let value = value.trim().to_string();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.parse().ok()?,
            "x-pusher-key" => key = value,
            "x-pusher-signature" => signature = value,
            _ => {}
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Posted {
        key,
        signature,
        body: String::from_utf8(body).ok()?,
    })
}

fn event(name: &str, channel: &str) -> Value {
    json!({"name": name, "channel": channel})
}

fn member_event(name: &str, channel: &str, user: &str) -> Value {
    json!({"name": name, "channel": channel, "user_id": user})
}

/// A native client on `herald` that joins presence channel `channel` as `user`.
async fn join(herald: &Herald, site: &Site, channel: &str, user: &str) -> WsClient {
    let mut client = WsClient::connect(&herald.ws_url(&format!("/ws?key={}", site.key))).await;
    let connection_id = client.welcome["connection_id"]
        .as_str()
        .expect("a connection id")
        .to_owned();
    let channel_data = json!({ "user_id": user }).to_string();
    let signature = hmac_hex(
        site.secret(),
        &format!("{connection_id}:{channel}:{channel_data}"),
    );
    client
        .send_json(&json!({"type":"subscribe","channel":channel,"signature":signature,"channel_data":channel_data}))
        .await;
    let subscribed = client.next_json(WS_TIMEOUT).await;
    assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
    client
}

fn site_with_webhook(receiver: &Receiver) -> (Site, String) {
    let site = Site::new("chat");
    let toml = site.toml() + &format!("webhook_url = {:?}\n", receiver.url());
    (site, toml)
}

#[tokio::test]
async fn channel_and_member_events_reach_the_webhook_signed_and_retried() {
    // The first POST fails: its events come again in the retry.
    let mut receiver = Receiver::start(vec![500]);
    let (site, toml) = site_with_webhook(&receiver);
    let herald = Herald::builder()
        .config_toml(sites_toml("", &[]) + &toml)
        .start();

    let mut reader = WsClient::connect(&herald.ws_url(&format!("/ws?key={}", site.key))).await;
    reader.subscribe("room").await;
    let first = receiver.next_post(&site);
    assert_eq!(first["events"], json!([event("channel_occupied", "room")]));
    let again = receiver.next_post(&site);
    assert_eq!(
        again["events"], first["events"],
        "the failed POST, sent again"
    );

    let member = join(&herald, &site, "presence-lobby", "ann").await;
    assert_eq!(
        receiver.next_event(&site),
        event("channel_occupied", "presence-lobby")
    );
    assert_eq!(
        receiver.next_event(&site),
        member_event("member_added", "presence-lobby", "ann")
    );
    // A second connection of ann's is no second join, and its leave no leave.
    let second = join(&herald, &site, "presence-lobby", "ann").await;
    second.close().await;
    member.close().await;
    let mut rest = vec![receiver.next_event(&site), receiver.next_event(&site)];
    rest.sort_by_key(|e| e["name"].as_str().unwrap_or("").to_string());
    assert_eq!(
        rest,
        [
            event("channel_vacated", "presence-lobby"),
            member_event("member_removed", "presence-lobby", "ann")
        ]
    );
    reader.close().await;
    assert_eq!(receiver.next_event(&site), event("channel_vacated", "room"));
}

#[tokio::test]
async fn a_site_without_a_webhook_url_sends_nothing_and_bad_urls_are_refused() {
    let mut receiver = Receiver::start(vec![]);
    let quiet = Site::new("quiet");
    let (site, toml) = site_with_webhook(&receiver);
    let herald = Herald::builder()
        .config_toml(sites_toml("", &[&quiet]) + "\n" + &toml)
        .start();
    let mut client = WsClient::connect(&herald.ws_url(&format!("/ws?key={}", quiet.key))).await;
    client.subscribe("room").await;
    let mut other = WsClient::connect(&herald.ws_url(&format!("/ws?key={}", site.key))).await;
    other.subscribe("marker").await;
    assert_eq!(
        receiver.next_event(&site),
        event("channel_occupied", "marker"),
        "the quiet site's channel was not told to anyone"
    );

    for (url, why) in [
        ("https://example.net/hook", "only http://"),
        ("not a url", "not a URL"),
    ] {
        let toml = Site::new("bad").toml() + &format!("webhook_url = {url:?}\n");
        let finished = Herald::builder()
            .config_toml(sites_toml("", &[]) + &toml)
            .run_to_exit(Duration::from_secs(10));
        assert!(!finished.status.success(), "{url}");
        assert!(
            finished.stderr.contains("webhook_url") && finished.stderr.contains(why),
            "{}",
            finished.stderr
        );
    }
}

fn redis_node(redis: &Redis, toml: &str) -> Herald {
    crate::redis::node(&redis.url())
        .config_toml(sites_toml("[redis]\npresence_timeout_ms = 1500\n", &[]) + toml)
        .start()
}

#[tokio::test]
async fn on_redis_each_event_comes_once_and_a_killed_nodes_come_from_the_others() {
    let redis = Redis::start();
    let mut receiver = Receiver::start(vec![]);
    let (site, toml) = site_with_webhook(&receiver);
    let a = redis_node(&redis, &toml);
    let b = redis_node(&redis, &toml);
    let url = |node: &Herald| node.ws_url(&format!("/ws?key={}", site.key));

    let mut on_a = WsClient::connect(&url(&a)).await;
    on_a.subscribe("room").await;
    assert_eq!(
        receiver.next_event(&site),
        event("channel_occupied", "room")
    );
    // The same channel on B is not occupied again: the next event is another channel's.
    let mut on_b = WsClient::connect(&url(&b)).await;
    on_b.subscribe("room").await;
    on_b.subscribe("marker").await;
    assert_eq!(
        receiver.next_event(&site),
        event("channel_occupied", "marker")
    );

    // Members and channels only node A has.
    let _ann = join(&a, &site, "presence-lobby", "ann").await;
    let mut got = vec![receiver.next_event(&site), receiver.next_event(&site)];
    got.sort_by_key(|e| e["name"].as_str().unwrap_or("").to_string());
    assert_eq!(
        got,
        [
            event("channel_occupied", "presence-lobby"),
            member_event("member_added", "presence-lobby", "ann")
        ]
    );
    let _bob = join(&b, &site, "presence-lobby", "bob").await;
    assert_eq!(
        receiver.next_event(&site),
        member_event("member_added", "presence-lobby", "bob")
    );

    // A is SIGKILLed: B reaps it. Ann leaves; room and the lobby keep B's subscribers.
    let started = Instant::now();
    drop(a);
    assert_eq!(
        receiver.next_event(&site),
        member_event("member_removed", "presence-lobby", "ann")
    );
    eprintln!("ann's leave came {:?} after the kill", started.elapsed());
    on_b.close().await;
    let mut got = vec![receiver.next_event(&site), receiver.next_event(&site)];
    got.sort_by_key(|e| e["channel"].as_str().unwrap_or("").to_string());
    assert_eq!(
        got,
        [
            event("channel_vacated", "marker"),
            event("channel_vacated", "room")
        ],
        "room is vacated once B's subscriber leaves: A's mark went with A"
    );
    drop(on_a);
}
