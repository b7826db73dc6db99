// A live tail of one stream over bloomr's own Socket.IO, with the admin key as the
// credential. It resumes after a drop: the server's connection state recovery when it
// can, and in any case `replay=<last id seen>` for the next handshake, so a fresh
// connection also goes on exactly after the last message shown.

import { io } from "../vendor/socket.io.esm.min.js";
import { adminKey } from "./api.js";
import { field, h, json } from "./ui.js";

const MAX_LINES = 1000;

export function liveTail(streamId) {
  let socket = null;
  const channel = h("input", { name: "channel", list: "tail-channels",
    placeholder: "(standard output)" });
  const replay = h("input", { name: "replay", placeholder: "10m, an ISO date or a message id" });
  const metadata = h("input", { type: "checkbox", name: "includeMetadata" });
  // Connect again applies changed settings: the old connection is closed first
  const connect = h("button", { type: "submit", class: "primary" }, "Connect");
  const disconnect = h("button", { type: "button", disabled: true, onclick: () => stop() },
    "Disconnect");
  const clear = h("button", { type: "button", onclick: () => log.replaceChildren() }, "Clear");
  const status = h("p", { class: "status", role: "status" }, "Not connected.");
  const log = h("ol", { class: "log", "aria-label": "Messages", tabindex: "0" });
  const section = h("section", { class: "card", "aria-labelledby": "tail-title" },
    h("h2", { id: "tail-title" }, "Live tail"),
    h("form", { class: "inline", onsubmit: (event) => { event.preventDefault(); start(); } },
      h("datalist", { id: "tail-channels" }, h("option", { value: "errors" })),
      field("Channel", channel), field("Replay", replay),
      h("label", { class: "check" }, metadata, " Include metadata"),
      h("div", { class: "buttons" }, connect, disconnect, clear)),
    status, log);

  const say = (text) => { status.textContent = text; };
  const append = (text, kind) => {
    log.append(h("li", { class: kind }, text));
    while (log.childElementCount > MAX_LINES) log.firstElementChild.remove();
    log.scrollTop = log.scrollHeight;
  };

  function show(envelope) {
    const text = metadata.checked ? JSON.stringify(envelope) : json(envelope.data);
    append(text, envelope.replayed ? "replayed" : "live");
  }

  function start() {
    stop();
    const query = { stream: streamId, includeMetadata: "true" };
    if (channel.value.trim()) query.channel = channel.value.trim();
    if (replay.value.trim()) query.replay = replay.value.trim();
    // ids come with the envelopes: `includeMetadata` is always on, the checkbox only
    // chooses what is shown
    // the key goes in the CONNECT packet (`auth`), never in a URL that a log could keep
    socket = io(location.origin, { query, auth: { token: adminKey() }, forceNew: true });
    let lastId = null;
    socket.on("connect", () => say(socket.recovered ? "Resumed (recovered)." : "Connected."));
    socket.on("replay_end", ({ count }) => say(`Live (replayed ${count}).`));
    socket.on("message", (envelope, offset) => {
      lastId = offset ?? envelope.id;
      section.dataset.lastId = lastId;
      show(envelope);
    });
    socket.on("warning", (warning) => {
      append(`warning ${warning.code}: ${warning.message}`, "warning");
    });
    socket.on("error", (error) => {
      append(`error ${error.code}: ${error.message}`, "error");
      say(`Error: ${error.code}.`);
    });
    socket.on("disconnect", (reason) => {
      if (!socket.active) finish(`Disconnected (${reason}).`);
      else say("Connection lost: reconnecting…");
    });
    socket.io.on("reconnect_attempt", () => {
      if (lastId) socket.io.opts.query.replay = lastId; // resume exactly after it
    });
    disconnect.disabled = false;
    say("Connecting…");
  }

  function finish(text) {
    socket?.close();
    socket = null;
    disconnect.disabled = true;
    say(text);
  }

  function stop() {
    if (socket) finish("Not connected.");
  }

  return { element: section, stop };
}
