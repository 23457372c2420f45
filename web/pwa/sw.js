// Countersign service worker: Web Push and notification clicks only. It
// caches nothing and handles no fetches.
"use strict";

const titles = {
  approve: "An agent asks for your approval",
  step_up: "An agent asks for your approval with a passkey",
  quorum: "An agent asks for your group's approval",
};

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

self.addEventListener("push", (event) => {
  let msg = {};
  try {
    msg = event.data ? event.data.json() : {};
  } catch (_) {
    return;
  }
  if (!msg.request_id || typeof msg.url !== "string" || !msg.url.startsWith("/approve/")) return;
  if (msg.type === "decided") {
    // Decided elsewhere: close this request's notification here.
    event.waitUntil(self.registration.getNotifications({ tag: msg.request_id })
      .then((list) => list.forEach((n) => n.close())));
    return;
  }
  const lines = [];
  if (msg.binding_message) lines.push(msg.binding_message);
  if (msg.summary) lines.push(msg.summary);
  event.waitUntil(self.registration.showNotification(titles[msg.need] || titles.approve, {
    body: lines.join("\n"),
    tag: msg.request_id,
    renotify: false,
    requireInteraction: true,
    data: { url: msg.url },
  }));
});

// openConsent focuses an open tab of the consent page, or opens one.
async function openConsent(path) {
  const url = new URL(path, self.location.origin).href;
  const open = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
  for (const c of open) {
    if (c.url === url && "focus" in c) return c.focus();
  }
  return self.clients.openWindow(url);
}

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const path = event.notification.data && event.notification.data.url;
  if (typeof path === "string" && path.startsWith("/approve/")) event.waitUntil(openConsent(path));
});
