// A few DOM helpers: an element builder, dialogs, messages and formatting.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "class") el.className = value;
    else if (name in el && typeof value !== "string") el[name] = value;
    else el.setAttribute(name, value === true ? "" : value);
  }
  el.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

// A labelled form field: <label> wrapping its text and control.
export function field(text, control, hint) {
  return h("label", { class: "field" }, h("span", {}, text), control,
    hint ? h("small", {}, hint) : null);
}

// A modal <dialog>: Escape and the close buttons close it; focus returns to the opener.
export function openDialog(title, body, actions = []) {
  const opener = document.activeElement;
  const close = () => dialog.close();
  const dialog = h("dialog", { "aria-labelledby": "dialog-title" },
    h("h2", { id: "dialog-title" }, title), body,
    h("div", { class: "actions" }, ...actions,
      h("button", { type: "button", onclick: close }, actions.length ? "Cancel" : "Close")));
  dialog.addEventListener("close", () => {
    dialog.remove();
    if (opener instanceof HTMLElement) opener.focus();
  });
  document.body.append(dialog);
  dialog.showModal();
  return dialog;
}

// Ask before something that cannot be undone; resolves true on "confirm".
export function confirmAction(title, text, label) {
  return new Promise((resolve) => {
    let confirmed = false;
    const yes = h("button", { type: "button", class: "danger", onclick: () => {
      confirmed = true;
      dialog.close();
    } }, label);
    const dialog = openDialog(title, h("p", {}, text), [yes]);
    dialog.addEventListener("close", () => resolve(confirmed));
  });
}

export function flash(text, kind = "error") {
  const box = document.getElementById("flash");
  box.className = kind;
  box.textContent = text;
}

export const clearFlash = () => flash("", "");

// Run an action, reporting its failure in the flash box.
export async function attempt(action) {
  try {
    clearFlash();
    return await action();
  } catch (error) {
    flash(`${error.code ? error.code + ": " : ""}${error.message}`);
    return undefined;
  }
}

export function copyButton(text, label) {
  return h("button", { type: "button", "aria-label": label, onclick: async (event) => {
    await navigator.clipboard?.writeText(text).catch(() => {});
    event.target.textContent = "Copied";
  } }, "Copy");
}

export const json = (value) => (typeof value === "string" ? value : JSON.stringify(value));
export const time = (iso) => (iso ? new Date(iso).toLocaleString() : "—");

// Keep a <tbody>'s rows in step with `items` by key: rows are updated in place, so a
// refresh never moves the keyboard focus.
export function syncRows(tbody, items, key, create, update) {
  const rows = new Map([...tbody.rows].map((row) => [row.dataset.key, row]));
  let previous = null;
  for (const item of items) {
    let row = rows.get(key(item));
    rows.delete(key(item));
    if (!row) {
      row = create(item);
      row.dataset.key = key(item);
    }
    update(row, item);
    const next = previous ? previous.nextSibling : tbody.firstChild;
    if (row !== next) tbody.insertBefore(row, next);
    previous = row;
  }
  for (const row of rows.values()) row.remove();
}
