/*
 * The phone's outbox: what it keeps until the server has confirmed it, and how it sends it.
 * Loaded by the pages (outbox.js) and by the service worker (sw.js, for Background Sync), so
 * it touches no DOM.
 *
 * IndexedDB "gridmgmt-outbox":
 *   items  {id (a UUID made here), kind "report"|"action", owner (user id, "" anonymous),
 *           created (ms), state waiting|sending|sent|refused|conflict, error, tries, next (ms),
 *           report {fields, captured_at, gps_accuracy, label}, photos [{id, name, size,
 *           captured_at, sent}], action {case_id, number, action, version, fields, label},
 *           result {case_id, number, url, followup_code (a citizen's report)}}
 *   The item's id is its UUID on the server: a report's submission_uuid, an action's
 *   action_uuid, so that a resend after a lost reply is answered, not done twice.
 *   blobs  {id (the photo's UUID), item, blob}: apart, so that listing items reads no photo
 *
 * Sending is oldest first, one item at a time under a Web Lock (a page and the service worker
 * never send the same item at once; were they to, the UUIDs make the server store it once).
 * A person's items go only in their own session: another person signed in on a shared phone
 * never sends them, nor sees them; at sign-out the person's sent items are dropped
 * (forgetSent), what has not reached the server stays. A refusal (4xx) keeps the item with
 * the server's reason until the person retries or deletes it; a network failure, 5xx or 429
 * waits and tries again.
 */
(function (scope) {
  "use strict";
  var DB_NAME = "gridmgmt-outbox";
  var CHANNEL = "gridmgmt-outbox";
  var LOCK = "gridmgmt-outbox-send";
  var MAX_WAIT_MS = 5 * 60 * 1000;
  var SENT_KEPT_MS = 7 * 24 * 3600 * 1000; // sent items are listed a week, without photos
  var dbPromise = null;

  function request(req) {
    return new Promise(function (resolve, reject) {
      req.onsuccess = function () { resolve(req.result); };
      req.onerror = function () { reject(req.error); };
    });
  }

  function open() {
    if (!dbPromise) {
      dbPromise = new Promise(function (resolve, reject) {
        var req = indexedDB.open(DB_NAME, 1);
        req.onupgradeneeded = function () {
          var db = req.result;
          db.createObjectStore("items", { keyPath: "id" }).createIndex("created", "created");
          db.createObjectStore("blobs", { keyPath: "id" }).createIndex("item", "item");
        };
        req.onsuccess = function () { resolve(req.result); };
        req.onerror = function () { reject(req.error); };
      });
    }
    return dbPromise;
  }

  function store(name, mode) {
    return open().then(function (db) {
      return db.transaction(name, mode).objectStore(name);
    });
  }

  function uuid() {
    if (scope.crypto && scope.crypto.randomUUID) return scope.crypto.randomUUID();
    var b = scope.crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    var h = Array.prototype.map.call(b, function (x) { return (x + 256).toString(16).slice(1); });
    return [h.slice(0, 4).join(""), h.slice(4, 6).join(""), h.slice(6, 8).join(""),
      h.slice(8, 10).join(""), h.slice(10).join("")].join("-");
  }

  function nowIso() {
    // The phone's time with its offset: what the server keeps as the capture time.
    var d = new Date();
    var off = -d.getTimezoneOffset();
    var sign = off >= 0 ? "+" : "-";
    var pad = function (n) { return String(Math.floor(Math.abs(n))).padStart(2, "0"); };
    var local = new Date(d.getTime() + off * 60000).toISOString().slice(0, 19);
    return local + sign + pad(off / 60) + ":" + pad(off % 60);
  }

  function isoOf(ms) {
    return new Date(ms).toISOString();
  }

  function all() {
    return store("items", "readonly").then(function (items) {
      return request(items.index("created").getAll());
    });
  }

  function get(id) {
    return store("items", "readonly").then(function (items) { return request(items.get(id)); });
  }

  function put(item) {
    return store("items", "readwrite").then(function (items) { return request(items.put(item)); });
  }

  /** Keep a new item and its photos ({id, blob} each) in one transaction. */
  function add(item, blobs) {
    return open().then(function (db) {
      return new Promise(function (resolve, reject) {
        var tx = db.transaction(["items", "blobs"], "readwrite");
        tx.objectStore("items").put(item);
        (blobs || []).forEach(function (b) {
          tx.objectStore("blobs").put({ id: b.id, item: item.id, blob: b.blob });
        });
        tx.oncomplete = function () { notify(); resolve(item); };
        tx.onerror = function () { reject(tx.error); };
        tx.onabort = function () { reject(tx.error); };
      });
    });
  }

  function blob(id) {
    return store("blobs", "readonly").then(function (blobs) { return request(blobs.get(id)); });
  }

  function dropBlob(id) {
    return store("blobs", "readwrite").then(function (blobs) { return request(blobs.delete(id)); });
  }

  /** Delete an item and its photos (the person's choice: nothing else deletes an unsent one). */
  function remove(id) {
    return open().then(function (db) {
      return new Promise(function (resolve, reject) {
        var tx = db.transaction(["items", "blobs"], "readwrite");
        tx.objectStore("items").delete(id);
        var index = tx.objectStore("blobs").index("item");
        index.openKeyCursor(IDBKeyRange.only(id)).onsuccess = function (event) {
          var cursor = event.target.result;
          if (cursor) {
            tx.objectStore("blobs").delete(cursor.primaryKey);
            cursor.continue();
          }
        };
        tx.oncomplete = function () { notify(); resolve(); };
        tx.onerror = function () { reject(tx.error); };
      });
    });
  }

  /** At sign-out: drop the person's sent items (their words and case numbers; the server has
   * them, on "My cases" and the cases' pages). What has not reached the server stays (waiting,
   * refused, in conflict), and so does a sent report with a follow-up code, which is nowhere
   * else. Resolves to how many went. */
  function forgetSent(owner) {
    return all().then(function (items) {
      var sent = items.filter(function (item) {
        return item.owner === owner && item.state === "sent" &&
          !(item.result && item.result.followup_code);
      });
      return Promise.all(sent.map(function (item) { return remove(item.id); })).then(function () {
        return sent.length;
      });
    });
  }

  /** Send a refused or waiting item again now. */
  function retry(id) {
    return get(id).then(function (item) {
      if (!item) return null;
      item.state = "waiting";
      item.error = "";
      item.next = 0;
      // The person asked for it: wait for a send in progress (which read the list before
      // this item was waiting again) rather than leave it to the next round.
      return put(item).then(function () { notify(); return flush({ force: true, wait: true }); });
    });
  }

  function notify(detail) {
    if (typeof BroadcastChannel === "undefined") return;
    var channel = new BroadcastChannel(CHANNEL);
    channel.postMessage(detail || { type: "changed" });
    channel.close();
  }

  function listen(callback) {
    if (typeof BroadcastChannel === "undefined") return;
    new BroadcastChannel(CHANNEL).onmessage = function (event) { callback(event.data); };
  }

  /** Who is signed in, a fresh CSRF token, the pages to keep (keep: also the cells to keep
   * for the map); null without a network. */
  function session(keep) {
    return fetch("/api/offline/session" + (keep ? "?keep=1" : ""), {
      credentials: "same-origin",
      cache: "no-store",
      headers: { Accept: "application/json" },
    }).then(function (response) {
      return response.ok ? response.json() : null;
    }).catch(function () { return null; });
  }

  // What came back: "ok" (with the body), "refused" (4xx: the reason), "conflict" (409),
  // or "later" (no network, 5xx, 429: try again).
  function outcome(response) {
    return response.json().catch(function () { return {}; }).then(function (body) {
      if (response.ok) return { kind: "ok", body: body };
      var error = body.error || {};
      var reason = error.localized || error.message || response.statusText || String(response.status);
      if (response.status >= 500 || response.status === 429 || response.status === 408) {
        return { kind: "later", reason: reason };
      }
      return { kind: response.status === 409 ? "conflict" : "refused", reason: reason, code: error.code };
    });
  }

  function post(url, body, token, flash) {
    var headers = { Accept: "application/json", "X-CSRFToken": token, "X-Localized-Errors": "1" };
    // Only the page that goes to the new case next asks the server to say so there; sends in
    // the background would pile "Case N reported" up for whatever page comes next.
    if (flash) headers["X-Flash"] = "1";
    if (!(body instanceof FormData)) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(body);
    }
    return fetch(url, { method: "POST", body: body, credentials: "same-origin", headers: headers })
      .then(outcome, function () { return { kind: "later", reason: "" }; });
  }

  function sendReport(item, who, flash) {
    var token = who.csrf_token;
    var steps = Promise.resolve({ kind: "ok" });
    if (!item.result) {
      var body = Object.assign({}, item.report.fields, {
        submission_uuid: item.id,
        captured_at: item.report.captured_at,
      });
      if (item.report.gps_accuracy != null) body.gps_accuracy = item.report.gps_accuracy;
      steps = post("/api/reports", body, token, flash).then(function (got) {
        if (got.kind !== "ok") return got;
        item.result = { case_id: got.body.id, number: got.body.number, url: got.body.url };
        if (!who.role || who.role === "citizen") item.result.followup_code = got.body.followup_code;
        return put(item).then(function () { notify(); return got; });
      });
    }
    // Then each photo in a request of its own: a weak signal restarts one photo, not all.
    (item.photos || []).forEach(function (photo) {
      steps = steps.then(function (got) {
        if (got.kind !== "ok" || photo.sent) return got;
        return blob(photo.id).then(function (kept) {
          if (!kept) { photo.sent = true; return got; } // already gone: nothing to send
          var form = new FormData();
          form.append("photo_uuid", photo.id);
          if (photo.captured_at) form.append("captured_at", photo.captured_at);
          form.append("photo", kept.blob, photo.name || "photo.jpg");
          return post("/api/reports/" + item.id + "/photos", form, token).then(function (sent) {
            if (sent.kind !== "ok") return sent;
            photo.sent = true;
            return put(item).then(function () { return dropBlob(photo.id); }).then(function () {
              notify();
              return sent;
            });
          });
        });
      });
    });
    return steps;
  }

  function sendAction(item, token) {
    var a = item.action;
    var body = Object.assign({}, a.fields || {}, { version: a.version, action_uuid: item.id });
    return post("/api/cases/" + a.case_id + "/actions/" + a.action, body, token).then(function (got) {
      if (got.kind === "ok") item.result = { case_id: a.case_id, number: a.number, url: "/cases/" + a.case_id };
      return got;
    });
  }

  function sendOne(item, who, flash) {
    item.state = "sending";
    return put(item).then(function () {
      notify();
      return item.kind === "action" ? sendAction(item, who.csrf_token) : sendReport(item, who, flash);
    }).then(function (got) {
      item.tries = (item.tries || 0) + 1;
      if (got.kind === "ok") {
        item.state = "sent";
        item.error = "";
        item.sent_at = Date.now();
      } else if (got.kind === "later") {
        item.state = "waiting";
        item.error = got.reason || "";
        item.next = Date.now() + Math.min(MAX_WAIT_MS, 2000 * Math.pow(2, item.tries));
      } else {
        item.state = got.kind; // refused or conflict: kept until the person deals with it
        item.error = got.reason;
      }
      return put(item).then(function () { notify(); return got.kind; });
    });
  }

  function due(item, user, now) {
    return item.owner === user && (item.state === "waiting" || item.state === "sending") &&
      (!item.next || item.next <= now);
  }

  function withLock(work, wait) {
    if (scope.navigator && scope.navigator.locks) {
      if (wait) return scope.navigator.locks.request(LOCK, work);
      return scope.navigator.locks.request(LOCK, { ifAvailable: true }, function (lock) {
        return lock ? work() : "busy";
      });
    }
    return work();
  }

  /** Send what is due, oldest first; stops at the first "no network". Resolves to "idle"
   * (nothing due: no request made), "offline", or how the last item went. options.force:
   * now, whatever the waits; options.flash: the id of the report the page shows next;
   * options.wait: after a send in progress (in this page, another or the worker) rather than
   * "busy". */
  function flush(options) {
    var force = options && options.force;
    var flashed = options && options.flash;
    return withLock(function () {
      return all().then(function (items) {
        var now = Date.now();
        var until = force ? Infinity : now;
        var owners = {};
        items.forEach(function (item) { if (due(item, item.owner, until)) owners[item.owner] = true; });
        if (!Object.keys(owners).length) {
          return prune(items, now).then(function () { return "idle"; }); // no request at all
        }
        return session().then(function (who) {
          if (!who) return "offline";
          if (!who.csrf_token) return "later"; // no session yet: the next page starts one
          var pending = items.filter(function (item) { return due(item, who.user, until); });
          var chain = Promise.resolve("sent");
          pending.forEach(function (item) {
            chain = chain.then(function (last) {
              if (last === "later") return last; // the network went: the rest waits too
              return sendOne(item, who, item.id === flashed);
            });
          });
          return chain.then(function (last) {
            return prune(items, now).then(function () { return last; });
          });
        });
      });
    }, options && options.wait);
  }

  function prune(items, now) {
    var old = items.filter(function (item) {
      return item.state === "sent" && item.sent_at && now - item.sent_at > SENT_KEPT_MS;
    });
    return Promise.all(old.map(function (item) { return remove(item.id); }));
  }

  scope.gridmgmtOutbox = {
    open: open,
    uuid: uuid,
    nowIso: nowIso,
    isoOf: isoOf,
    all: all,
    get: get,
    add: add,
    put: put,
    remove: remove,
    forgetSent: forgetSent,
    retry: retry,
    flush: flush,
    session: session,
    notify: notify,
    listen: listen,
  };
})(typeof self !== "undefined" ? self : window);
