// herald.js: a small browser client for Herald's native WebSocket protocol (docs/protocol.md).
//
// It keeps one WebSocket, subscribes to channels, remembers the last position (epoch, offset) seen
// on each, and after any drop reconnects by itself and resubscribes with `since`, so Herald replays
// what was missed. The reconnect policy follows the close-code ranges of the protocol:
// 4000–4099 stop, 4100–4199 back off, 4200–4299 wait the delay the `reconnect` frame advised.
//
//   import { HeraldSocket } from "/herald.js";
//   const herald = new HeraldSocket("ws://127.0.0.1:8080/ws", { onStatus: (s) => console.log(s) });
//   herald.subscribe("public", { onMessage: (data, msg) => show(data) });

/** Back-off bounds in milliseconds: the first retry waits 0.5–1 s, later ones 1–2 s. */
const BACKOFF_MIN_MS = 1000;
const BACKOFF_MAX_MS = 2000;

/** A connection that has not been welcomed by then is abandoned and retried. */
const CONNECT_TIMEOUT_MS = 10000;

export class HeraldSocket {
  /**
   * @param {string} url  the `ws://` or `wss://` URL of Herald's `/ws`
   * @param {object} [options]
   * @param {(status: "connecting"|"live"|"reconnecting"|"closed") => void} [options.onStatus]
   * @param {(error: {code: string, message: string, channel?: string}) => void} [options.onError]
   */
  constructor(url, options = {}) {
    this.url = url;
    this.onStatus = options.onStatus || (() => {});
    this.onError = options.onError || (() => {});
    // channel name -> { onMessage, onSubscribed, position: {epoch, offset} | null, subscribed }
    this.channels = new Map();
    this.ws = null;
    this.welcomed = false;
    this.status = "connecting";
    this.everLive = false;
    // Failed attempts since the last welcome; it sizes the back-off.
    this.attempts = 0;
    // The `delay_ms` of a `reconnect` frame, used when the close that follows it arrives.
    this.advisedDelay = null;
    this.timer = null;
    this.stopped = false;
    this.connect();
  }

  /**
   * Subscribes to `channel`. `onMessage(data, frame)` gets each message's `data`;
   * `onSubscribed(frame)` gets every `subscribed` frame (check `frame.recovered` after a
   * reconnect). `since` resumes from a known position, e.g. one read from `/api/history`.
   */
  subscribe(channel, { onMessage, onSubscribed, since } = {}) {
    if (this.channels.has(channel)) throw new Error(`already subscribed to ${channel}`);
    this.channels.set(channel, {
      onMessage: onMessage || (() => {}),
      onSubscribed: onSubscribed || (() => {}),
      position: since ? { epoch: since.epoch, offset: since.offset } : null,
      subscribed: false,
    });
    if (this.welcomed) this.sendSubscribe(channel);
    this.updateStatus();
  }

  /** Forgets `channel`; no message of it is delivered afterwards. */
  unsubscribe(channel) {
    if (!this.channels.delete(channel)) return;
    if (this.welcomed) this.send({ type: "unsubscribe", channel });
    this.updateStatus();
  }

  /** Closes the connection for good. */
  close() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close(1000);
    this.setStatus("closed");
  }

  // === internals ===

  connect() {
    this.timer = null;
    this.welcomed = false;
    const ws = new WebSocket(this.url);
    this.ws = ws;
    const connectTimer = setTimeout(() => ws.close(), CONNECT_TIMEOUT_MS);
    ws.onmessage = (event) => {
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      if (frame.type === "welcome") clearTimeout(connectTimer);
      this.handle(frame);
    };
    ws.onclose = (event) => {
      clearTimeout(connectTimer);
      if (this.ws === ws) this.dropped(event.code, event.reason);
    };
  }

  handle(frame) {
    switch (frame.type) {
      case "welcome":
        this.welcomed = true;
        this.attempts = 0;
        for (const channel of this.channels.keys()) this.sendSubscribe(channel);
        this.updateStatus();
        break;
      case "subscribed": {
        const sub = this.channels.get(frame.channel);
        if (!sub) return;
        sub.subscribed = true;
        sub.position = { epoch: frame.epoch, offset: frame.offset };
        this.updateStatus();
        sub.onSubscribed(frame);
        break;
      }
      case "message": {
        const sub = this.channels.get(frame.channel);
        if (!sub) return;
        const seen = sub.position;
        // Herald promises no duplicates; this guard only makes the promise cheap to rely on.
        if (seen && seen.epoch === frame.epoch && frame.offset <= seen.offset) return;
        sub.position = { epoch: frame.epoch, offset: frame.offset };
        sub.onMessage(frame.data, frame);
        break;
      }
      case "reconnect":
        this.advisedDelay = frame.delay_ms;
        break;
      case "error":
        if (frame.code === "unavailable" && this.channels.has(frame.channel)) {
          // The engine could not serve the subscription just now: ask again after a back-off.
          setTimeout(() => {
            const sub = this.channels.get(frame.channel);
            if (this.welcomed && sub && !sub.subscribed) this.sendSubscribe(frame.channel);
          }, backoff(1));
        } else if (frame.code !== "already_subscribed") {
          this.onError(frame);
        }
        break;
      default:
        // `pong`, `unsubscribed` and frame types added later need nothing here.
        break;
    }
  }

  dropped(code, reason) {
    this.ws = null;
    this.welcomed = false;
    for (const sub of this.channels.values()) sub.subscribed = false;
    if (this.stopped) return;
    if (code >= 4000 && code <= 4099) {
      this.stopped = true;
      this.setStatus("closed");
      this.onError({ code: "closed", message: `closed by Herald (${code} ${reason})` });
      return;
    }
    let delay;
    if (code >= 4200 && code <= 4299 && this.advisedDelay !== null) {
      delay = this.advisedDelay;
    } else {
      delay = backoff(this.attempts);
    }
    this.attempts += 1;
    this.advisedDelay = null;
    this.setStatus(this.everLive ? "reconnecting" : "connecting");
    this.timer = setTimeout(() => this.connect(), delay);
  }

  sendSubscribe(channel) {
    const sub = this.channels.get(channel);
    const frame = { type: "subscribe", channel };
    if (sub.position) frame.since = sub.position;
    this.send(frame);
  }

  send(frame) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(frame));
  }

  updateStatus() {
    if (!this.welcomed) return;
    const live = [...this.channels.values()].every((sub) => sub.subscribed);
    if (live) {
      this.everLive = true;
      this.setStatus("live");
    } else {
      this.setStatus(this.everLive ? "reconnecting" : "connecting");
    }
  }

  setStatus(status) {
    if (status === this.status) return;
    this.status = status;
    this.onStatus(status);
  }
}

/** A jittered delay for retry number `attempt` (0-based): 0.5–1 s, then 1–2 s. */
export function backoff(attempt) {
  const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** attempt);
  return base / 2 + Math.random() * (base / 2);
}
