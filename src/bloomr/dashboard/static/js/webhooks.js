// The webhooks of one stream with their delivery state: create (the secret is shown
// once), list, delete.

import { api, streamPath } from "./api.js";
import { attempt, confirmAction, copyButton, field, h, openDialog, syncRows, time } from "./ui.js";

const COLUMNS = ["URL", "Channel", "Pending", "Delivered", "Dropped", "Last status",
  "Last error", "Next attempt", "Actions"];

function delivery(hook) {
  return [hook.channel || "(stdout)", String(hook.pending), String(hook.delivered),
    String(hook.dropped), hook.last_status === null ? "—" : String(hook.last_status),
    hook.last_error ?? "—", time(hook.next_attempt_at)];
}

export function webhooksSection(streamId) {
  const path = (rest = "") => streamPath(streamId, `/webhooks${rest}`);
  const tbody = h("tbody");
  const url = h("input", { name: "url", type: "url", required: true,
    placeholder: "https://example.com/hooks/bloomr" });
  const channel = h("input", { name: "channel", placeholder: "(standard output)" });
  const secret = h("input", { name: "secret", minlength: "8",
    placeholder: "generated when empty" });

  const refresh = () => attempt(async () => {
    const { webhooks } = await api("GET", path());
    syncRows(tbody, webhooks, (w) => w.id, (w) => h("tr", {},
      h("td", {}, h("code", {}, w.url)), ...Array.from({ length: 7 }, () => h("td")),
      h("td", {}, h("button", { type: "button", class: "danger",
        "aria-label": `Delete webhook ${w.url}`, onclick: () => remove(w) }, "Delete"))),
    (row, w) => delivery(w).forEach((text, i) => { row.cells[i + 1].textContent = text; }));
  });

  async function remove(hook) {
    if (await confirmAction("Delete this webhook?", hook.url, "Delete")) {
      await attempt(() => api("DELETE", path(`/${hook.id}`)));
      await refresh();
    }
  }

  const create = (event) => attempt(async () => {
    event.preventDefault();
    const body = { url: url.value.trim() };
    if (channel.value.trim()) body.channel = channel.value.trim();
    if (secret.value) body.secret = secret.value;
    const hook = await api("POST", path(), body);
    event.target.reset();
    await refresh();
    openDialog("Webhook created", h("div", {},
      h("p", {}, "Its signing secret is shown only this once:"),
      h("p", { class: "secret" }, h("code", { id: "webhook-secret" }, hook.secret), " ",
        copyButton(hook.secret, "Copy the webhook secret"))));
  });

  const element = h("section", { class: "card", "aria-labelledby": "webhooks-title" },
    h("h2", { id: "webhooks-title" }, "Webhooks"),
    h("table", { class: "list" }, h("thead", {}, h("tr", {},
      ...COLUMNS.map((t) => h("th", { scope: "col" }, t)))), tbody),
    h("form", { class: "inline", onsubmit: create, "aria-label": "New webhook" },
      field("Webhook URL", url), field("Webhook channel", channel),
      field("Webhook secret", secret),
      h("div", { class: "buttons" }, h("button", { type: "submit" }, "Add webhook"))));
  return { element, refresh };
}
