/*
 * The phone app on every page: registers the service worker, tells it who is signed in (so
 * that one person's kept pages are never shown to another), drops the kept pages at sign-out,
 * and sends the outbox (outbox-core.js) when the network returns.
 *
 * On pages that have them:
 *   - the report form (report.js hands its submit to takeForm): the report and its photos,
 *     shrunk to the server's limits, go to the outbox first, then to the server;
 *   - task forms (form[data-offline-action], the inspector's task list): the action is queued
 *     with the case version it was made on; a stale one comes back as a conflict;
 *   - #outbox: the list of what waits, is being sent, was sent (with the case number), was
 *     refused (with the server's reason) or clashed with a change, each to retry or delete.
 */
(function () {
  "use strict";
  var core = window.gridmgmtOutbox;
  if (!core || !window.indexedDB) return;
  var gm = (window.gridmgmt = window.gridmgmt || {});
  var MAX_SIDE = 2048; // px: a photo's longest side kept on the phone (the server takes 40 MP)
  var KEEP_AS_IS = 2 * 1024 * 1024; // a smaller JPEG/PNG/WebP within MAX_SIDE is kept unchanged
  var MAX_PHOTOS = 6;
  var FLUSH_EVERY_MS = 20000;
  var KEEP_PAGES_EVERY_MS = 10 * 60 * 1000;
  var userMeta = document.querySelector('meta[name="gridmgmt-user"]');
  var user = userMeta ? userMeta.content : "";

  function text(id, values) {
    var el = document.getElementById(id);
    var out = el ? el.innerHTML.trim() : id;
    Object.keys(values || {}).forEach(function (key) {
      out = out.split("{" + key + "}").join(values[key]);
    });
    var div = document.createElement("div");
    div.innerHTML = out;
    return div.textContent;
  }

  // --- the service worker ------------------------------------------------------------------
  function ask(worker, message) {
    return new Promise(function (resolve) {
      if (!worker) return resolve(null);
      var channel = new MessageChannel();
      var timer = setTimeout(function () { resolve(null); }, 3000);
      channel.port1.onmessage = function (event) { clearTimeout(timer); resolve(event.data); };
      worker.postMessage(message, [channel.port2]);
    });
  }

  var ready = null;
  if ("serviceWorker" in navigator) {
    ready = navigator.serviceWorker.register("/sw.js", { scope: "/", updateViaCache: "none" }).then(function () {
      return navigator.serviceWorker.ready;
    }).then(function (registration) {
      return ask(registration.active, { type: "owner", user: user }).then(function () {
        return registration;
      });
    }).catch(function () { return null; });
  } else {
    ready = Promise.resolve(null);
  }

  function worker() {
    return ready.then(function (registration) { return registration && registration.active; });
  }

  function keepPages() {
    if (!navigator.onLine) return;
    var key = "gm-pages-kept:" + user;
    var last = Number(localStorage.getItem(key) || 0);
    if (Date.now() - last < KEEP_PAGES_EVERY_MS) return;
    core.session(true).then(function (who) {
      if (!who || who.user !== user) return;
      return worker().then(function (active) {
        return ask(active, { type: "keep", pages: who.pages, cells: who.cells || [] });
      }).then(function () { localStorage.setItem(key, String(Date.now())); });
    });
  }

  // Sign-out: the kept pages go first (they show this person's name and tasks), and the
  // person's sent items (what is not on the server yet stays, to be sent in their session).
  Array.prototype.forEach.call(document.querySelectorAll("form.logout"), function (form) {
    form.addEventListener("submit", function (event) {
      if (form.dataset.cleared) return;
      event.preventDefault();
      Object.keys(localStorage).forEach(function (key) {
        if (key.indexOf("gm-pages-kept:") === 0) localStorage.removeItem(key);
      });
      var sentGone = user ? core.forgetSent(user).catch(function () { return 0; }) : Promise.resolve(0);
      sentGone.then(worker).then(function (active) {
        return ask(active, { type: "logout" });
      }).then(function () {
        form.dataset.cleared = "1";
        form.submit();
      });
    });
  });

  function askSync() {
    ready.then(function (registration) {
      if (registration && registration.sync) {
        return registration.sync.register("gm-outbox").catch(function () { return null; });
      }
    });
  }

  function persist() {
    if (navigator.storage && navigator.storage.persist) {
      navigator.storage.persist().catch(function () { return false; });
    }
  }

  var flushing = null;
  function flush(force, flash) {
    if (flushing) return flushing;
    flushing = core.flush({ force: force, flash: flash }).catch(function () { return "later"; }).then(function (how) {
      flushing = null;
      return how;
    });
    return flushing;
  }

  // --- a kept page's own forms ------------------------------------------------------------
  // A page the worker kept may be hours old: its CSRF token has expired (the server takes one
  // for an hour), or belongs to a session the browser has since closed. A plain form (sign
  // out, a case action, a language) posted from it would be refused, so before it goes, the
  // page's tokens are replaced by the session's current one. Task forms and the report form
  // go through the outbox, which asks for a fresh token anyway.
  var TOKEN_FRESH_MS = 30 * 60 * 1000;
  var loadedAt = Date.now();
  var nav = window.performance && performance.getEntriesByType ? performance.getEntriesByType("navigation")[0] : null;
  // Opened without a signal, or only after the worker's wait: most likely the kept copy.
  var keptCopy = !navigator.onLine || !!(nav && nav.responseStart - nav.startTime >= 5000);

  function tokenStale() {
    return keptCopy || Date.now() - loadedAt > TOKEN_FRESH_MS;
  }

  function freshTokens() {
    return core.session().then(function (who) {
      if (!who || !who.csrf_token) return false;
      Array.prototype.forEach.call(document.querySelectorAll("input[name=csrf_token]"), function (input) {
        input.value = who.csrf_token;
      });
      var meta = document.querySelector('meta[name="csrf-token"]');
      if (meta) meta.content = who.csrf_token;
      keptCopy = false;
      loadedAt = Date.now();
      return true;
    });
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.dataset.tokenChecked) { delete form.dataset.tokenChecked; return; }
    if ((form.method || "").toLowerCase() !== "post" || !form.querySelector("input[name=csrf_token]")) return;
    if (form.hasAttribute("data-offline-action") || form.id === "report-form") return;
    if (!tokenStale() || !navigator.onLine) return;
    event.preventDefault();
    event.stopImmediatePropagation();
    var submitter = event.submitter;
    freshTokens().then(function () {
      form.dataset.tokenChecked = "1";
      if (form.requestSubmit) form.requestSubmit(submitter || undefined);
      else form.submit(); // older browsers: without the button's own value
    });
  }, true);
  window.addEventListener("online", function () { if (tokenStale()) freshTokens(); });

  // --- photos ------------------------------------------------------------------------------
  function shrink(file) {
    var kind = file.type || "";
    var small = file.size <= KEEP_AS_IS && /^image\/(jpeg|png|webp)$/.test(kind);
    return createImageBitmap(file, { imageOrientation: "from-image" }).then(function (bitmap) {
      var side = Math.max(bitmap.width, bitmap.height);
      if (small && side <= MAX_SIDE) return file;
      var scale = Math.min(1, MAX_SIDE / side);
      var canvas = document.createElement("canvas");
      canvas.width = Math.max(1, Math.round(bitmap.width * scale));
      canvas.height = Math.max(1, Math.round(bitmap.height * scale));
      canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
      return new Promise(function (resolve) { canvas.toBlob(resolve, "image/jpeg", 0.85); });
    });
  }

  // --- the report form ---------------------------------------------------------------------
  var located = null; // the position the device gave, with its accuracy (map.js shows it)
  var picker = document.getElementById("picker");
  if (picker && window.MutationObserver) {
    new MutationObserver(function () {
      var lon = document.getElementById("lon");
      var lat = document.getElementById("lat");
      if (picker.dataset.accuracy && lon && lat) {
        located = { lon: lon.value, lat: lat.value, accuracy: Number(picker.dataset.accuracy) };
      }
    }).observe(picker, { attributes: true, attributeFilter: ["data-accuracy"] });
  }

  function reportStatus(form, message, kind) {
    var status = form.querySelector("#report-status");
    if (!status) return;
    status.textContent = message;
    status.className = "status " + (kind || "");
  }

  var SKIPPED = { csrf_token: true, idempotency_key: true };

  function reportOf(form) {
    var fields = {};
    var data = new FormData(form);
    data.forEach(function (value, name) {
      if (typeof value !== "string" || SKIPPED[name] || name in fields) return;
      if (value !== "") fields[name] = value;
    });
    var accuracy = null;
    if (located && located.lon === fields.lon && located.lat === fields.lat) {
      accuracy = located.accuracy;
    }
    var category = form.querySelector("select[name=category]");
    var label = category && category.selectedOptions.length ? category.selectedOptions[0].textContent.trim() : "";
    return { fields: fields, captured_at: core.nowIso(), gps_accuracy: accuracy, label: label };
  }

  /** Take the report form's submission into the outbox; true when it did. */
  function takeForm(form) {
    var files = [];
    Array.prototype.forEach.call(form.querySelectorAll("input[type=file]"), function (input) {
      Array.prototype.push.apply(files, Array.prototype.slice.call(input.files || []));
    });
    if (files.length > MAX_PHOTOS) {
      reportStatus(form, text("ob-too-many", { most: MAX_PHOTOS }), "error");
      return true;
    }
    var report = reportOf(form);
    var button = form.querySelector("button[type=submit]");
    if (button) button.disabled = true;
    reportStatus(form, text("ob-saving"), "busy");
    var photos = [];
    var blobs = [];
    var chain = Promise.resolve();
    files.forEach(function (file) {
      chain = chain.then(function () {
        return shrink(file).then(function (shrunk) {
          var id = core.uuid();
          photos.push({ id: id, name: file.name || "photo.jpg", size: shrunk.size,
            captured_at: core.isoOf(file.lastModified || Date.now()), sent: false });
          blobs.push({ id: id, blob: shrunk });
        }, function () {
          throw new Error(text("ob-photo-bad", { name: file.name }));
        });
      });
    });
    chain.then(function () {
      var item = { id: core.uuid(), kind: "report", owner: user, created: Date.now(),
        state: "waiting", error: "", tries: 0, report: report, photos: photos };
      return core.add(item, blobs).then(function () {
        persist();
        askSync();
        // Sent at once, the page goes to the case: the server says "reported" there.
        return flush(true, item.id).then(function () { return core.get(item.id); });
      });
    }).then(function (item) {
      if (button) button.disabled = false;
      if (item && item.state === "sent" && item.result && item.result.url) {
        window.location.assign(item.result.url);
        return;
      }
      if (item && item.state === "refused") {
        reportStatus(form, item.error, "error");
        return;
      }
      // Kept: ready for the next report at the same place.
      Array.prototype.forEach.call(form.querySelectorAll("input[type=file], textarea"), function (input) {
        input.value = "";
      });
      reportStatus(form, text("ob-saved"), "offline");
    }).catch(function (error) {
      if (button) button.disabled = false;
      reportStatus(form, error.message, "error");
    });
    return true;
  }

  // --- task actions ------------------------------------------------------------------------
  Array.prototype.forEach.call(document.querySelectorAll("form[data-offline-action]"), function (form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var submitter = event.submitter;
      var action = submitter && submitter.value ? submitter.value : form.dataset.offlineAction;
      var fields = {};
      new FormData(form).forEach(function (value, name) {
        if (typeof value === "string" && value !== "" && !SKIPPED[name] && name !== "version" && name !== "next") {
          fields[name] = value;
        }
      });
      var item = { id: core.uuid(), kind: "action", owner: user, created: Date.now(),
        state: "waiting", error: "", tries: 0,
        action: { case_id: Number(form.dataset.caseId), number: form.dataset.caseNumber,
          action: action, version: Number(form.dataset.version), fields: fields,
          label: submitter ? submitter.textContent.trim() : action } };
      var status = form.querySelector(".status");
      core.add(item, []).then(function () {
        persist();
        askSync();
        form.querySelectorAll("button").forEach(function (b) { b.disabled = true; });
        if (status) status.textContent = text("ob-action-saved");
        return flush(true);
      });
    });
  });

  // --- the list ----------------------------------------------------------------------------
  var list = document.getElementById("outbox");
  function when(ms) {
    try {
      return new Date(ms).toLocaleString(document.documentElement.lang || undefined,
        { dateStyle: "short", timeStyle: "short" });
    } catch (e) {
      return new Date(ms).toLocaleString();
    }
  }

  function el(tag, className, content) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (content) node.textContent = content;
    return node;
  }

  function row(item) {
    var li = el("li", "outbox-item state-" + item.state);
    li.dataset.id = item.id;
    li.dataset.state = item.state;
    var head = el("div", "outbox-head");
    var title = item.kind === "action"
      ? text("ob-title-action", { action: item.action.label, number: item.action.number })
      : (item.report.label || text("ob-title-report"));
    head.appendChild(el("strong", "outbox-title", title));
    var stateText = text("ob-state-" + item.state, { number: item.result ? item.result.number : "" });
    head.appendChild(el("span", "badge outbox-state", stateText));
    li.appendChild(head);
    var facts = [text("ob-made", { time: when(item.created) })];
    if (item.kind === "report") {
      if (item.report.gps_accuracy != null) facts.push(text("ob-gps", { metres: Math.round(item.report.gps_accuracy) }));
      if (item.photos.length) {
        var sent = item.photos.filter(function (p) { return p.sent; }).length;
        facts.push(text("ob-photos", { sent: sent, count: item.photos.length }));
      }
    }
    li.appendChild(el("p", "outbox-facts muted", facts.join(" · ")));
    if (item.state === "sent" && item.result && item.result.followup_code) {
      // Sent in the background, the report's page never showed its code: it is kept here.
      li.appendChild(el("p", "outbox-code", text("ob-code", { code: item.result.followup_code })));
    }
    if (item.error && item.state !== "sent") {
      var reason = el("p", "outbox-reason", item.error);
      if (item.state === "refused" || item.state === "conflict") reason.setAttribute("role", "alert");
      li.appendChild(reason);
    }
    var actions = el("div", "row outbox-actions");
    var target = item.result || (item.kind === "action"
      ? { url: "/cases/" + item.action.case_id, number: item.action.number } : null);
    if (target && target.url && user) {
      var link = el("a", "button secondary", text("ob-open", { number: target.number }));
      link.href = target.url;
      actions.appendChild(link);
    }
    if (item.state === "waiting" || item.state === "refused") {
      // A conflict is not retried: the case changed, the person redoes the task on its page.
      var again = el("button", "button secondary outbox-retry", text(item.state === "waiting" ? "ob-send-now" : "ob-retry"));
      again.type = "button";
      again.addEventListener("click", function () { core.retry(item.id); });
      actions.appendChild(again);
    }
    var drop = el("button", "button secondary outbox-delete", text(item.state === "sent" ? "ob-clear" : "ob-delete"));
    drop.type = "button";
    drop.addEventListener("click", function () {
      if (item.state !== "sent" && !window.confirm(text("ob-delete-confirm"))) return;
      core.remove(item.id);
    });
    actions.appendChild(drop);
    li.appendChild(actions);
    return li;
  }

  function render() {
    if (!list) return Promise.resolve();
    return core.all().then(function (items) {
      var mine = items.filter(function (item) { return item.owner === user; }).reverse();
      var others = items.length - mine.length;
      var ul = el("ul", "outbox-list");
      mine.forEach(function (item) { ul.appendChild(row(item)); });
      list.replaceChildren();
      var count = function (states) {
        return mine.filter(function (i) { return states.indexOf(i.state) >= 0; }).length;
      };
      var waiting = count(["waiting", "sending"]);
      var attention = count(["refused", "conflict"]);
      if (waiting || !attention) {
        list.appendChild(el("p", "outbox-summary", waiting ? text("ob-waiting", { count: waiting }) : text("ob-empty")));
      }
      if (attention) list.appendChild(el("p", "outbox-attention", text("ob-attention", { count: attention })));
      if (others) list.appendChild(el("p", "muted outbox-others", text("ob-others", { count: others })));
      if (mine.length) list.appendChild(ul);
      list.dataset.count = String(mine.length);
      list.dataset.waiting = String(waiting + attention);
      return storageNote();
    });
  }

  function storageNote() {
    var note = document.getElementById("outbox-storage");
    if (!note || !navigator.storage || !navigator.storage.estimate) return Promise.resolve();
    return navigator.storage.estimate().then(function (estimate) {
      var size = function (bytes) {
        if (bytes >= 1073741824) return (bytes / 1073741824).toFixed(1) + " GB";
        if (bytes >= 1048576) return (bytes / 1048576).toFixed(1) + " MB";
        return Math.ceil(bytes / 1024) + " KB";
      };
      note.textContent = text("ob-storage", { used: size(estimate.usage || 0), quota: size(estimate.quota || 0) });
      note.dataset.usage = String(estimate.usage || 0);
    });
  }

  core.listen(function () { render(); });
  render();

  // --- when to send ------------------------------------------------------------------------
  window.addEventListener("online", function () { flush(true).then(render); keepPages(); });
  setInterval(function () {
    if (navigator.onLine && document.visibilityState === "visible") flush(false);
  }, FLUSH_EVERY_MS);
  ready.then(function () {
    keepPages();
    if (navigator.onLine) flush(true);
  });

  gm.outbox = {
    takeForm: takeForm,
    flush: flush,
    render: render,
    core: core,
    version: function () {
      return worker().then(function (active) { return ask(active, { type: "version" }); });
    },
  };
})();
