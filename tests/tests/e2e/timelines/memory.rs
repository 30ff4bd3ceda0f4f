//! Timelines on one node with the memory engine and no configuration: a delivery reaches each
//! connected recipient once and nobody else; ids given twice count once; `replies` timelines;
//! a publish to `user:42` shares the shard's offsets (which skip) and its recovery.

use herald_tests::{
    DEFAULT_SHARDS, DEFAULT_SITE, Delivery, DeliveryAnswer, Herald, Position, SseClient, WsClient,
    shards_touched,
};

use super::support::{
    Subscriber, connect_all, expect_all, expect_sse, notice, sentinel, spread, wait_metric,
};

#[tokio::test]
async fn a_delivery_reaches_each_connected_recipient_once_and_nobody_else() {
    let herald = Herald::start();
    let connected: Vec<u64> = (1..=200).map(|k| k * 10).collect();
    let outsiders: Vec<u64> = (5001..=5050).collect();
    let mut recipients = connect_all(spread(&[&herald], &connected)).await;
    let mut others = connect_all(spread(&[&herald], &outsiders)).await;
    let sse_channel = "user:1999";
    let mut sse =
        SseClient::connect(herald.addr, &format!("/sse?channel={sse_channel}"), None).await;
    sse.assert_stream();
    let (_, subscribed) = sse.expect_subscribed(sse_channel).await;
    let sse_seen = Position::from_json(&subscribed);

    // Ids as integers and as strings alike.
    let notice = notice(3);
    let delivery = Delivery::new("user", &notice)
        .ids(1..=1000)
        .names((1001..=2000).map(|id| id.to_string()));
    let shards = shards_touched(
        DEFAULT_SITE,
        (1..=2000).map(|id| id.to_string()),
        DEFAULT_SHARDS,
    );
    let answer = herald.deliver(&delivery).await;
    assert_eq!(
        answer,
        DeliveryAnswer {
            recipients: 2000,
            shards,
            messages: shards,
            duplicates: 0,
        }
    );
    expect_all(&mut recipients, &notice, "the notice").await;
    let message = expect_sse(&mut sse, sse_channel, &sse_seen, &notice, "SSE: the notice").await;

    let metrics = [&herald];
    wait_metric(&metrics, "herald_deliveries_total", &[], 1.0).await;
    wait_metric(&metrics, "herald_delivery_recipients_total", &[], 2000.0).await;
    wait_metric(
        &metrics,
        "herald_timeline_shard_messages_total",
        &[("result", "published")],
        shards as f64,
    )
    .await;
    wait_metric(&metrics, "herald_timeline_expanded_total", &[], 201.0).await;

    let sentinel = sentinel("memory");
    let everyone = connected.iter().chain(&outsiders).copied().chain([1999]);
    herald.deliver(&Delivery::user(everyone, &sentinel)).await;
    expect_all(&mut others, &sentinel, "outsiders: the sentinel first").await;
    expect_all(&mut recipients, &sentinel, "recipients: the sentinel next").await;
    expect_sse(
        &mut sse,
        sse_channel,
        &message.position,
        &sentinel,
        "SSE: the sentinel next",
    )
    .await;
}

#[tokio::test]
async fn an_id_given_twice_is_delivered_once() {
    let herald = Herald::start();
    let mut subscribers = connect_all(spread(&[&herald], &[42, 43])).await;
    let notice = notice(4);
    let delivery = Delivery::new("user", &notice)
        .ids([42])
        .names(["42", "43"])
        .ids([42, 43]);
    let answer = herald.deliver(&delivery).await;
    assert_eq!(answer.recipients, 2, "distinct ids: {answer:?}");
    assert_eq!(answer.messages, answer.shards);
    expect_all(&mut subscribers, &notice, "the notice").await;
    let sentinel = sentinel("once");
    herald.deliver(&Delivery::user([42, 43], &sentinel)).await;
    expect_all(&mut subscribers, &sentinel, "no second copy").await;
}

#[tokio::test]
async fn the_replies_timeline_reaches_replies_channels_only() {
    let herald = Herald::start();
    let url = herald.ws_url("/ws");
    let mut replies = Vec::new();
    for user in ["7", "alice"] {
        replies.push(Subscriber::connect(&url, &format!("replies:{user}"), user).await);
    }
    let mut homes = Vec::new();
    for user in ["7", "alice"] {
        homes.push(Subscriber::connect(&url, &format!("user:{user}"), user).await);
    }
    // One connection holding both timelines of a user in the same shard.
    let mut both = WsClient::connect(&url).await;
    let home_seen = Position::from_json(&both.subscribe("user:bob").await);
    let replies_seen = Position::from_json(&both.subscribe("replies:bob").await);

    let reply = notice(5);
    let answer = herald
        .deliver(
            &Delivery::new("replies", &reply)
                .ids([7])
                .names(["alice", "bob"]),
        )
        .await;
    assert_eq!(answer.recipients, 3);
    expect_all(&mut replies, &reply, "the reply").await;
    let message = both.next_message(herald_tests::WS_TIMEOUT).await;
    assert_eq!(
        (message.channel.as_str(), message.data.as_str()),
        ("replies:bob", reply.as_str()),
        "bob's reply arrives on replies:bob only"
    );
    assert_eq!(message.position.epoch, replies_seen.epoch);
    assert!(message.position.offset > replies_seen.offset);

    // The home timelines got nothing: a home delivery is the first thing they read.
    let home = sentinel("home");
    herald
        .deliver(
            &Delivery::new("user", &home)
                .ids([7])
                .names(["alice", "bob"]),
        )
        .await;
    expect_all(&mut homes, &home, "home timelines: the home delivery first").await;
    let message = both.next_message(herald_tests::WS_TIMEOUT).await;
    assert_eq!(
        (message.channel.as_str(), message.data.as_str()),
        ("user:bob", home.as_str()),
        "bob's home delivery arrives on user:bob only"
    );
    assert!(message.position.offset > home_seen.offset);
    let again = sentinel("replies again");
    herald
        .deliver(&Delivery::new("replies", &again).ids([7]).names(["alice"]))
        .await;
    expect_all(&mut replies, &again, "replies: the second reply next").await;
}

#[tokio::test]
async fn a_publish_to_a_user_channel_shares_its_shards_offsets_and_history() {
    // One shard: every user's timeline takes its positions from the same shard.
    let herald = Herald::builder()
        .config_toml("[timeline]\nshards = 1\n")
        .start();
    let url = herald.ws_url("/ws");
    let mut u42 = Subscriber::connect(&url, "user:42", "42").await;
    let mut u43 = Subscriber::connect(&url, "user:43", "43").await;
    let start = u42.seen.clone();

    let first = herald.publish("user:42", r#""first""#).await;
    let got = u42.expect(r#""first""#, "a publish to user:42").await;
    assert_eq!(
        got.position, first,
        "the message carries the publish's position"
    );
    let other = herald.deliver(&Delivery::user([43], r#""for 43""#)).await;
    assert_eq!(other.messages, 1);
    let got43 = u43
        .expect(r#""for 43""#, "a delivery to 43 in the same shard")
        .await;
    let second = herald.publish("user:42", r#""second""#).await;
    let got = u42
        .expect(r#""second""#, "the next publish to user:42")
        .await;
    assert_eq!(got.position, second);
    assert!(
        first.offset < got43.position.offset && got43.position.offset < second.offset,
        "43's delivery took an offset of the shard between 42's two messages: {first:?} {:?} {second:?}",
        got43.position
    );
    assert!(
        second.offset > first.offset + 1,
        "user:42's offsets skip the shard's other messages: {first:?} then {second:?}"
    );

    // Resuming user:42 replays its own messages only, skipping 43's in the shard's history.
    let mut resumed = WsClient::connect(&url).await;
    let subscribed = resumed
        .subscribe_since("user:42", &start.epoch, start.offset)
        .await;
    assert_eq!(subscribed["recovered"], true, "{subscribed}");
    let mut resumed = Subscriber {
        user: "42".into(),
        channel: "user:42".into(),
        ws: resumed,
        seen: start,
    };
    resumed.expect(r#""first""#, "replay").await;
    resumed.expect(r#""second""#, "replay, skipping 43's").await;

    // A batch publish to a timeline and an ordinary channel reaches both.
    let mut public = WsClient::connect(&url).await;
    public.subscribe("public").await;
    herald
        .publish_batch(&["public", "user:42"], r#""batch""#)
        .await;
    let sentinel = sentinel("shard");
    u42.expect(r#""batch""#, "a batch publish").await;
    resumed.expect(r#""batch""#, "a batch publish").await;
    assert_eq!(
        public.next_message(herald_tests::WS_TIMEOUT).await.data,
        r#""batch""#
    );
    herald.deliver(&Delivery::user([42, 43], &sentinel)).await;
    u42.expect(&sentinel, "nothing else on user:42").await;
    u43.expect(&sentinel, "nothing of 42's on user:43").await;
    resumed
        .expect(&sentinel, "nothing twice after resuming")
        .await;
}

#[tokio::test]
async fn a_recipient_resumes_missed_deliveries_with_since_and_last_event_id() {
    let herald = Herald::start();
    let url = herald.ws_url("/ws");
    let gone = Subscriber::connect(&url, "user:8", "8").await;
    let seen = gone.seen.clone();
    drop(gone);
    let mut sse = SseClient::connect(herald.addr, "/sse?channel=user:9", None).await;
    sse.assert_stream();
    let (_, subscribed) = sse.expect_subscribed("user:9").await;
    let sse_seen = Position::from_json(&subscribed);
    let cursor = sse.last_event_id().to_owned();
    assert_eq!(
        cursor,
        sse_seen.cursor(),
        "the subscribed event's id is the cursor"
    );
    drop(sse);

    let missed = [notice(6), notice(7)];
    for (i, data) in missed.iter().enumerate() {
        let answer = herald
            .deliver(&Delivery::user(1..=100, data).key(&format!("missed-{i}")))
            .await;
        assert_eq!(answer.recipients, 100);
    }

    let mut ws = WsClient::connect(&url).await;
    let subscribed = ws.subscribe_since("user:8", &seen.epoch, seen.offset).await;
    assert_eq!(subscribed["recovered"], true, "{subscribed}");
    let mut back = Subscriber {
        user: "8".into(),
        channel: "user:8".into(),
        ws,
        seen,
    };
    for data in &missed {
        back.expect(data, "replayed in order").await;
    }
    let mut sse = SseClient::connect(herald.addr, "/sse?channel=user:9", Some(&cursor)).await;
    sse.assert_stream();
    let (_, subscribed) = sse.expect_subscribed("user:9").await;
    assert_eq!(subscribed["recovered"], true, "{subscribed}");
    let mut last = sse_seen;
    for data in &missed {
        last = expect_sse(&mut sse, "user:9", &last, data, "SSE: replayed in order")
            .await
            .position;
    }

    let sentinel = sentinel("resumed");
    herald.deliver(&Delivery::user([8, 9], &sentinel)).await;
    back.expect(&sentinel, "nothing twice").await;
    expect_sse(&mut sse, "user:9", &last, &sentinel, "SSE: nothing twice").await;

    // A position from before a history that was never there is not silently accepted.
    let mut stale = WsClient::connect(&url).await;
    let subscribed = stale.subscribe_since("user:8", "ffff", 1).await;
    assert_eq!(
        subscribed["recovered"], false,
        "another epoch: {subscribed}"
    );
}
