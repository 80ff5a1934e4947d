/*
 * Reports near me (cases.participation_views), two places:
 *
 * - the report page's panel (#already-reported): once a class and a point are chosen, the
 *   open reports of that class within the class's duplicate radius are fetched from
 *   /nearby.json?duplicates=1 and listed, each with "Add your support" (POST
 *   /track/<number>/support with the contact given on the form): the person supports the
 *   existing case instead of filing a duplicate, and hears what happens to it by the e-mail
 *   or phone given (a signed-in citizen without one is told to give one: accounts have none);
 * - the /nearby page: its map shows the listed reports (#nearby-markers, rounded positions)
 *   and "Use my location" fills the point.
 *
 * Plain ES2017, no build step; map.js (and Leaflet) first. Text comes from <template>s of the
 * page (translated there) and from the server's JSON (already in the reader's language).
 */
(function () {
  "use strict";

  function text(id, values) {
    var node = document.getElementById(id);
    var result = node ? node.innerHTML : "";
    Object.keys(values || {}).forEach(function (key) {
      result = result.replace("{" + key + "}", values[key]);
    });
    var span = document.createElement("span");
    span.innerHTML = result; // the template's own (escaped) text, back to plain text
    return span.textContent;
  }

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  }

  // --- the report page's panel ---------------------------------------------------------------
  var panel = document.getElementById("already-reported");
  if (panel) {
    var form = document.getElementById("report-form");
    var list = document.getElementById("already-list");
    var status = document.getElementById("already-status");
    var lon = document.getElementById("lon");
    var lat = document.getElementById("lat");
    var category = document.getElementById("category");
    var maySupport = panel.dataset.maySupport === "yes";
    var asked = 0; // the latest request wins: an older answer arriving late is dropped
    var lastKey = null; // the class and point last looked for: a change event without a
    // change (a field losing the focus) keeps the list, and what the person did with it

    var field = function (name) {
      var input = form.elements[name];
      return input && input.value ? input.value : "";
    };

    var support = function (item, button) {
      button.disabled = true;
      status.textContent = "";
      var body = { email: field("email"), phone: field("phone"), name: field("name") };
      fetch(panel.dataset.support.replace("NUMBER", encodeURIComponent(item.number)), {
        method: "POST",
        credentials: "same-origin",
        headers: {
          "Accept": "application/json",
          "Content-Type": "application/json",
          "X-CSRFToken": csrfToken(),
          "X-Localized-Errors": "1",
        },
        body: JSON.stringify(body),
      }).then(function (response) {
        return response.json().catch(function () { return {}; }).then(function (data) {
          if (!response.ok) {
            var error = data.error || {};
            status.textContent = error.localized || error.message || response.statusText;
            status.className = "status error";
            button.disabled = false;
            return;
          }
          status.textContent = text(data.created ? "msg-supported" : "msg-already-supported");
          if (!body.email && !body.phone) {
            // signed in without a contact: counted, but nobody to tell (accounts have no
            // address); the button stays, to add it again once a contact is given
            status.textContent += " " + text("msg-no-contact");
            button.disabled = false;
          }
          status.className = "status ok";
          var count = button.parentNode.querySelector(".supporters");
          if (count) count.textContent = text("msg-supporters", { count: data.supporters });
        });
      }).catch(function () {
        status.textContent = text("msg-offline");
        status.className = "status offline";
        button.disabled = false;
      });
    };

    var show = function (items) {
      list.innerHTML = "";
      status.textContent = "";
      panel.hidden = items.length === 0;
      items.forEach(function (item) {
        var li = document.createElement("li");
        li.className = "nearby-item";
        li.dataset.case = item.number;
        var link = document.createElement("a");
        link.href = item.url;
        link.target = "_blank";
        link.rel = "noopener";
        link.textContent = item.number;
        li.appendChild(link);
        li.appendChild(document.createTextNode(" " + item.category_name + " · " + item.status_text));
        var facts = document.createElement("span");
        facts.className = "muted";
        facts.textContent = " · " + text("msg-away", { metres: item.distance_m }) + " · ";
        li.appendChild(facts);
        var count = document.createElement("span");
        count.className = "supporters muted";
        count.textContent = text("msg-supporters", { count: item.supporters });
        li.appendChild(count);
        if (maySupport) {
          var button = document.createElement("button");
          button.type = "button";
          button.className = "button secondary support";
          button.textContent = text("msg-support");
          button.addEventListener("click", function () { support(item, button); });
          li.appendChild(document.createTextNode(" "));
          li.appendChild(button);
        }
        list.appendChild(li);
      });
    };

    var look = function () {
      var x = parseFloat(lon.value);
      var y = parseFloat(lat.value);
      var key = [category.value, x, y].join("|");
      if (key === lastKey) return;
      lastKey = key;
      if (!category.value || !isFinite(x) || !isFinite(y)) {
        show([]);
        return;
      }
      var mine = ++asked;
      var url = panel.dataset.url + "?duplicates=1&category=" + encodeURIComponent(category.value)
        + "&lon=" + x + "&lat=" + y + "&page_size=10";
      fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (response) { return response.ok ? response.json() : { items: [] }; })
        .then(function (data) { if (mine === asked) show(data.items || []); })
        .catch(function () { /* offline: no panel, the report still goes */ });
    };

    [lon, lat, category].forEach(function (input) {
      input.addEventListener("change", look);
    });
    look();
  }

  // --- the /nearby page ----------------------------------------------------------------------
  var mapBox = document.getElementById("nearby-map");
  if (mapBox && window.gridmgmt && window.L) {
    var shown = window.gridmgmt.baseMap("nearby-map", { cells: "none" });
    var data = document.getElementById("nearby-markers");
    var markers = data ? JSON.parse(data.textContent || "[]") : [];
    var points = [];
    markers.forEach(function (item) {
      var at = window.gridmgmt.latLng(item.lon, item.lat);
      points.push(at);
      L.circleMarker(at, {
        radius: 7,
        color: item.open ? "#bd0026" : "#31a354",
        weight: 2,
        fillOpacity: 0.6,
      }).bindTooltip(item.number + " · " + item.category_name + " · " + item.status_text)
        .addTo(shown.map);
    });
    var radius = parseFloat(mapBox.dataset.radius);
    var centre = [parseFloat(mapBox.dataset.lon), parseFloat(mapBox.dataset.lat)];
    if (isFinite(radius) && isFinite(centre[0]) && isFinite(centre[1])) {
      // the circle asked about: the map shows all of it
      var circle = L.circle(window.gridmgmt.latLng(centre[0], centre[1]), {
        radius: radius, color: "#0b5cad", weight: 1, dashArray: "4 4", fill: false,
        interactive: false,
      }).addTo(shown.map);
      shown.map.fitBounds(circle.getBounds(), { padding: [12, 12] });
    } else if (points.length > 1) {
      shown.map.fitBounds(points, { padding: [24, 24], maxZoom: 17 });
    }
    var locate = document.getElementById("nearby-locate");
    if (locate && navigator.geolocation) {
      locate.addEventListener("click", function () {
        navigator.geolocation.getCurrentPosition(function (where) {
          document.getElementById("nearby-lon").value = where.coords.longitude.toFixed(5);
          document.getElementById("nearby-lat").value = where.coords.latitude.toFixed(5);
          document.getElementById("nearby-community").value = "";
          document.getElementById("nearby-form").submit();
        });
      });
    }
  }
})();
