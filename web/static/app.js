// Countersign approver pages: passkeys and countdowns. Everything here is an
// addition: reading and deciding work without it.
"use strict";

const b64u = {
  encode(buf) {
    const bytes = new Uint8Array(buf);
    let s = "";
    for (const b of bytes) s += String.fromCharCode(b);
    return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  },
  decode(str) {
    const s = atob(str.replace(/-/g, "+").replace(/_/g, "/"));
    const out = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
    return out.buffer;
  },
};

function csrf() {
  const el = document.querySelector("input[name=csrf]");
  return el ? el.value : "";
}

async function post(url, body) {
  const res = await fetch(url, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
    body: JSON.stringify(body || {}),
  });
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(data.error || ("the server answered " + res.status));
  return data;
}

function creationOptions(o) {
  const pk = o.publicKey;
  pk.challenge = b64u.decode(pk.challenge);
  pk.user.id = b64u.decode(pk.user.id);
  (pk.excludeCredentials || []).forEach((c) => { c.id = b64u.decode(c.id); });
  return o;
}

function requestOptions(o) {
  const pk = o.publicKey;
  pk.challenge = b64u.decode(pk.challenge);
  (pk.allowCredentials || []).forEach((c) => { c.id = b64u.decode(c.id); });
  return o;
}

function attestation(cred) {
  return {
    id: cred.id, rawId: b64u.encode(cred.rawId), type: cred.type,
    response: {
      clientDataJSON: b64u.encode(cred.response.clientDataJSON),
      attestationObject: b64u.encode(cred.response.attestationObject),
      transports: cred.response.getTransports ? cred.response.getTransports() : [],
    },
    clientExtensionResults: cred.getClientExtensionResults(),
  };
}

function assertion(cred) {
  return {
    id: cred.id, rawId: b64u.encode(cred.rawId), type: cred.type,
    response: {
      clientDataJSON: b64u.encode(cred.response.clientDataJSON),
      authenticatorData: b64u.encode(cred.response.authenticatorData),
      signature: b64u.encode(cred.response.signature),
      userHandle: cred.response.userHandle ? b64u.encode(cred.response.userHandle) : null,
    },
    clientExtensionResults: cred.getClientExtensionResults(),
  };
}

function say(text) {
  const el = document.getElementById("status");
  if (el) el.textContent = text;
}

async function register(beginURL, finishURL, extra) {
  const begin = await post(beginURL, extra);
  const cred = await navigator.credentials.create(creationOptions(begin.options));
  return post(finishURL, Object.assign({ challenge: begin.challenge, credential: attestation(cred) }, extra));
}

function wireEnroll() {
  const form = document.getElementById("enroll");
  if (!form) return;
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    say("Follow your browser's prompt to create the passkey…");
    try {
      const done = await register("/webauthn/enroll/begin", "/webauthn/enroll/finish",
        { token: form.dataset.token, name: form.elements.name.value });
      location.assign(done.next || "/");
    } catch (err) {
      say("The passkey was not created: " + err.message);
    }
  });
}

function wireAddPasskey() {
  const form = document.getElementById("add-passkey");
  if (!form) return;
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      await register("/webauthn/passkeys/begin", "/webauthn/passkeys/finish", { name: "Passkey" });
      location.reload();
    } catch (err) {
      say("The passkey was not added: " + err.message);
    }
  });
}

async function signIn(form, mediation, signal) {
  const begin = await post("/webauthn/signin/begin", {});
  const opts = requestOptions(begin.options);
  if (mediation) opts.mediation = mediation;
  if (signal) opts.signal = signal;
  const cred = await navigator.credentials.get(opts);
  const done = await post("/webauthn/signin/finish", { challenge: begin.challenge, credential: assertion(cred), next: form.dataset.next });
  location.assign(done.next || "/");
}

function wireSignIn() {
  const form = document.getElementById("signin");
  if (!form) return;
  // The autofill (conditional) request waits in the background; the button
  // aborts it first, since a browser runs one WebAuthn request at a time.
  let autofill = null;
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (autofill) { autofill.abort(); autofill = null; }
    say("Follow your browser's prompt to use your passkey…");
    try {
      await signIn(form);
    } catch (err) {
      say("You were not signed in: " + err.message);
    }
  });
  if (window.PublicKeyCredential && PublicKeyCredential.isConditionalMediationAvailable) {
    PublicKeyCredential.isConditionalMediationAvailable().then((ok) => {
      if (!ok) return;
      autofill = new AbortController();
      signIn(form, "conditional", autofill.signal).catch(() => {});
    });
  }
}

let countdownTimer = null;

function wireCountdowns() {
  const tick = () => {
    const now = Date.now();
    document.querySelectorAll("time.countdown").forEach((el) => {
      const left = Math.round((Date.parse(el.getAttribute("datetime")) - now) / 1000);
      if (left <= 0) { el.textContent = "expired"; return; }
      const h = Math.floor(left / 3600), m = Math.floor((left % 3600) / 60), s = left % 60;
      el.textContent = h > 0 ? `${h}h ${String(m).padStart(2, "0")}m left`
        : m > 0 ? `${m}m ${String(s).padStart(2, "0")}s left` : `${s}s left`;
    });
  };
  tick();
  if (!countdownTimer) countdownTimer = setInterval(tick, 1000);
}

// Live updates: the inbox and consent pages keep a WebSocket to /live and,
// when told that a request they may show changed, read the page again and
// put its new content in place. The socket reconnects with backoff, and
// reads the page again whenever it opens, as news may have come meanwhile;
// a close for a signed-out session reloads into sign-in.
// servedMain is <main> as the server last sent it (before the script added
// to it), so a re-read replaces the page only when the server's changed;
// busy is set while a passkey ceremony runs on the page.
let servedMain = null, busy = false;

// underWay says whether the page holds what a re-read would lose: a
// passkey ceremony, or a deny reason being typed.
function underWay() {
  const reason = document.getElementById("reason");
  return busy || (reason && (reason.value || document.activeElement === reason));
}

function liveRefresh() {
  if (underWay()) return;
  fetch(location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
    .then((res) => (res.ok || res.status === 404 || res.status === 410 ? res.text() : Promise.reject(res.status)))
    .then((html) => {
      const next = new DOMParser().parseFromString(html, "text/html").querySelector("main");
      const main = document.querySelector("main");
      // Checked again: typing may have begun while the page was read.
      if (!next || !main || underWay() || next.innerHTML === servedMain) return;
      servedMain = next.innerHTML;
      main.innerHTML = next.innerHTML;
      wireCountdowns();
      wireStepUp();
    })
    .catch(() => {});
}

function wireLive() {
  const path = location.pathname;
  if (!(path === "/" || path.startsWith("/approve/")) || !document.getElementById("signout") || !window.WebSocket) return;
  servedMain = document.querySelector("main").innerHTML;
  const mine = path.startsWith("/approve/") ? path.slice("/approve/".length) : null;
  let delay = 1000, leaving = false;
  window.addEventListener("beforeunload", () => { leaving = true; });
  window.addEventListener("pageshow", () => { leaving = false; });
  const connect = () => {
    const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/live");
    // On open the page is read again: news may have come before the socket.
    ws.addEventListener("open", () => { delay = 1000; liveRefresh(); });
    ws.addEventListener("message", (e) => {
      let m = {};
      try { m = JSON.parse(e.data); } catch (_) { return; }
      if (m.type === "resync" || (m.type === "changed" && (mine === null || m.request_id === mine))) liveRefresh();
    });
    ws.addEventListener("close", (e) => {
      if (leaving) return; // the page is going away (a form, a link)
      if (e.code === 1008) { location.reload(); return; }
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 30000);
    });
  };
  connect();
}

// Notifications: register the service worker, ask for permission, and
// subscribe this device with the server's VAPID key.
function wirePush() {
  const form = document.getElementById("enable-push");
  if (!form || !("serviceWorker" in navigator) || !("PushManager" in window)) return;
  form.hidden = false;
  const status = document.getElementById("push-status");
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      if (await Notification.requestPermission() !== "granted") {
        status.textContent = "Notifications are blocked for this site in this browser.";
        return;
      }
      const reg = await navigator.serviceWorker.register("/sw.js", { scope: "/" });
      await navigator.serviceWorker.ready;
      const key = await fetch("/push/key", { credentials: "same-origin" }).then((r) => r.json());
      const sub = await reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: b64u.decode(key.public_key) });
      await post("/push/subscriptions", { subscription: sub.toJSON(), name: form.elements.name.value });
      location.reload();
    } catch (err) {
      status.textContent = "Notifications were not turned on: " + err.message;
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  wireLive();
  wirePush();
  wireEnroll();
  wireAddPasskey();
  wireSignIn();
  wireCountdowns();
});

// Step-up: Approve on a request that needs it signs the request with a
// passkey (user verification required) instead of posting the form.
function wireStepUp() {
  const form = document.getElementById("approve-form");
  if (!form || form.dataset.stepUp !== "true" || form.dataset.wired) return;
  form.dataset.wired = "true";
  const id = form.action.split("/").pop();
  const status = document.createElement("p");
  status.setAttribute("role", "status");
  status.setAttribute("aria-live", "polite");
  form.after(status);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    status.textContent = "Confirm with your passkey…";
    busy = true;
    try {
      const begin = await post("/webauthn/step-up/begin", { request: id });
      const cred = await navigator.credentials.get(requestOptions(begin.options));
      const done = await post("/webauthn/step-up/finish", { request: id, challenge: begin.challenge, credential: assertion(cred) });
      location.assign(done.next);
    } catch (err) {
      status.textContent = "Not approved: " + err.message;
    } finally {
      busy = false;
    }
  });
}

document.addEventListener("DOMContentLoaded", wireStepUp);
