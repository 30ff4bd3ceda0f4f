// demo.js: the demo page's behaviour: post notices, and show two live timelines, one over
// Herald's native WebSocket protocol (through herald.js) and one over a bare EventSource.
//
// Notices are user content: they are inserted with textContent only, never as HTML.

import { HeraldSocket, backoff } from "/herald.js";

/** Older notices are dropped from a panel beyond this many. */
const MAX_NOTICES = 50;
/** Wait this long after the last keystroke in the user id field before reopening the stream. */
const USER_ID_DEBOUNCE_MS = 400;
/** Shown when Herald could not replay what a panel may have missed (`recovered: false`). */
const GAP_NOTE =
  "History gap: notices sent while this panel was disconnected, if any, are not shown.";
/** Channel names per docs/protocol.md. */
const CHANNEL_NAME = /^[A-Za-z0-9_\-:.@=]{1,128}$/;

const $ = (id) => document.getElementById(id);

/** Notice ids only need to be unique per page; starting from the clock keeps reloads apart. */
let nextNoticeId = Date.now();

// === panels ===

/** Shows a panel's connection state; `data-live-count` counts how often it became live. */
function setStatus(element, state) {
  if (element.dataset.state === state) return;
  element.textContent = state;
  element.dataset.state = state;
  if (state === "live") {
    element.dataset.liveCount = String(Number(element.dataset.liveCount || 0) + 1);
  }
}

function showNote(element, text) {
  element.textContent = text;
  element.hidden = false;
}

/** Adds a notice at the top of `list`. `data` is whatever was published, usually our shape. */
function addNotice(list, data) {
  const notice = data !== null && typeof data === "object" && !Array.isArray(data) ? data : {};
  const text = typeof notice.text === "string" ? notice.text : JSON.stringify(data);

  const meta = document.createElement("span");
  meta.className = "meta";
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = notice.user !== undefined ? `user ${notice.user}` : "someone";
  meta.append(who);
  const when = new Date(notice.created_at);
  if (!Number.isNaN(when.getTime())) meta.append(` · ${when.toLocaleTimeString()}`);

  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;

  const item = document.createElement("li");
  item.append(meta, body);
  list.prepend(item);
  while (list.children.length > MAX_NOTICES) list.lastElementChild.remove();
}

/**
 * Reads what Herald still holds for `channel`, so a fresh page starts with a timeline.
 * Best effort: on any failure the panel just starts live.
 */
async function loadHistory(channel, list) {
  try {
    const url = `/api/history?${new URLSearchParams({ channel })}`;
    const response = await fetch(url, { signal: AbortSignal.timeout(5000) });
    if (!response.ok) return null;
    const history = await response.json();
    for (const message of history.messages || []) addNotice(list, message.data);
    return { epoch: history.epoch, offset: history.offset };
  } catch {
    return null;
  }
}

// === public timeline: WebSocket ===

async function startPublicPanel() {
  const status = $("public-status");
  const list = $("public-timeline");
  const note = $("public-note");

  const since = await loadHistory("public", list);
  // Whether the next `subscribed` resumes from a position that may have been followed by notices
  // this page has not seen; if it then says `recovered: false`, those are lost to the page.
  // A position at offset 0 has nothing before it worth a note.
  let resuming = since !== null && since.offset > 0;

  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const herald = new HeraldSocket(`${scheme}//${location.host}/ws`, {
    onStatus: (state) => setStatus(status, state),
    onError: (error) => showNote(note, `${error.code}: ${error.message}`),
  });
  herald.subscribe("public", {
    since: since || undefined,
    onMessage: (data) => addNotice(list, data),
    onSubscribed: (frame) => {
      if (resuming && !frame.recovered) {
        showNote(note, GAP_NOTE);
      }
      resuming = true;
    },
  });
}

// === user timeline: EventSource ===

/** The open user stream; replaced whenever the user id changes. */
let userStream = null;

function openUserPanel(userId) {
  if (userStream) userStream.close();
  const stream = {
    closed: false,
    source: null,
    timer: null,
    close() {
      this.closed = true;
      clearTimeout(this.timer);
      if (this.source) this.source.close();
    },
  };
  userStream = stream;

  const status = $("user-status");
  const list = $("user-timeline");
  const note = $("user-note");
  const channel = `user:${userId}`;
  $("user-title").textContent = `User ${userId} timeline — SSE`;
  list.replaceChildren();
  note.hidden = true;
  delete status.dataset.state;
  setStatus(status, "connecting");

  if (!CHANNEL_NAME.test(channel)) {
    setStatus(status, "closed");
    showNote(note, "A user id may only hold letters, digits and _ - : . @ =");
    return;
  }

  let everLive = false;
  let resuming = false;
  let cursor = null;
  let attempts = 0;

  const open = () => {
    const params = new URLSearchParams({ channel });
    // Only for the first request: a reconnecting EventSource sends Last-Event-ID, which wins.
    if (cursor) params.set("last_event_id", cursor);
    const source = new EventSource(`/sse?${params}`);
    stream.source = source;

    source.addEventListener("subscribed", (event) => {
      const frame = JSON.parse(event.data);
      cursor = event.lastEventId || cursor;
      if (resuming && !frame.recovered) {
        showNote(note, GAP_NOTE);
      }
      resuming = true;
      everLive = true;
      attempts = 0;
      setStatus(status, "live");
    });
    source.onmessage = (event) => {
      cursor = event.lastEventId || cursor;
      addNotice(list, JSON.parse(event.data).data);
    };
    source.addEventListener("reconnect", () => setStatus(status, "reconnecting"));
    source.onerror = (event) => {
      if (event.data) {
        // An `event: error` sent by Herald itself (slow consumer); the stream closes next.
        let error = {};
        try {
          error = JSON.parse(event.data);
        } catch {
          // Not JSON: show the note without details.
        }
        showNote(note, `${error.code || "error"}: ${error.message || "stream closed"}`);
      }
      setStatus(status, everLive ? "reconnecting" : "connecting");
      if (source.readyState === EventSource.CLOSED && !stream.closed) {
        // EventSource gives up on an HTTP error answer; retry ourselves, resuming from the cursor.
        stream.timer = setTimeout(open, backoff(attempts++) + 1000);
      }
    };
  };

  loadHistory(channel, list).then((position) => {
    if (stream.closed) return;
    if (position) {
      cursor = `${position.epoch}:${position.offset}`;
      resuming = position.offset > 0;
    }
    open();
  });
}

// === posting ===

function setupForm() {
  const form = $("post-form");
  const userInput = $("user-id");
  const textInput = $("notice-text");
  const button = $("post-button");
  const result = $("post-result");

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const user = userInput.value.trim();
    const text = textInput.value.trim();
    if (!user || !text) return;
    const body = {
      channels: ["public", `user:${user}`],
      data: { id: nextNoticeId++, user, text, created_at: new Date().toISOString() },
    };
    button.disabled = true;
    result.classList.remove("error");
    try {
      const response = await fetch("/api/publish", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      const answer = await response.json().catch(() => null);
      if (response.ok) {
        textInput.value = "";
        const offsets = (answer?.results || []).map((r) => `${r.channel} #${r.offset}`);
        result.textContent = `Published to ${offsets.join(", ")}.`;
      } else {
        result.classList.add("error");
        const error = answer?.error || {};
        result.textContent = `Not published (${response.status} ${error.code || ""}): ${error.message || ""}`;
      }
    } catch (error) {
      result.classList.add("error");
      result.textContent = `Herald is unreachable: ${error.message}`;
    } finally {
      button.disabled = false;
      textInput.focus();
    }
  });

  let shownUser = userInput.value.trim();
  let debounce = null;
  userInput.addEventListener("input", () => {
    clearTimeout(debounce);
    debounce = setTimeout(() => {
      const user = userInput.value.trim();
      if (user && user !== shownUser) {
        shownUser = user;
        openUserPanel(user);
      }
    }, USER_ID_DEBOUNCE_MS);
  });
  return shownUser;
}

$("host").textContent = location.host;
const firstUser = setupForm();
openUserPanel(firstUser);
startPublicPanel();
