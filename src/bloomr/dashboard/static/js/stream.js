// One stream: its state, occupancy, a live tail and its webhooks.

import { api, streamPath } from "./api.js";
import { lastMessage, rate, scriptState, streamButtons } from "./streams.js";
import { liveTail } from "./tail.js";
import { attempt, h } from "./ui.js";
import { webhooksSection } from "./webhooks.js";

const REFRESH_MS = 2000;

export function streamPage(id) {
  const title = h("h1", { id: "stream-title" }, id);
  const buttons = h("div", { class: "buttons" });
  const facts = {};
  const summary = h("dl", { class: "facts" }, ...[["id", "Stream id"], ["script", "Script"],
    ["history", "History"], ["rate", "Rate"], ["last", "Last message"]].flatMap(([key, label]) =>
    [h("dt", {}, label), (facts[key] = h("dd"))]));
  const occupancy = h("p", { id: "occupancy" }, "…");
  const tail = liveTail(id);
  const webhooks = webhooksSection(id);
  let signature = "";

  const refresh = () => attempt(async () => {
    const [stream, occupied] = await Promise.all([api("GET", streamPath(id)),
      api("GET", streamPath(id, "/occupancy"))]);
    title.textContent = stream.name || "(unnamed)";
    facts.id.replaceChildren(h("code", {}, stream.id));
    facts.script.textContent = scriptState(stream) +
      (stream.command ? ` — ${stream.command.join(" ")}` : "");
    facts.history.textContent = stream.store_history
      ? `kept ${stream.retention.max_age}, at most ${stream.retention.max_messages} messages`
      : "not stored";
    facts.rate.textContent = rate(stream);
    facts.last.textContent = lastMessage(stream);
    const channels = Object.entries(occupied.channels)
      .map(([name, n]) => `${name || "(stdout)"}: ${n}`).join(", ");
    occupancy.textContent = `${occupied.total} live subscriber${occupied.total === 1 ? "" : "s"}` +
      (channels ? ` — ${channels}` : "");
    const next = JSON.stringify([stream.name, stream.command, stream.updated_at]);
    if (next !== signature) { // buttons hold the stream they act on
      signature = next;
      buttons.replaceChildren(...streamButtons(stream, refresh, () => {
        location.hash = "#/streams";
      }));
    }
    await webhooks.refresh();
  });
  const timer = setInterval(refresh, REFRESH_MS);
  refresh();

  const element = h("div", { class: "stack" },
    h("p", {}, h("a", { href: "#/streams" }, "← All streams")),
    h("section", { class: "card", "aria-labelledby": "stream-title" },
      h("div", { class: "heading" }, title, buttons), summary,
      h("h2", {}, "Occupancy"), occupancy),
    tail.element, webhooks.element);
  return { element, leave: () => { clearInterval(timer); tail.stop(); } };
}
