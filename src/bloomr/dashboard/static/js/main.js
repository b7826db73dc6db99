// The dashboard's entry: sign-in, the header, and a hash router over the pages.

import { adminKey, ApiError, signIn, signOut } from "./api.js";
import { streamPage } from "./stream.js";
import { streamsPage } from "./streams.js";
import { tokensPage } from "./tokens.js";
import { clearFlash, field, h } from "./ui.js";

const main = document.getElementById("main");
const nav = document.querySelector("header nav");
const signOutButton = document.getElementById("sign-out");
let leave = () => {}; // stops the current page's timers and sockets

function signInPage() {
  const key = h("input", { type: "password", name: "key", required: true,
    autocomplete: "current-password" });
  const error = h("p", { class: "error", role: "alert" });
  const submit = async (event) => {
    event.preventDefault();
    try {
      await signIn(key.value.trim());
    } catch (failure) {
      error.textContent = failure instanceof ApiError && failure.status === 401
        ? "That admin key is not valid." : `Cannot sign in: ${failure.message}`;
      key.focus();
      return;
    }
    location.hash = "#/streams";
    route();
  };
  const form = h("form", { class: "card narrow", onsubmit: submit },
    h("h1", {}, "Sign in"),
    h("p", {}, "Use the admin key printed by ", h("code", {}, "bloomr serve"),
      " at its first start (or ", h("code", {}, "bloomr admin-key"), ")."),
    field("Admin key", key), error,
    h("button", { type: "submit", class: "primary" }, "Sign in"));
  return { element: form, focus: key };
}

const routes = [
  [/^#\/streams\/([A-Za-z0-9]+)$/, (id) => streamPage(id)],
  [/^#\/tokens$/, () => tokensPage()],
  [/^#\/streams$/, () => streamsPage()],
];

function route() {
  leave();
  leave = () => {};
  clearFlash();
  const signedIn = Boolean(adminKey());
  nav.hidden = signOutButton.hidden = !signedIn;
  let page;
  if (!signedIn) {
    page = signInPage();
  } else {
    const [pattern, make] = routes.find(([p]) => p.test(location.hash)) ?? routes[2];
    page = make(...(location.hash.match(pattern)?.slice(1) ?? []));
  }
  leave = page.leave ?? leave;
  main.replaceChildren(page.element);
  for (const link of nav.querySelectorAll("a")) {
    const current = location.hash.startsWith(link.getAttribute("href"));
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  (page.focus ?? main).focus();
}

signOutButton.addEventListener("click", () => {
  signOut();
  location.hash = "";
  route();
});
addEventListener("hashchange", route);
addEventListener("bloomr:unauthorized", () => { signOut(); route(); });
route();
