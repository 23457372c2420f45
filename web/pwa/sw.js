// Countersign service worker: Web Push and notification clicks only. It
// caches nothing and handles no fetches.
"use strict";

// A request id is a UUID. The consent page's address is made from it, on
// this origin, and never taken from a message: the message's url is not
// followed.
const requestID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const isRequestID = (id) => typeof id === "string" && requestID.test(id);

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
  if (!isRequestID(msg.request_id)) return;
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
    data: { request_id: msg.request_id },
  }));
});

// openConsent focuses an open tab of request id's consent page, or opens
// one.
async function openConsent(id) {
  const url = new URL("/approve/" + id, self.location.origin).href;
  const open = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
  for (const c of open) {
    if (c.url === url && "focus" in c) return c.focus();
  }
  return self.clients.openWindow(url);
}

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const id = event.notification.data && event.notification.data.request_id;
  if (isRequestID(id)) event.waitUntil(openConsent(id));
});
