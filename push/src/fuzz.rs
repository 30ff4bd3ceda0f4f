//! The client-input parsers of `push`, as the fuzz targets in `fuzz/` call
//! them, and the replay of their committed corpora as unit tests (so stable
//! CI runs every input the fuzzers kept, without nightly).
//!
//! Each function takes arbitrary bytes, runs one parser on them, and panics
//! only if the parser breaks a promise of its own (a cursor that does not
//! read back the same): a refusal is a correct answer to bad input.
//! Not an API: nothing outside the fuzz targets may depend on it.

use crate::{
    ClientFrame, Intent, MAX_URL_CHANNELS, NativeWs, Opening, Protocol, PusherWs, StompWs,
    mercure::{
        self,
        publish::PublishForm,
        update::{Stored, Update},
    },
    meteor::{self, PushHeaders},
    sse::{self, MAX_REQUEST_CHANNELS, SseHeaders},
    statusnet::{StatusNetNames, UserTimelines},
    ws::reader::Reader,
};

/// One client frame of the native protocol on WebSocket: text when the
/// bytes are UTF-8 (as the WebSocket reader hands text frames over), binary
/// if not.
pub fn native_frame(data: &[u8]) {
    let frame = match std::str::from_utf8(data) {
        Ok(text) => ClientFrame::Text(text),
        Err(_) => ClientFrame::Binary(data),
    };
    let _ = NativeWs.parse(frame);
}

/// Client-to-server WebSocket frames as they come off a socket: the first
/// byte picks the size of each read (1 to 64 bytes) and the frame limit
/// (64 B to 4 KiB); the rest are the bytes. Read whole or in those pieces,
/// the same frames come out, and the same refusal, if any.
pub fn ws_frames(data: &[u8]) {
    let Some((&first, bytes)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(first & 0x3f) + 1;
    let max = 64 << (first >> 6 << 1);
    let whole = read_frames(bytes, bytes.len().max(1), max);
    let pieces = read_frames(bytes, chunk, max);
    assert_eq!(whole, pieces, "read whole, then {chunk} bytes at a time");
}

/// What a reader makes of `bytes` fed `chunk` bytes at a time: each frame,
/// then the refusal if any, then whether a frame was left partly read.
fn read_frames(bytes: &[u8], chunk: usize, max: usize) -> Vec<String> {
    let mut reader = Reader::<()>::default();
    let mut seen = Vec::new();
    let describe = |frame: crate::ws::reader::Frame<'_>, _: &mut ()| format!("{frame:?}");
    for piece in bytes.chunks(chunk) {
        let mut result = reader.read(&mut piece.to_vec(), max, describe);
        loop {
            match result {
                Ok(Some(frame)) => seen.push(frame),
                Ok(None) => break,
                Err(code) => {
                    seen.push(format!("refused: {}", code.as_str()));
                    return seen;
                }
            }
            if !reader.has_unread() {
                break;
            }
            // Frames read together with the one handed over.
            result = reader.read(&mut [], max, describe);
        }
    }
    seen.push(format!("partly read: {}", reader.has_unread()));
    seen
}

/// An SSE request head as the listener reads it off a fresh socket.
pub fn sse_head(data: &[u8]) {
    let _ = sse::is_sse_request(data);
    let _ = sse::request::parse(data, MAX_REQUEST_CHANNELS);
}

/// A `Last-Event-ID`: the first byte picks how many channels the stream
/// has (1 to 16), the rest is the header's value. A cursor that parses
/// must read back the same after it is written out again.
pub fn last_event_id(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let channels = usize::from(first % 16) + 1;
    if let Some(positions) = sse::cursor::parse(text, channels) {
        let written = sse::cursor::format(positions.iter().copied());
        assert_eq!(
            sse::cursor::parse(&written, channels).as_ref(),
            Some(&positions),
            "cursor {text:?} was written back as {written:?}"
        );
    }
    // The same value through the whole request check, as the header.
    let target: String = (0..channels).fold(String::from("/sse?"), |mut t, i| {
        t.push_str(&format!("channel=c{i}&"));
        t
    });
    let headers = SseHeaders {
        last_event_id: Some(text),
        ..SseHeaders::default()
    };
    let _ = sse::check("GET", &target, headers, MAX_REQUEST_CHANNELS);
}

/// The query of a `GET /ws?…` upgrade (its channels and `since`). What
/// parses names each channel once, at most [`MAX_URL_CHANNELS`] of them,
/// and, with a cursor, exactly one position per channel.
pub fn ws_query(data: &[u8]) {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(opening) = Opening::from_ws_query(query) else {
        return;
    };
    let channels = &opening.channels;
    assert!(channels.len() <= MAX_URL_CHANNELS, "{query:?}");
    for (i, channel) in channels.iter().enumerate() {
        assert!(
            !channels[..i].contains(channel),
            "{channel} twice: {query:?}"
        );
    }
    if let Some(cursor) = &opening.cursor {
        assert_eq!(cursor.len(), channels.len(), "{query:?}");
    }
}

/// A Meteor subscriber URL (`/push/<hostid>/<mode>/<channel>[suffix]…`,
/// with a query). What parses names each channel once, at most
/// [`meteor::MAX_CHANNELS`] of them, with one backlog each.
pub fn meteor_push_url(data: &[u8]) {
    let Ok(target) = std::str::from_utf8(data) else {
        return;
    };
    let names = StatusNetNames {
        channelbase: "site".into(),
        users: UserTimelines::NickIsId,
    };
    let Ok(request) = meteor::check("GET", target, "key", &names, PushHeaders::default()) else {
        return;
    };
    let opening = &request.stream.opening;
    let channels = &opening.channels;
    assert!(
        !channels.is_empty() && channels.len() <= meteor::MAX_CHANNELS,
        "{target:?}"
    );
    for (i, channel) in channels.iter().enumerate() {
        assert!(
            !channels[..i].contains(channel),
            "{channel} twice: {target:?}"
        );
    }
    let backlogs = opening.backlogs.as_ref().map(Vec::len);
    assert_eq!(backlogs, Some(channels.len()), "{target:?}");
}

/// What a Mercure client sends: with an even first byte, a subscribe
/// request's query; with an odd one, a publish form. A form that parses
/// stores an update that reads back the same (its id, topics and private
/// flag, and an event that starts with its `id:` line); every selector of
/// a query that parses is matched against topics, itself included (the
/// URI template matcher must answer, in time, whatever the template).
pub fn mercure_request(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    if first & 1 == 0 {
        let Ok(query) = std::str::from_utf8(rest) else {
            return;
        };
        let Ok(params) = mercure::Query::parse(query) else {
            return;
        };
        assert!(!params.selectors.is_empty(), "{query:?}");
        for selector in &params.selectors {
            for topic in ["https://example.com/books/1", "", selector] {
                let _ = sites::mercure::matches(selector, topic);
            }
        }
        return;
    }
    let Ok(form) = PublishForm::parse(rest) else {
        return;
    };
    let id = form.id.as_deref().unwrap_or("urn:uuid:0");
    let update = Update {
        topics: &form.topics,
        private: form.private,
        id,
        kind: form.kind.as_deref(),
        retry: form.retry,
        data: &form.data,
    };
    let stored = update.store();
    let read = Stored::read(&stored).unwrap_or_else(|| panic!("{form:?} does not read back"));
    assert_eq!(read.id, id);
    assert_eq!(read.private, form.private);
    assert!(read.topics().eq(form.topics.iter().map(String::as_str)));
    assert!(stored[read.frame_start..].starts_with(format!("id: {id}\n").as_bytes()));
}

/// What a STOMP-over-WebSocket client sends: messages separated by NUL
/// bytes, each handed to the protocol as one frame (its NUL put back), after
/// a `CONNECT` when the first byte is odd. Whatever it sends, no two live
/// subscriptions share an id or a channel.
pub fn stomp_ws_frames(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let mut stomp = StompWs::default();
    if first & 1 == 1 {
        let _ = stomp.parse(ClientFrame::Text("CONNECT\naccept-version:1.2\n\n\0"));
    }
    let mut subscribed: Vec<String> = Vec::new();
    for message in rest.split(|&b| b == 0) {
        let mut frame = message.to_vec();
        frame.push(0);
        let parsed = match std::str::from_utf8(&frame) {
            Ok(text) => stomp.parse(ClientFrame::Text(text)),
            Err(_) => stomp.parse(ClientFrame::Binary(&frame)),
        };
        match parsed {
            Ok(Intent::Subscribe { channel, .. }) => {
                assert!(
                    !subscribed.contains(&channel.to_string()),
                    "{channel} twice"
                );
                subscribed.push(channel.to_string());
            }
            Ok(Intent::Unsubscribe { channel }) => {
                assert!(
                    subscribed.contains(&channel.to_string()),
                    "{channel} never subscribed"
                );
            }
            _ => {}
        }
    }
}

/// One client frame of the Pusher protocol (text if UTF-8, else binary).
/// A subscribe names a Herald channel; a client event a `client-` event
/// whose data is JSON.
pub fn pusher_frame(data: &[u8]) {
    let frame = match std::str::from_utf8(data) {
        Ok(text) => ClientFrame::Text(text),
        Err(_) => ClientFrame::Binary(data),
    };
    match PusherWs::default().parse(frame) {
        Ok(Intent::Subscribe { channel, .. }) => {
            assert!(
                fanout::ChannelName::new(channel.as_str()).is_ok(),
                "{channel}"
            );
        }
        Ok(Intent::Publish { event, data, .. }) => {
            assert!(event.starts_with("client-"), "{event}");
            assert!(
                serde_json::from_slice::<serde_json::Value>(&data).is_ok(),
                "a client event's data is JSON: {data:?}"
            );
        }
        _ => {}
    }
}

/// Replays every file of `fuzz/corpus/<target>` through `run`.
#[cfg(test)]
pub(crate) fn replay(target: &str, run: fn(&[u8])) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut replayed = 0;
    for entry in entries {
        let path = entry.unwrap().path();
        run(&std::fs::read(&path).unwrap());
        replayed += 1;
    }
    assert!(replayed > 0, "{} holds no input", dir.display());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_the_native_frame_corpus() {
        replay("native_frame", native_frame);
    }

    #[test]
    fn replays_the_ws_frames_corpus() {
        replay("ws_frames", ws_frames);
    }

    #[test]
    fn replays_the_sse_head_corpus() {
        replay("sse_head", sse_head);
    }

    #[test]
    fn replays_the_last_event_id_corpus() {
        replay("last_event_id", last_event_id);
    }

    #[test]
    fn replays_the_ws_query_corpus() {
        replay("ws_query", ws_query);
    }

    #[test]
    fn replays_the_meteor_push_url_corpus() {
        replay("meteor_push_url", meteor_push_url);
    }

    #[test]
    fn replays_the_pusher_frame_corpus() {
        replay("pusher_frame", pusher_frame);
    }

    #[test]
    fn replays_the_stomp_ws_frames_corpus() {
        replay("stomp_ws_frames", stomp_ws_frames);
    }

    #[test]
    fn replays_the_mercure_request_corpus() {
        replay("mercure_request", mercure_request);
    }
}
