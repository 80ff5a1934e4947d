/*
 * The service worker of the phone app (served at /sw.js by cases/offline_views.py, which
 * writes in the version and the lists below: this file under /static/ is its source).
 *
 * Caches, each dropped when a new version activates unless said otherwise:
 *   gm-shell-VERSION  the app's own files (CSS, scripts, Leaflet, icons): cache first;
 *   gm-data           the territory's outlines and the grid cells the map has shown: public
 *                     data, stale-while-revalidate (kept across versions and sign-outs); and
 *                     the cells kept ahead for a person's map ("keep" message: for an inspector,
 *                     the boxes around their tasks and recent reports), listed under
 *                     KEPT_CELLS_KEY, replaced at each keep and dropped with the person's pages;
 *   gm-pages          the pages a person opens offline (report, tasks, outbox): network
 *                     first, the kept copy only without a signal. They show a person's name
 *                     and tasks, so they are dropped at sign-out and whenever a page says
 *                     another person (or nobody) is signed in ("owner" message).
 * Nothing else is kept: the APIs, photos and case pages always go to the network.
 * Background Sync ("gm-outbox") sends the outbox when the network returns, page open or not.
 */
/* global importScripts, gridmgmtOutbox */
"use strict";
var VERSION = "__GRIDMGMT_VERSION__";
var SHELL = [] /*__SHELL__*/;
var DATA = [] /*__DATA__*/;
var SHELL_CACHE = "gm-shell-" + VERSION;
var DATA_CACHE = "gm-data";
var PAGES_CACHE = "gm-pages";
var OWNER_KEY = "/__gm_owner";
var KEPT_CELLS_KEY = "/__gm_kept_cells"; // in DATA_CACHE: the cells' URLs kept for the person
var OFFLINE_PAGES = ["/report", "/tasks", "/outbox"];
var NETWORK_WAIT_MS = 6000; // a page from the network, or else the kept copy after this

importScripts("__CORE__" + "?v=" + VERSION); // its own URL per version: no stale copy

self.addEventListener("install", function (event) {
  event.waitUntil(
    caches.open(SHELL_CACHE).then(function (cache) {
      // From the server, not the HTTP cache: nginx lets browsers keep /static/ for 7 days, and
      // a new version must not keep the old files.
      return cache.addAll(SHELL.map(function (url) { return new Request(url, { cache: "reload" }); }));
    }).then(function () {
      return caches.open(DATA_CACHE).then(function (cache) {
        return Promise.all(DATA.map(function (url) {
          return cache.add(url).catch(function () { return null; });
        }));
      });
    }).then(function () { return self.skipWaiting(); })
  );
});

self.addEventListener("activate", function (event) {
  event.waitUntil(
    caches.keys().then(function (names) {
      return Promise.all(names.filter(function (name) {
        return name.indexOf("gm-shell-") === 0 && name !== SHELL_CACHE;
      }).map(function (name) { return caches.delete(name); }));
    }).then(function () { return self.clients.claim(); })
  );
});

/** Keep a page for offline use, unless it shows a one-time message (a flash: "case ...
 * reported"), which must not come back every time the page is opened without a signal. A page
 * of another person than the kept pages' drops them first (even a page without our script). */
function keepPage(cache, path, response) {
  return response.clone().text().then(function (body) {
    if (body.indexOf('class="flashes"') >= 0) return null;
    var found = /<meta name="gridmgmt-user" content="([^"]*)">/.exec(body);
    var user = found ? found[1] : "";
    return keptOwner().then(function (owner) {
      if (owner === user) return cache.put(path, response);
      return forgetPages(user).then(function () {
        return caches.open(PAGES_CACHE).then(function (fresh) { return fresh.put(path, response); });
      });
    });
  });
}

function pagePath(url) {
  return OFFLINE_PAGES.indexOf(url.pathname) >= 0 ? url.pathname : null;
}

function fromNetworkOrKept(request, path) {
  var network = fetch(request).then(function (response) {
    if (response.ok && !response.redirected && response.type === "basic") {
      var copy = response.clone();
      caches.open(PAGES_CACHE).then(function (cache) { return keepPage(cache, path, copy); });
    }
    return response;
  });
  var kept = function () {
    return caches.open(PAGES_CACHE).then(function (cache) {
      return cache.match(path).then(function (hit) { return hit || cache.match("/outbox"); });
    });
  };
  return new Promise(function (resolve) {
    var timer = setTimeout(function () {
      kept().then(function (hit) { if (hit) resolve(hit); });
    }, NETWORK_WAIT_MS);
    network.then(function (response) {
      clearTimeout(timer);
      resolve(response);
    }, function () {
      clearTimeout(timer);
      kept().then(function (hit) {
        resolve(hit || new Response("offline", { status: 503, headers: { "Content-Type": "text/plain" } }));
      });
    });
  });
}

function staleWhileRevalidate(request) {
  return caches.open(DATA_CACHE).then(function (cache) {
    // Public data: the same URL is the same answer, whatever the request's headers.
    return cache.match(request, { ignoreVary: true }).then(function (hit) {
      var network = fetch(request).then(function (response) {
        if (response.ok) cache.put(request, response.clone());
        return response;
      });
      if (hit) {
        network.catch(function () { return null; });
        return hit;
      }
      return network;
    });
  });
}

function cacheFirst(request) {
  return caches.open(SHELL_CACHE).then(function (cache) {
    return cache.match(request, { ignoreSearch: true }).then(function (hit) {
      return hit || fetch(request).then(function (response) {
        if (response.ok) cache.put(request, response.clone());
        return response;
      });
    });
  });
}

self.addEventListener("fetch", function (event) {
  var request = event.request;
  if (request.method !== "GET") return;
  var url = new URL(request.url);
  if (url.origin !== self.location.origin) return;
  if (request.mode === "navigate") {
    var path = pagePath(url);
    if (path) {
      event.respondWith(fromNetworkOrKept(request, path));
    } else {
      event.respondWith(fetch(request).catch(function () {
        return caches.open(PAGES_CACHE).then(function (cache) { return cache.match("/outbox"); })
          .then(function (hit) {
            return hit || new Response("offline", { status: 503, headers: { "Content-Type": "text/plain" } });
          });
      }));
    }
    return;
  }
  if (url.pathname.indexOf("/static/") === 0) {
    event.respondWith(cacheFirst(request));
  } else if (/^\/territory\/.*\.geojson$/.test(url.pathname)) {
    event.respondWith(staleWhileRevalidate(request));
  }
});

/** Drop the kept pages and the cells kept for the person (and say whose they are now). */
function forgetPages(owner) {
  return forgetCells().then(function () {
    return caches.delete(PAGES_CACHE);
  }).then(function () {
    if (owner === undefined) return null;
    return caches.open(PAGES_CACHE).then(function (cache) {
      return cache.put(OWNER_KEY, new Response(owner));
    });
  });
}

function keptCells(cache) {
  return cache.match(KEPT_CELLS_KEY).then(function (hit) {
    return hit ? hit.json() : [];
  }).catch(function () { return []; });
}

/** The cells kept for the person who was signed in: the list says which part of the city
 * they work in, so it goes with their pages (cells the map showed stay: public data). */
function forgetCells() {
  return caches.open(DATA_CACHE).then(function (cache) {
    return keptCells(cache).then(function (urls) {
      return Promise.all(urls.map(function (url) { return cache.delete(url); }));
    }).then(function () { return cache.delete(KEPT_CELLS_KEY); });
  });
}

/** Keep these cells' URLs for the map without a signal, instead of those kept before. A box
 * already kept is not asked again: territory data changes with an import, and a box the map
 * shows online is refreshed then (stale-while-revalidate). */
function keepCells(urls) {
  return caches.open(DATA_CACHE).then(function (cache) {
    return keptCells(cache).then(function (before) {
      var gone = before.filter(function (url) { return urls.indexOf(url) < 0; });
      return Promise.all(urls.map(function (url) {
        return cache.match(url, { ignoreVary: true }).then(function (hit) {
          if (hit) return null;
          return fetch(url, { credentials: "same-origin" }).then(function (response) {
            return response.ok ? cache.put(url, response) : null;
          });
        }).catch(function () { return null; });
      })).then(function () {
        return Promise.all(gone.map(function (url) { return cache.delete(url); }));
      }).then(function () {
        return cache.put(KEPT_CELLS_KEY, new Response(JSON.stringify(urls), {
          headers: { "Content-Type": "application/json" },
        }));
      });
    });
  });
}

function keptOwner() {
  return caches.open(PAGES_CACHE).then(function (cache) {
    return cache.match(OWNER_KEY).then(function (hit) { return hit ? hit.text() : null; });
  });
}

self.addEventListener("message", function (event) {
  var data = event.data || {};
  var reply = function (value) {
    if (event.ports && event.ports[0]) event.ports[0].postMessage(value);
  };
  if (data.type === "version") {
    reply({ version: VERSION });
  } else if (data.type === "owner") {
    // A page says who is signed in: another person's (or nobody's) pages are dropped.
    event.waitUntil(keptOwner().then(function (owner) {
      return owner === data.user ? null : forgetPages(data.user);
    }).then(function () { reply({ ok: true }); }));
  } else if (data.type === "keep") {
    // Keep these pages and cells for offline use now (the person may never open them before
    // going). The pages first: a page of another person drops the cells kept before.
    event.waitUntil(caches.open(PAGES_CACHE).then(function (cache) {
      return Promise.all((data.pages || []).map(function (path) {
        return fetch(path, { credentials: "same-origin" }).then(function (response) {
          if (response.ok && !response.redirected) return keepPage(cache, path, response);
          return null;
        }).catch(function () { return null; });
      }));
    }).then(function () {
      return Array.isArray(data.cells) ? keepCells(data.cells) : null;
    }).then(function () { reply({ ok: true }); }));
  } else if (data.type === "logout") {
    event.waitUntil(forgetPages().then(function () { reply({ ok: true }); }));
  } else if (data.type === "flush") {
    event.waitUntil(gridmgmtOutbox.flush().then(function (how) { reply({ how: how }); }));
  }
});

self.addEventListener("sync", function (event) {
  if (event.tag === "gm-outbox") {
    event.waitUntil(gridmgmtOutbox.flush().then(function (how) {
      if (how === "later" || how === "offline") throw new Error("still offline"); // retried
      return how;
    }));
  }
});
