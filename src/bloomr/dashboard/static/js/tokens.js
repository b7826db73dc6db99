// Tokens: create (the secret shown once, with client snippets), list, revoke.

import { api } from "./api.js";
import { javascriptSnippet, pythonSnippet } from "./snippets.js";
import { attempt, confirmAction, copyButton, field, h, openDialog, syncRows, time } from "./ui.js";

function showSecret(token, streams) {
  const host = `${location.origin}/`;
  const stream = token.streams[0] === "*" ? (streams[0]?.id ?? "YOUR_STREAM_ID") : token.streams[0];
  const snippet = (title, id, code) => h("section", { "aria-labelledby": `${id}-title` },
    h("h3", { id: `${id}-title` }, title, " ", copyButton(code, `Copy the ${title} snippet`)),
    h("pre", { id, tabindex: "0" }, h("code", {}, code)));
  openDialog("Token created", h("div", { class: "stack" },
    h("p", {}, "Copy the token now: it is shown only this once."),
    h("p", { class: "secret" }, h("code", { id: "token-secret" }, token.token), " ",
      copyButton(token.token, "Copy the token")),
    snippet("JavaScript", "snippet-js", javascriptSnippet(host, stream, token.token)),
    snippet("Python", "snippet-py", pythonSnippet(host, stream, token.token))));
}

export function tokensPage() {
  const tbody = h("tbody");
  const name = h("input", { name: "name" });
  const streamsSelect = h("select", { name: "streams", multiple: true, required: true, size: 4 });
  const subscribe = h("input", { type: "checkbox", name: "scopes", value: "subscribe",
    defaultChecked: true });
  const publish = h("input", { type: "checkbox", name: "scopes", value: "publish" });
  const expires = h("input", { type: "datetime-local", name: "expires_at" });
  const channels = h("input", { name: "channels", placeholder: "build.*, errors" });
  let streams = [];

  const refresh = () => attempt(async () => {
    const [{ tokens }, listed] = await Promise.all([api("GET", "/api/tokens"),
      api("GET", "/api/streams")]);
    const ids = (list) => list.map((s) => s.id).join(",");
    if (ids(listed.streams) !== ids(streams)) {
      const chosen = new Set([...streamsSelect.selectedOptions].map((o) => o.value));
      streamsSelect.replaceChildren(h("option", { value: "*", selected: chosen.has("*") },
        "All streams (*)"), ...listed.streams.map((s) => h("option",
        { value: s.id, selected: chosen.has(s.id) }, `${s.name || "(unnamed)"} — ${s.id}`)));
    }
    streams = listed.streams;
    syncRows(tbody, tokens, (t) => t.id, (t) => h("tr", {},
      ...Array.from({ length: 7 }, () => h("td")),
      h("td", {}, h("button", { type: "button", class: "danger",
        "aria-label": `Revoke ${t.name || t.id}`, onclick: () => revoke(t) }, "Revoke"))),
    (row, t) => [t.name || "—", t.id, t.streams.join(", "), t.scopes.join(", "),
      t.channels ? t.channels.join(", ") : "all", time(t.expires_at), time(t.created_at),
    ].forEach((text, i) => {
      row.cells[i].textContent = text;
    }));
  });

  async function revoke(token) {
    const text = "Its live sessions end within a second; clients using it are refused.";
    if (await confirmAction(`Revoke ${token.name || token.id}?`, text, "Revoke")) {
      await attempt(() => api("DELETE", `/api/tokens/${encodeURIComponent(token.id)}`));
      await refresh();
    }
  }

  const create = (event) => attempt(async () => {
    event.preventDefault();
    const chosen = [...streamsSelect.selectedOptions].map((o) => o.value);
    const body = { streams: chosen.includes("*") ? ["*"] : chosen,
      scopes: [subscribe, publish].filter((c) => c.checked).map((c) => c.value) };
    if (name.value.trim()) body.name = name.value.trim();
    if (expires.value) body.expires_at = new Date(expires.value).toISOString();
    const only = channels.value.split(",").map((c) => c.trim()).filter((c) => c);
    if (only.length) body.channels = only;
    const token = await api("POST", "/api/tokens", body);
    event.target.reset();
    await refresh();
    showSecret(token, streams);
  });

  refresh();
  const element = h("div", { class: "stack" },
    h("h1", {}, "Tokens"),
    h("form", { class: "card grid", onsubmit: create, "aria-labelledby": "new-token-title" },
      h("h2", { id: "new-token-title" }, "New token"),
      field("Token name", name), field("Streams", streamsSelect, "Ctrl/⌘-click to choose several"),
      h("fieldset", {}, h("legend", {}, "Scopes"),
        h("label", { class: "check" }, subscribe, " subscribe"),
        h("label", { class: "check" }, publish, " publish")),
      field("Channels (optional)", channels,
        "Comma-separated; a trailing * matches a prefix. Empty: every channel"),
      field("Expires at (optional)", expires),
      h("div", { class: "buttons" }, h("button", { type: "submit", class: "primary" },
        "Create token"))),
    h("section", { class: "card", "aria-labelledby": "tokens-title" },
      h("h2", { id: "tokens-title" }, "Tokens"),
      h("table", { class: "list" }, h("thead", {}, h("tr", {}, ...["Name", "Token id",
        "Streams", "Scopes", "Channels", "Expires", "Created", "Actions"].map((t) =>
        h("th", { scope: "col" }, t)))), tbody)));
  return { element };
}
