// demo.js: the demo page, a small live microblog as a StatusNet site would run it on Herald.
// Notices are posted to the demo's own routes (/demo/notices, /demo/follow: api/src/demo.rs),
// which publish them to `public`, `notices-<nick>` and `tag-<tag>` and deliver them to the home
// timelines (`user:<nick>`) of the author and followers. Every timeline is live through one
// herald.js client (WebSocket, then SSE, then long-poll; `?transports=sse,poll` forces them).
//
// Notices are user content: they are inserted with textContent only, never as HTML.

import { Herald } from "/herald.js";

/** Older notices are dropped from a panel beyond this many. */
const MAX_NOTICES = 50;
/** Wait this long after the last keystroke in the nickname field before following the new one. */
const NICK_DEBOUNCE_MS = 400;
/** Shown when Herald could not replay what a panel may have missed (`recovered: false`). */
const GAP_NOTE =
  "History gap: notices sent while this panel was disconnected, if any, are not shown.";
const NICK = /^[a-z0-9_]{1,32}$/;

const $ = (id) => document.getElementById(id);

/** Notices that arrived while the page was hidden, once each however many timelines they
 * reached (by id): the title counts them. */
const unread = new Set();
const baseTitle = document.title;

function countUnread(data) {
  if (!document.hidden) return;
  unread.add(data && data.id !== undefined ? `id ${data.id}` : `n ${unread.size}`);
  document.title = `(${unread.size}) ${baseTitle}`;
}

document.addEventListener("visibilitychange", () => {
  if (document.hidden) return;
  unread.clear();
  document.title = baseTitle;
});

// === panels ===

/** A timeline on the page: its list, its "new notices" bar, and the channel it shows. */
class Panel {
  constructor(name) {
    this.list = $(`${name}-timeline`);
    this.bar = $(`${name}-new`);
    this.note = $(`${name}-note`);
    this.status = $(`${name}-status`);
    this.waiting = [];
    this.channel = null;
    this.bar.addEventListener("click", () => this.showWaiting());
  }

  /** Shows a notice at once when the list is scrolled to its top, else behind the bar. */
  add(data) {
    countUnread(data);
    if (this.list.parentElement.scrollTop > 0 || this.list.scrollTop > 0) {
      this.waiting.push(data);
      this.bar.textContent = `${this.waiting.length} new notice${this.waiting.length > 1 ? "s" : ""}`;
      this.bar.hidden = false;
      return;
    }
    addNotice(this.list, data);
  }

  showWaiting() {
    for (const data of this.waiting.splice(0)) addNotice(this.list, data);
    this.bar.hidden = true;
  }

  clear() {
    this.waiting = [];
    this.bar.hidden = true;
    this.list.replaceChildren();
    if (this.note) this.note.hidden = true;
  }

  showNote(text) {
    if (!this.note) return;
    this.note.textContent = text;
    this.note.hidden = false;
  }
}

/** Shows a panel's connection state; `data-live-count` counts how often it became live. */
function setStatus(element, state) {
  if (!element || element.dataset.state === state) return;
  element.textContent = state;
  element.dataset.state = state;
  if (state === "live") {
    element.dataset.liveCount = String(Number(element.dataset.liveCount || 0) + 1);
  }
}

/** The text of a notice with its #tags and @names as links to their timelines. */
function richText(text) {
  const body = document.createElement("span");
  body.className = "text";
  for (const part of text.split(/([#@][A-Za-z0-9_]+)/)) {
    if (/^#[A-Za-z0-9_]+$/.test(part)) {
      body.append(link(part, () => view(`tag-${part.slice(1).toLowerCase()}`, part)));
    } else if (/^@[a-z0-9_]+$/.test(part)) {
      body.append(link(part, () => viewUser(part.slice(1))));
    } else {
      body.append(part);
    }
  }
  return body;
}

function link(text, action) {
  const anchor = document.createElement("a");
  anchor.textContent = text;
  anchor.addEventListener("click", action);
  return anchor;
}

/** Adds a notice at the top of `list`: the demo's shape, or whatever was published. */
function addNotice(list, data) {
  const notice = data !== null && typeof data === "object" && !Array.isArray(data) ? data : {};
  const text = typeof notice.text === "string" ? notice.text : JSON.stringify(data);
  const author = notice.nick ?? notice.user;

  const meta = document.createElement("span");
  meta.className = "meta";
  const who = document.createElement("span");
  who.className = "who";
  if (typeof author === "string" && NICK.test(author)) {
    who.append(link(author, () => viewUser(author)));
  } else {
    who.textContent = author !== undefined ? `user ${author}` : "someone";
  }
  meta.append(who);
  const when = new Date(notice.at_ms ?? notice.created_at);
  if (!Number.isNaN(when.getTime())) meta.append(` · ${when.toLocaleTimeString()}`);

  const item = document.createElement("li");
  item.append(meta, richText(text));
  list.prepend(item);
  while (list.children.length > MAX_NOTICES) list.lastElementChild.remove();
}

/** What Herald still holds for `channel`, so a fresh panel starts with a timeline. */
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

// === the client and its timelines ===

const transports = new URLSearchParams(location.search).get("transports");
const herald = new Herald(location.origin, {
  transports: transports ? transports.split(",") : undefined,
  onStatus: (state) => {
    setStatus($("public-status"), state);
    setStatus($("user-status"), state);
  },
  onError: (error) => panels.public.showNote(`${error.code}: ${error.message}`),
  onTransport: (name) => {
    $("transport").textContent = name;
  },
});
const panels = { public: new Panel("public"), user: new Panel("user"), view: new Panel("view") };

/** Shows `channel` in `panel`, from what Herald still holds, live from then on. */
async function follow(panel, channel) {
  if (panel.channel) herald.unsubscribe(panel.channel);
  panel.channel = channel;
  panel.clear();
  const since = await loadHistory(channel, panel.list);
  if (panel.channel !== channel) return;
  // A position at offset 0 has nothing before it worth a note.
  const resuming = since !== null && since.offset > 0;
  let first = true;
  herald.subscribe(channel, {
    since: since || undefined,
    onMessage: (data) => panel.add(data),
    onRecovered: (recovered) => {
      if (!recovered && (resuming || !first)) panel.showNote(GAP_NOTE);
      first = false;
    },
  });
}

// === the third panel: a user's notices, or a tag ===

let viewed = null;

function view(channel, title, user = null) {
  $("view-panel").hidden = false;
  $("view-title").textContent = title;
  viewed = user;
  updateFollowButton();
  follow(panels.view, channel);
}

function viewUser(nick) {
  view(`notices-${nick}`, `Notices of ${nick}`, nick);
}

$("view-close").addEventListener("click", () => {
  $("view-panel").hidden = true;
  if (panels.view.channel) herald.unsubscribe(panels.view.channel);
  panels.view.channel = null;
  viewed = null;
});

/** Whom the page's user follows, as the demo last said. */
let following = new Set();

function updateFollowButton() {
  const button = $("follow-button");
  const me = currentNick();
  button.hidden = !viewed || viewed === me;
  button.textContent = following.has(viewed) ? `Unfollow ${viewed}` : `Follow ${viewed}`;
}

$("follow-button").addEventListener("click", async () => {
  const target = viewed;
  const response = await fetch("/demo/follow", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ nick: currentNick(), target, follow: !following.has(target) }),
  });
  const answer = await response.json().catch(() => ({}));
  if (response.ok) following = new Set(answer.following);
  updateFollowButton();
});

// === the page's user ===

function currentNick() {
  return $("user-id").value.trim();
}

async function becomeUser(nick) {
  $("user-title").textContent = `Home timeline of ${nick}`;
  if (!NICK.test(nick)) {
    panels.user.clear();
    panels.user.showNote("A nickname holds 1 to 32 of a-z, 0-9 and _.");
    return;
  }
  localStorage.setItem("herald-demo-nick", nick);
  follow(panels.user, `user:${nick}`);
  try {
    const response = await fetch(`/demo/state?${new URLSearchParams({ nick })}`);
    if (response.ok) following = new Set((await response.json()).following);
  } catch {
    following = new Set();
  }
  updateFollowButton();
}

// === posting ===

function setupForm() {
  const textInput = $("notice-text");
  const button = $("post-button");
  const result = $("post-result");

  $("post-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const nick = currentNick();
    const text = textInput.value.trim();
    if (!nick || !text) return;
    button.disabled = true;
    result.classList.remove("error");
    try {
      const response = await fetch("/demo/notices", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ nick, text }),
      });
      const answer = await response.json().catch(() => null);
      if (response.ok) {
        textInput.value = "";
        result.textContent = `Posted notice #${answer.notice.id}.`;
      } else {
        result.classList.add("error");
        const error = answer?.error || {};
        result.textContent = `Not posted (${response.status} ${error.code || ""}): ${error.message || ""}`;
      }
    } catch (error) {
      result.classList.add("error");
      result.textContent = `Herald is unreachable: ${error.message}`;
    } finally {
      button.disabled = false;
      textInput.focus();
    }
  });

  let shown = currentNick();
  let debounce = null;
  $("user-id").addEventListener("input", () => {
    clearTimeout(debounce);
    debounce = setTimeout(() => {
      const nick = currentNick();
      if (nick && nick !== shown) {
        shown = nick;
        becomeUser(nick);
      }
    }, NICK_DEBOUNCE_MS);
  });
}

$("host").textContent = location.host;
const saved = localStorage.getItem("herald-demo-nick");
if (saved && NICK.test(saved)) $("user-id").value = saved;
setupForm();
follow(panels.public, "public");
becomeUser(currentNick());
