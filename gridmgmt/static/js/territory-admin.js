/*
 * The territory check page (/admin/territory/check): its problems on a map.
 * Plain ES2017, no build step. Load leaflet.js and map.js first.
 *
 * Reads the problems from <script type="application/json" id="check-problems"> (a list of
 * {kind, label, first, second, m2, lon, lat, shape}), draws each defect's shape (GeoJSON) and
 * a coloured dot on it over the community outlines, and lets the list's "Show" buttons centre
 * the map on one and open its popup.
 */
(function () {
  "use strict";

  // The same colours as .kind-* in admin-territory.css.
  var COLOURS = {
    cell_overlap: "#b35900",
    cell_outside: "#8250df",
    community_gap: "#cf222e",
    community_overlap: "#0969da",
  };
  var FOCUS_ZOOM = 17;

  function popupText(problem) {
    // Text, never HTML: codes and names come from imported files.
    var box = document.createElement("span");
    var title = document.createElement("strong");
    title.textContent = problem.label;
    box.appendChild(title);
    box.appendChild(document.createElement("br"));
    box.appendChild(
      document.createTextNode(
        problem.first +
          (problem.second ? " · " + problem.second : "") +
          " — " +
          Number(problem.m2).toLocaleString(document.documentElement.lang || undefined) +
          " m²"
      )
    );
    return box;
  }

  function showProblems() {
    var el = document.getElementById("check-map");
    var data = document.getElementById("check-problems");
    if (!el || !data || !window.gridmgmt || !window.L) {
      return;
    }
    var problems = JSON.parse(data.textContent || "[]");
    var options = {};
    var first = null;
    if (problems.length) {
      // Start on the problems (else the outlines' extent, once they arrive, is the first view).
      first = L.latLngBounds(
        problems.map(function (problem) {
          return window.gridmgmt.latLng(problem.lon, problem.lat);
        })
      );
      options.center = [first.getCenter().lng, first.getCenter().lat];
    }
    var map = window.gridmgmt.baseMap(el, options).map;
    function noteZoom() {
      el.dataset.zoom = String(map.getZoom()); // for people's tools and the tests
    }
    map.on("zoomend", noteZoom);
    if (first) {
      map.fitBounds(first, { padding: [24, 24], maxZoom: FOCUS_ZOOM, animate: false });
    }
    noteZoom();
    // The defects themselves (an overlap, a gap), under their dots: a dot alone cannot
    // tell a sliver from a missing community.
    var shapes = problems.map(function (problem) {
      if (!problem.shape) {
        return null;
      }
      var colour = COLOURS[problem.kind] || "#57606a";
      return L.geoJSON(problem.shape, {
        interactive: false,
        style: { color: colour, weight: 2, fillColor: colour, fillOpacity: 0.35 },
      }).addTo(map);
    });
    var markers = problems.map(function (problem) {
      var marker = L.circleMarker(window.gridmgmt.latLng(problem.lon, problem.lat), {
        radius: 7,
        color: "#fff",
        weight: 2,
        fillColor: COLOURS[problem.kind] || "#57606a",
        fillOpacity: 0.9,
      });
      marker.bindPopup(popupText(problem));
      return marker.addTo(map);
    });
    el.dataset.markers = String(markers.length);
    el.dataset.shapes = String(shapes.filter(Boolean).length);
    document.querySelectorAll(".show-on-map").forEach(function (button) {
      button.addEventListener("click", function () {
        var index = Number(button.dataset.index);
        var marker = markers[index];
        if (!marker) {
          return;
        }
        var shape = shapes[index];
        var bounds = shape && shape.getBounds();
        if (bounds && bounds.isValid()) {
          map.fitBounds(bounds, { padding: [24, 24], maxZoom: FOCUS_ZOOM + 1, animate: false });
        } else {
          map.setView(marker.getLatLng(), Math.max(map.getZoom(), FOCUS_ZOOM), { animate: false });
        }
        marker.openPopup();
        noteZoom();
        el.dataset.shown = String(index);
        el.scrollIntoView({ block: "center" });
      });
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", showProblems);
  } else {
    showProblems();
  }
})();
