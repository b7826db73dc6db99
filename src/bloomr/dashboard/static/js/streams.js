// The streams page: every stream with its script state, live rate and last message;
// create, edit, start, stop and delete.

import { api, streamPath } from "./api.js";
import { attempt, confirmAction, field, h, json, openDialog, syncRows, time } from "./ui.js";

const REFRESH_MS = 2000;

export function scriptState(stream) {
  const script = stream.script;
  if (!stream.command) return "no script";
  if (!script) return "stopped";
  const details = [script.pid ? `pid ${script.pid}` : null,
    script.exit_code !== null && script.exit_code !== undefined ? `exit ${script.exit_code}` : null,
    script.restarts ? `${script.restarts} restarts` : null].filter(Boolean);
  return script.state + (details.length ? ` (${details.join(", ")})` : "");
}

export const rate = (stream) => `${(stream.activity?.rate ?? 0).toFixed(2)}/s`;

export function lastMessage(stream) {
  const last = stream.activity?.last;
  if (!last) return "—";
  const channel = last.channel ? `[${last.channel}] ` : "";
  return `${channel}${last.preview} · ${time(last.timestamp)}`;
}

// The create / edit dialog. `stream` undefined: create.
export function editStream(stream, onSaved) {
  const s = stream ?? { name: "", store_history: true, retention: {}, command: null,
    restart: "never" };
  const name = h("input", { name: "name", value: s.name });
  const history = h("input", { type: "checkbox", name: "store_history",
    checked: s.store_history });
  const maxAge = h("input", { name: "max_age", value: s.retention.max_age ?? "7d",
    placeholder: "7d" });
  const maxMessages = h("input", { name: "max_messages", type: "number", min: "1",
    value: String(s.retention.max_messages ?? 1000000) });
  const command = h("textarea", { name: "command", rows: 3 });
  command.value = (s.command ?? []).join("\n");
  const restart = h("select", { name: "restart" },
    ...["never", "on-failure", "always"].map((p) =>
      h("option", { value: p, selected: p === s.restart }, p)));
  const error = h("p", { class: "error", role: "alert" });
  const form = h("form", { id: "stream-form", class: "grid" },
    field("Name", name),
    h("label", { class: "check" }, history, " Store history (needed for replay)"),
    field("Keep messages for", maxAge, "an age: 30m, 12h, 7d…"),
    field("Keep at most (messages)", maxMessages),
    field("Command", command, "one argument per line; empty: no script"),
    field("Restart", restart), error);
  const save = h("button", { type: "submit", form: "stream-form", class: "primary" },
    stream ? "Save" : "Create");
  const dialog = openDialog(stream ? `Edit ${s.name || s.id}` : "New stream", form, [save]);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const argv = command.value.split("\n").map((a) => a.trim()).filter(Boolean);
    const body = { name: name.value, store_history: history.checked,
      retention: { max_age: maxAge.value.trim(), max_messages: Number(maxMessages.value) },
      command: argv.length ? argv : null, restart: restart.value };
    try {
      const saved = stream
        ? await api("PATCH", streamPath(stream.id), body)
        : await api("POST", "/api/streams", body);
      dialog.close();
      onSaved(saved);
    } catch (failure) {
      error.textContent = `${failure.code}: ${failure.message}`;
    }
  });
  name.focus();
}

export async function deleteStream(stream, onDeleted) {
  const label = stream.name || stream.id;
  if (await confirmAction(`Delete ${label}?`,
    "Its history, webhooks and live sessions go with it. This cannot be undone.", "Delete")) {
    await attempt(async () => {
      await api("DELETE", streamPath(stream.id));
      onDeleted();
    });
  }
}

// Start, Stop, Edit, Delete buttons for one stream.
export function streamButtons(stream, refresh, onDeleted) {
  const label = stream.name || stream.id;
  const control = (action) => attempt(async () => {
    await api("POST", streamPath(stream.id, `/${action}`));
    await refresh();
  });
  return [
    h("button", { type: "button", "aria-label": `Start ${label}`, disabled: !stream.command,
      onclick: () => control("start") }, "Start"),
    h("button", { type: "button", "aria-label": `Stop ${label}`, disabled: !stream.command,
      onclick: () => control("stop") }, "Stop"),
    h("button", { type: "button", "aria-label": `Edit ${label}`,
      onclick: () => editStream(stream, refresh) }, "Edit"),
    h("button", { type: "button", class: "danger", "aria-label": `Delete ${label}`,
      onclick: () => deleteStream(stream, onDeleted) }, "Delete"),
  ];
}

export function streamsPage() {
  const tbody = h("tbody");
  const empty = h("p", { class: "muted", hidden: true }, "No streams yet.");
  const refresh = () => attempt(async () => {
    const { streams } = await api("GET", "/api/streams");
    empty.hidden = streams.length > 0;
    syncRows(tbody, streams, (s) => s.id, () => h("tr", {}, ...Array.from({ length: 6 },
      () => h("td"))), (row, s) => {
      const [nameCell, idCell, stateCell, rateCell, lastCell, actionsCell] = row.cells;
      const signature = JSON.stringify([s.name, s.command, s.updated_at]);
      if (row.dataset.signature !== signature) { // the buttons hold the stream: remake them
        row.dataset.signature = signature;
        nameCell.replaceChildren(h("a", { href: `#/streams/${s.id}` }, s.name || "(unnamed)"));
        idCell.replaceChildren(h("code", {}, s.id));
        actionsCell.replaceChildren(h("div", { class: "buttons" },
          ...streamButtons(s, refresh, refresh)));
      }
      stateCell.textContent = scriptState(s);
      rateCell.textContent = rate(s);
      lastCell.textContent = lastMessage(s);
    });
  });
  const timer = setInterval(refresh, REFRESH_MS);
  refresh();
  const create = h("button", { type: "button", class: "primary",
    onclick: () => editStream(undefined, refresh) }, "New stream");
  const element = h("section", { "aria-labelledby": "streams-title" },
    h("div", { class: "heading" }, h("h1", { id: "streams-title" }, "Streams"), create),
    h("table", { class: "list" },
      h("thead", {}, h("tr", {}, ...["Name", "Stream id", "Script", "Rate", "Last message",
        "Actions"].map((t) => h("th", { scope: "col" }, t)))),
      tbody), empty);
  return { element, leave: () => clearInterval(timer) };
}
