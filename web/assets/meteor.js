// Meteor's browser client, as Herald serves it at /meteor.js (docs/compat.md).
//
// Pages written for a Meteor server (StatusNet's and GNU social's Meteor plugin, meteorupdater.js)
// keep their code: they set Meteor.host, Meteor.port and Meteor.callbacks.process, join channels
// and connect. Underneath, this reads Herald's /push streams (the same URLs and lines Meteor
// served) with fetch, instead of Meteor's iframes and eval:
//   GET /push/<hostid>/<mode>/<channel>[.b<n>|.r<id>][/<channel>...]
// and each line of the answer is one call: ch(name, lastId), p(id, name, text) or eof().
//
// What it keeps of Meteor's client:
// - Meteor.hostid, host, port, scheme, mode ("stream", "xhrinteractive", "iframe": one stream;
//   "longpoll", "smartpoll", "simplepoll": a request per answer), callbacks, status;
// - registerEventCallback(event, fn): process, reset, eof, statuschanged, changemode;
// - joinChannel(name, backtrack): backtrack > 0 asks for the last n messages the first time;
//   after that, every reconnect resumes with .r<last id + 1>, so nothing is missed while the
//   channel's history holds it;
// - leaveChannel(name), connect(), disconnect().
// Herald's addition: Meteor.token, sent as ?token=, for channels that need a user's token.
(function (global) {
  "use strict";

  var STREAM_MODES = { stream: 1, xhrinteractive: 1, iframe: 1 };
  var MAX_BACKOFF_MS = 30000;

  var Meteor = {
    hostid: String(Date.now()) + String(Math.floor(Math.random() * 1e6)),
    host: "",
    port: "",
    scheme: "",
    mode: "stream",
    token: "",
    channels: {},
    callbacks: {},
    status: 0,
    // Internal state.
    _running: false,
    _controller: null,
    _failures: 0,
    _timer: null,

    registerEventCallback: function (event, fn) {
      var before = Meteor.callbacks[event];
      Meteor.callbacks[event] =
        typeof before === "function"
          ? function () {
              before.apply(null, arguments);
              fn.apply(null, arguments);
            }
          : fn;
    },

    joinChannel: function (name, backtrack) {
      if (Meteor.channels[name]) return;
      Meteor.channels[name] = { backtrack: Number(backtrack) || 0, lastmsgreceived: null };
      if (Meteor._running) Meteor._restart();
    },

    leaveChannel: function (name) {
      if (!Meteor.channels[name]) return;
      delete Meteor.channels[name];
      if (Meteor._running) Meteor._restart();
    },

    connect: function () {
      if (Meteor._running) return;
      Meteor._running = true;
      Meteor._failures = 0;
      Meteor._open();
    },

    disconnect: function () {
      Meteor._running = false;
      Meteor._stop();
      Meteor._setStatus(0);
    },

    // p(id, channel, text): a message, or a ping (id -1).
    process: function (id, channel, text) {
      if (id < 0) return;
      var state = Meteor.channels[channel];
      if (state) {
        if (state.lastmsgreceived !== null && id <= state.lastmsgreceived) return;
        state.lastmsgreceived = id;
      }
      Meteor._call("process", text, channel, id);
    },

    _url: function () {
      var location = global.location || {};
      var scheme = Meteor.scheme || (location.protocol || "http:").replace(/:$/, "");
      var host = Meteor.host || location.hostname || "localhost";
      var port = Meteor.port ? ":" + Meteor.port : Meteor.host ? "" : location.port ? ":" + location.port : "";
      var mode = STREAM_MODES[Meteor.mode] ? "xhrinteractive" : "longpoll";
      var parts = [];
      for (var name in Meteor.channels) {
        var state = Meteor.channels[name];
        var suffix = "";
        if (state.lastmsgreceived !== null) suffix = ".r" + (state.lastmsgreceived + 1);
        else if (state.backtrack > 0) suffix = ".b" + state.backtrack;
        // Channel names are URL-safe characters (A-Z a-z 0-9 _ - : . @ =): sent as they are.
        parts.push(name + suffix);
      }
      var url = scheme + "://" + host + port + "/push/" + Meteor.hostid + "/" + mode + "/" + parts.join("/");
      return Meteor.token ? url + "?token=" + encodeURIComponent(Meteor.token) : url;
    },

    _open: function () {
      if (!Meteor._running || Object.keys(Meteor.channels).length === 0) return;
      var controller = new AbortController();
      Meteor._controller = controller;
      Meteor._setStatus(1);
      var ended = false;
      var onLine = function (line) {
        if (!ended && Meteor._line(line) === "eof") ended = true;
      };
      fetch(Meteor._url(), { signal: controller.signal, cache: "no-store" })
        .then(function (response) {
          if (!response.ok || !response.body) throw new Error("HTTP " + response.status);
          Meteor._failures = 0;
          Meteor._setStatus(5);
          return Meteor._read(response.body.getReader(), onLine);
        })
        .then(
          function () {
            if (ended) return Meteor._end();
            // The stream ended (a long-poll answered, a server restarting): ask again.
            Meteor._again(STREAM_MODES[Meteor.mode] ? 1000 : 0);
          },
          function () {
            if (controller.signal.aborted) return;
            Meteor._failures += 1;
            var ceiling = Math.min(MAX_BACKOFF_MS, 1000 * Math.pow(2, Meteor._failures));
            Meteor._again(Math.random() * ceiling);
          }
        );
    },

    _read: function (reader, onLine) {
      var decoder = new TextDecoder();
      var buffered = "";
      var pump = function () {
        return reader.read().then(function (chunk) {
          if (chunk.done) return;
          buffered += decoder.decode(chunk.value, { stream: true });
          var end;
          while ((end = buffered.indexOf("\n")) >= 0) {
            onLine(buffered.slice(0, end).replace(/\r$/, ""));
            buffered = buffered.slice(end + 1);
          }
          return pump();
        });
      };
      return pump();
    },

    // One line of the stream: <script>call(args);</script>.
    _line: function (line) {
      var match = /^<script>(p|ch|eof)\((.*)\);<\/script>$/.exec(line);
      if (!match) return null;
      if (match[1] === "eof") return "eof";
      var args;
      try {
        // Herald writes every argument as JSON (numbers and JSON strings).
        args = JSON.parse("[" + match[2] + "]");
      } catch (error) {
        return null;
      }
      if (match[1] === "p") {
        Meteor.process(args[0], args[1], args[2]);
      } else {
        var state = Meteor.channels[args[0]];
        // Where the channel stands as the stream opens: resume after it. Lower than what was
        // received means the channel started over (its history was lost): say so.
        if (state) {
          var backwards = state.lastmsgreceived !== null && state.lastmsgreceived > args[1];
          if (state.lastmsgreceived === null || backwards) state.lastmsgreceived = args[1];
          if (backwards) Meteor._call("reset", args[0], args[1]);
        }
      }
      return match[1];
    },

    _end: function () {
      Meteor._running = false;
      Meteor._setStatus(6);
      Meteor._call("eof");
    },

    _again: function (delayMs) {
      if (!Meteor._running) return;
      clearTimeout(Meteor._timer);
      Meteor._timer = setTimeout(Meteor._open, delayMs);
    },

    _restart: function () {
      Meteor._stop();
      Meteor._open();
    },

    _stop: function () {
      clearTimeout(Meteor._timer);
      if (Meteor._controller) Meteor._controller.abort();
      Meteor._controller = null;
    },

    _setStatus: function (status) {
      if (Meteor.status === status) return;
      Meteor.status = status;
      Meteor._call("statuschanged", status);
    },

    _call: function (event) {
      var callback = Meteor.callbacks[event];
      if (typeof callback !== "function") return;
      try {
        callback.apply(null, Array.prototype.slice.call(arguments, 1));
      } catch (error) {
        if (global.console) global.console.error("Meteor." + event + " callback failed", error);
      }
    },
  };

  global.Meteor = Meteor;
})(typeof window !== "undefined" ? window : globalThis);
