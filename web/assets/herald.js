// herald.js: Herald's browser client (docs/client.md). Dependency-free; an ES module, with a
// classic-script build (herald.classic.js, `window.Herald`) made by web/build.mjs.
//
// One Herald object keeps a set of channels live over the first transport that works: WebSocket,
// then Server-Sent Events, then HTTP long-poll. It remembers each channel's last position
// (epoch, offset), and after any drop it reconnects by itself (full-jitter exponential back-off,
// or the delay the server advised) and resumes every channel from there, so Herald replays what
// was missed; when it cannot, the channel's `recovered` event says so and the app reloads it.
//
//   import { Herald } from "/herald.js";
//   const herald = new Herald("https://push.example.net", { key: "blog-key", getToken });
//   herald.subscribe("public", { onMessage: (data) => show(data), onRecovered: reload });

const BACKOFF_BASE_MS = 500;
const BACKOFF_CAP_MS = 30000;
/** A transport that has not delivered its first answer by then has failed. */
const CONNECT_TIMEOUT_MS = 8000;
/** While on a fallback, how often the preferred transport is tried again. */
const PROBE_MS = 60000;
/** Failures in a row before a transport that worked before is given up for the next one. */
const RETRIES_BEFORE_FALLBACK = 4;
/** A token is refreshed this long before it expires. */
const REFRESH_AHEAD_S = 30;
const TRANSPORTS = ["ws", "sse", "poll"];

/** A full-jitter delay for retry number `attempt` (0-based): uniform in [0, min(cap, base·2ⁿ)). */
export function backoff(attempt, base = BACKOFF_BASE_MS, cap = BACKOFF_CAP_MS) {
  return Math.random() * Math.min(cap, base * 2 ** Math.min(attempt, 30));
}

const presenceEvent = (event) => event && event.startsWith("pusher_internal:member_");

export class Herald {
  /**
   * @param {string} url  Herald's base URL (`https://host`), or its `/ws` URL
   * @param {object} [options]  see docs/client.md
   */
  constructor(url, options = {}) {
    this.base = url.replace(/^ws/, "http").replace(/\/ws$/, "").replace(/\/$/, "");
    this.options = options;
    this.transports = (options.transports || TRANSPORTS).slice();
    this.WebSocket = options.WebSocket || globalThis.WebSocket;
    this.EventSource = options.EventSource || globalThis.EventSource;
    this.fetch = options.fetch || globalThis.fetch.bind(globalThis);
    this.listeners = {};
    for (const [event, name] of [
      ["status", "onStatus"],
      ["error", "onError"],
      ["transport", "onTransport"],
    ]) {
      if (options[name]) this.on(event, options[name]);
    }
    // channel -> { handlers, position: {epoch, offset} | null, live, members: Map | null }
    this.channels = new Map();
    this.status = "connecting";
    this.attempts = 0;
    this.choice = 0;
    this.link = null;
    this.timers = {};
    this.stopped = false;
    this.everLive = false;
    /** Transports that opened at least once, and failures in a row since one last opened. */
    this.worked = new Set();
    this.failures = 0;
    this.connect();
  }

  /** Adds a listener: `status`, `error`, `transport`, `recovered`, `member_added`, `member_removed`. */
  on(event, listener) {
    (this.listeners[event] = this.listeners[event] || []).push(listener);
    return this;
  }

  emit(event, value) {
    for (const listener of this.listeners[event] || []) listener(value);
  }

  /**
   * Subscribes to `channel`: `onMessage(data, message)` for each message, `onSubscribed(frame)`,
   * `onRecovered(recovered)` after each resubscribe (false: reload the channel). `since` resumes
   * from a known position. `authorize(channel, connectionId)` answers `{signature, channelData}`
   * for `private-` and `presence-` channels (WebSocket only; SSE and long-poll use the token).
   */
  subscribe(channel, handlers = {}) {
    if (this.channels.has(channel)) throw new Error(`already subscribed to ${channel}`);
    const since = handlers.since;
    this.channels.set(channel, {
      handlers,
      position: since ? { epoch: since.epoch, offset: since.offset } : null,
      live: false,
      members: channel.startsWith("presence-") ? new Map() : null,
    });
    if (this.link) this.link.changed(channel, true);
    this.updateStatus();
  }

  /** Forgets `channel`; no message of it is delivered afterwards. */
  unsubscribe(channel) {
    if (!this.channels.delete(channel)) return;
    if (this.link) this.link.changed(channel, false);
    this.updateStatus();
  }

  /** A presence channel's members: `[{user_id, user_info}]`. */
  members(channel) {
    const sub = this.channels.get(channel);
    return sub && sub.members ? [...sub.members.values()] : [];
  }

  /** The transport in use: `ws`, `sse` or `poll`; null while none is. */
  get transport() {
    return this.link ? this.link.name : null;
  }

  /** Closes for good. */
  close() {
    this.stopped = true;
    for (const timer of Object.values(this.timers)) clearTimeout(timer);
    if (this.link) this.link.close();
    this.link = null;
    this.setStatus("closed");
  }

  // === connecting ===

  async token() {
    if (this.options.getToken) this.options.token = await this.options.getToken();
    return this.options.token;
  }

  async connect() {
    this.later("connect", null);
    if (this.stopped) return;
    const name = this.transports[this.choice];
    const Link = LINKS[name];
    let token;
    try {
      token = await this.token();
    } catch (error) {
      return this.dropped(null, `getToken failed: ${error}`);
    }
    if (this.stopped) return;
    const link = new Link(this, token);
    this.link = link;
    this.later("opening", this.options.connectTimeout || CONNECT_TIMEOUT_MS, () => {
      // No first answer in time: a proxy that blocks or buffers this transport.
      if (this.link === link && !link.opened) this.failed(link, "no answer in time", true);
    });
    link.open();
  }

  /** The link got its first answer: this transport works. */
  opened(link) {
    if (this.link !== link) return;
    link.opened = true;
    this.later("opening", null);
    this.attempts = 0;
    this.failures = 0;
    // An SSE link opened with no channel has not heard the server yet (see its `subscribed`).
    if (link.name !== "sse") this.worked.add(link.name);
    this.emit("transport", link.name);
    // Only a WebSocket can be tried on the side without disturbing the link in use.
    if (this.choice > 0 && this.transports[0] === "ws") {
      this.later("probe", this.options.probeInterval || PROBE_MS, () => this.probe());
    }
  }

  /**
   * The transport failed before it opened: the next one is tried at once. One that worked before
   * and was refused (not `stalled`: no answer in time) is retried with back-off a few times
   * first: a server restarting refuses every transport alike, and is no sign of a proxy in the
   * way, where a proxy that blocks or buffers a transport stalls it.
   */
  failed(link, why, stalled = false) {
    if (this.link !== link || this.stopped) return;
    link.close();
    this.link = null;
    if (!stalled && this.worked.has(link.name) && this.failures < RETRIES_BEFORE_FALLBACK) {
      this.failures += 1;
      return this.dropped(null, why);
    }
    this.failures = 0;
    if (this.choice < this.transports.length - 1) {
      this.choice += 1;
      this.connect();
    } else {
      this.choice = 0;
      this.dropped(null, why);
    }
  }

  /** An open link ended: reconnect after a back-off, the advised delay, or never (4000–4099). */
  dropped(code, reason) {
    this.link = null;
    for (const sub of this.channels.values()) sub.live = false;
    if (this.stopped) return;
    if (code >= 4000 && code <= 4099) {
      this.close();
      this.emit("error", { code: "closed", message: `closed by Herald (${code} ${reason})` });
      return;
    }
    const advised = code >= 4200 && code <= 4299 ? this.advised : null;
    const delay = advised != null ? advised : backoff(this.attempts);
    this.advised = null;
    this.attempts += 1;
    this.setStatus(this.everLive ? "reconnecting" : "connecting");
    this.later("connect", delay, () => this.connect());
  }

  /** While on a fallback: tries WebSocket on the side, and moves back to it once it answers. */
  probe() {
    const probe = new WsLink(this, this.options.token, true);
    probe.onProbe = (ok) => {
      probe.close();
      if (ok && this.link && !this.stopped) {
        this.link.close();
        this.link = null;
        this.choice = 0;
        this.connect();
      } else if (!this.stopped) {
        this.later("probe", this.options.probeInterval || PROBE_MS, () => this.probe());
      }
    };
    probe.open();
  }

  later(name, delay, action) {
    clearTimeout(this.timers[name]);
    if (delay != null) this.timers[name] = setTimeout(action, delay);
  }

  // === what links hand up ===

  /** A `subscribed` event: positions, members, and `recovered` for a resumed channel. */
  subscribed(frame) {
    const sub = this.channels.get(frame.channel);
    if (!sub) return;
    const resumed = sub.position !== null;
    sub.live = true;
    sub.position = { epoch: frame.epoch, offset: frame.offset };
    if (sub.members && frame.members) {
      sub.members = new Map(frame.members.map((m) => [m.user_id, m]));
    }
    if (sub.handlers.onSubscribed) sub.handlers.onSubscribed(frame);
    if (resumed) {
      if (sub.handlers.onRecovered) sub.handlers.onRecovered(frame.recovered);
      this.emit("recovered", { channel: frame.channel, recovered: frame.recovered });
    }
    this.updateStatus();
  }

  /** A `message`: delivered once, in order; member events update the member list. */
  message(frame) {
    const sub = this.channels.get(frame.channel);
    if (!sub) return;
    const seen = sub.position;
    if (seen && seen.epoch === frame.epoch && frame.offset <= seen.offset) return;
    sub.position = { epoch: frame.epoch, offset: frame.offset };
    if (presenceEvent(frame.event)) {
      const added = frame.event.endsWith("added");
      if (sub.members) {
        if (added) sub.members.set(frame.data.user_id, frame.data);
        else sub.members.delete(frame.data.user_id);
      }
      const kind = added ? "member_added" : "member_removed";
      const handler = added ? sub.handlers.onMemberAdded : sub.handlers.onMemberRemoved;
      if (handler) handler(frame.data);
      this.emit(kind, { channel: frame.channel, member: frame.data });
      return;
    }
    if (sub.handlers.onMessage) sub.handlers.onMessage(frame.data, frame);
  }

  /** A refusal that leaves the connection open. */
  refused(frame) {
    if (frame.code === "unavailable" && this.channels.has(frame.channel) && this.link) {
      // The engine could not serve it just now: ask again after a back-off.
      const link = this.link;
      setTimeout(() => this.link === link && link.changed(frame.channel, true), backoff(2));
    } else if (frame.code !== "already_subscribed") {
      this.emit("error", frame);
    }
  }

  /** `welcome` with `expires_at`: the token is refreshed before then. */
  expiresAt(seconds) {
    if (!seconds || !this.options.getToken) return;
    const due = Math.max(0, (seconds - REFRESH_AHEAD_S) * 1000 - Date.now());
    this.later("refresh", due, async () => {
      try {
        const token = await this.token();
        if (this.link) this.link.refresh(token);
      } catch (error) {
        this.emit("error", { code: "token_refresh_failed", message: String(error) });
      }
    });
  }

  updateStatus() {
    if (!this.link || !this.link.opened) return;
    const live = [...this.channels.values()].every((sub) => sub.live);
    // Live with no channel is not a connection that could be lost: the first subscribe after it
    // is `connecting`, not `reconnecting`.
    if (live && this.channels.size) this.everLive = true;
    this.setStatus(live ? "live" : this.everLive ? "reconnecting" : "connecting");
  }

  setStatus(status) {
    if (status === this.status) return;
    this.status = status;
    this.emit("status", status);
  }

  /** The query every HTTP transport sends: channels, site key, token, and `extra`. */
  query(token, extra = []) {
    const params = new URLSearchParams();
    for (const channel of this.channels.keys()) params.append("channel", channel);
    if (this.options.key) params.set("key", this.options.key);
    if (token) params.set("token", token);
    for (const [name, value] of extra) params.set(name, value);
    return params.toString();
  }

  /** The cursor of every channel, or null when one has no position yet. */
  cursor() {
    const positions = [...this.channels.values()].map((sub) => sub.position);
    if (!positions.length || positions.some((p) => !p)) return null;
    return positions.map((p) => `${p.epoch}:${p.offset}`).join(",");
  }
}

/** The native WebSocket protocol (docs/protocol.md). */
class WsLink {
  constructor(herald, token, probing = false) {
    this.herald = herald;
    this.token = token;
    this.probing = probing;
    this.name = "ws";
    this.opened = false;
  }

  open() {
    const herald = this.herald;
    const params = new URLSearchParams();
    if (herald.options.key) params.set("key", herald.options.key);
    if (this.token) params.set("token", this.token);
    const url = `${herald.base.replace(/^http/, "ws")}/ws?${params}`;
    const ws = new herald.WebSocket(url);
    this.ws = ws;
    ws.onmessage = (event) => {
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      this.heard();
      if (this.probing) return frame.type === "welcome" && this.onProbe(true);
      this.handle(frame);
    };
    // A refused or failed socket also closes: that is where it is handled.
    ws.onerror = () => {};
    ws.onclose = (event) => {
      clearInterval(this.pinger);
      if (this.probing) return this.onProbe && this.onProbe(false);
      if (!this.opened) herald.failed(this, `closed ${event.code}`);
      else if (herald.link === this) herald.dropped(event.code, event.reason);
    };
  }

  handle(frame) {
    const herald = this.herald;
    switch (frame.type) {
      case "welcome":
        this.connectionId = frame.connection_id;
        herald.opened(this);
        herald.expiresAt(frame.expires_at);
        for (const channel of herald.channels.keys()) this.changed(channel, true);
        herald.updateStatus();
        this.keepAlive(frame.ping_interval_ms);
        break;
      case "subscribed":
        return herald.subscribed(frame);
      case "message":
        return herald.message(frame);
      case "reconnect":
        herald.advised = frame.delay_ms;
        break;
      case "error":
        return herald.refused(frame);
      default:
        break;
    }
  }

  /** Pings every interval; a socket that answers nothing for two is stalled and closed. */
  keepAlive(interval) {
    if (!interval) return;
    this.pinger = setInterval(() => {
      if (Date.now() - this.lastHeard > 2 * interval) return this.ws.close();
      this.send({ type: "ping" });
    }, interval);
  }

  heard() {
    this.lastHeard = Date.now();
  }

  async changed(channel, subscribed) {
    if (!subscribed) return this.send({ type: "unsubscribe", channel });
    const sub = this.herald.channels.get(channel);
    if (!sub) return;
    const frame = { type: "subscribe", channel };
    if (sub.position) frame.since = sub.position;
    const authorize = sub.handlers.authorize;
    if (authorize && /^(private|presence)-/.test(channel)) {
      const proof = await authorize(channel, this.connectionId);
      frame.signature = proof.signature;
      if (proof.channelData) frame.channel_data = proof.channelData;
    }
    this.send(frame);
  }

  refresh(token) {
    this.send({ type: "refresh", token });
  }

  send(frame) {
    if (this.ws && this.ws.readyState === 1) this.ws.send(JSON.stringify(frame));
  }

  close() {
    clearInterval(this.pinger);
    const ws = this.ws;
    if (!ws) return;
    ws.onclose = null;
    ws.onmessage = null;
    ws.close(1000);
  }
}

/** One Server-Sent Events stream for every channel; a change of channels opens a new one. */
class SseLink {
  constructor(herald, token, probing = false) {
    this.herald = herald;
    this.token = token;
    this.probing = probing;
    this.name = "sse";
    this.opened = false;
  }

  open() {
    const herald = this.herald;
    if (!herald.channels.size) return herald.opened(this);
    const cursor = herald.cursor();
    const extra = cursor ? [["last_event_id", cursor]] : [];
    const source = new herald.EventSource(`${herald.base}/sse?${herald.query(this.token, extra)}`);
    this.source = source;
    // A stream opened after the link (for channels subscribed later) gets the connect time-out
    // too: a proxy that buffers streams holds this one back as well.
    clearTimeout(this.stall);
    this.stall = setTimeout(() => {
      if (this.source !== source || herald.link !== this) return;
      this.close();
      if (!this.streamed) herald.failed(this, "the stream did not answer in time", true);
      else herald.dropped(0, "the stream did not answer in time");
    }, herald.options.connectTimeout || CONNECT_TIMEOUT_MS);
    source.addEventListener("subscribed", (event) => {
      clearTimeout(this.stall);
      this.streamed = true;
      herald.worked.add(this.name);
      if (!this.opened) herald.opened(this);
      herald.subscribed(JSON.parse(event.data));
    });
    source.onmessage = (event) => herald.message(JSON.parse(event.data));
    source.addEventListener("reconnect", (event) => {
      herald.advised = JSON.parse(event.data).delay_ms;
    });
    source.addEventListener("error", (event) => {
      if (event.data) herald.refused(JSON.parse(event.data));
      // EventSource would retry with its own cursor; herald.js keeps the positions instead.
      this.close();
      // A link opened with no channel has not streamed yet: this transport has not worked.
      if (!this.streamed) herald.failed(this, "the stream did not open");
      else if (herald.link === this) herald.dropped(herald.advised != null ? 4200 : 0, "");
    });
  }

  changed() {
    // The stream's channels are fixed: a new stream, from every channel's position.
    this.close();
    this.open();
  }

  refresh(token) {
    this.token = token;
    this.changed();
  }

  close() {
    clearTimeout(this.stall);
    if (this.source) this.source.close();
    this.source = null;
  }
}

/** HTTP long-poll (`GET /poll`): one request held until messages arrive, then the next. */
class PollLink {
  constructor(herald, token) {
    this.herald = herald;
    this.token = token;
    this.name = "poll";
    this.opened = false;
    this.generation = 0;
  }

  open() {
    this.poll(++this.generation);
  }

  async poll(generation) {
    const herald = this.herald;
    // The first poll of a channel set is answered at once (timeout 0), so that a set that resumes
    // from a cursor, which gets no `subscribed`, is known live without waiting for a message.
    let first = true;
    while (generation === this.generation) {
      if (!herald.channels.size) {
        if (!this.opened) herald.opened(this);
        return;
      }
      const cursor = herald.cursor();
      const extra = cursor ? [["cursor", cursor]] : [];
      if (first) extra.push(["timeout", "0"]);
      const url = `${herald.base}/poll?${herald.query(this.token, extra)}`;
      let answer;
      try {
        const response = await herald.fetch(url, { signal: (this.abort = new AbortController()).signal });
        answer = await response.json();
        if (!response.ok) {
          const error = answer.error || { code: "http", message: String(response.status) };
          herald.emit("error", error);
          throw new Error(error.code);
        }
      } catch (error) {
        if (generation !== this.generation) return;
        if (!this.opened) return herald.failed(this, String(error));
        return herald.link === this && herald.dropped(0, String(error));
      }
      if (generation !== this.generation) return;
      if (!this.opened) herald.opened(this);
      let advised = null;
      const announced = new Set();
      for (const event of answer.events || []) {
        if (event.type === "subscribed") announced.add(event.channel);
        if (event.type === "subscribed") herald.subscribed(event);
        else if (event.type === "message") herald.message(event);
        else if (event.type === "error") herald.refused(event);
        else if (event.type === "reconnect") advised = event.delay_ms;
      }
      if (first) {
        // Channels resumed from the cursor without a word: nothing was lost.
        for (const [channel, sub] of herald.channels) {
          if (!announced.has(channel) && !sub.live && sub.position) {
            herald.subscribed({ channel, ...sub.position, recovered: true });
          }
        }
        first = false;
      }
      if (advised != null) {
        // The server is going away: poll again after the delay it advised.
        herald.advised = advised;
        return herald.link === this && herald.dropped(4200, "shutdown");
      }
    }
  }

  changed() {
    this.close();
    this.open();
  }

  refresh(token) {
    this.token = token;
  }

  close() {
    this.generation += 1;
    if (this.abort) this.abort.abort();
  }
}

const LINKS = { ws: WsLink, sse: SseLink, poll: PollLink };

/** The name herald.js 0.1 exported; the same client. */
export { Herald as HeraldSocket };
