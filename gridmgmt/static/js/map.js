/*
 * gridmgmt maps: small helpers on top of the vendored Leaflet (static/vendor/leaflet).
 * Plain ES2017, no build step. Load leaflet.js first.
 *
 * Coordinates are (lon, lat) everywhere in this API. Leaflet wants [lat, lon]: the flip
 * happens only in latLng() below.
 *
 *   window.gridmgmt.pickerMap(elementId, options) -> {map, setPoint, getPoint, locate, clear}
 *   window.gridmgmt.pointMap(elementId, lon, lat, options) -> {map, marker}
 *   window.gridmgmt.baseMap(elementId, options) -> {map, outlines, cells} (other map pages)
 *   window.gridmgmt.latLng(lon, lat) -> [lat, lon]                    (the one flip)
 *
 * Options (each also readable from the element's data-* attribute):
 *   tiles        tile URL template ("" or absent: no tile layer, a plain grey map)  data-tiles
 *   attribution  tile attribution, plain text (shown escaped)                       data-attribution
 *   outlines     URL of GeoJSON outlines (or a GeoJSON object); failures ignored    data-outlines
 *   cells        URL of the cells-in-a-box endpoint (?bbox=w,s,e,n); default: the  data-cells
 *                cells.geojson next to an outlines URL; "none" or false: no cells
 *   labels       false (or data-labels="none"): no names or codes on the map       data-labels
 *   center       [lon, lat] of the first view                                      data-lon, data-lat
 *   zoom         first zoom level (default 16)                                     data-zoom
 *   maxZoom      highest zoom (default 19)
 * pickerMap also: onPick(lon, lat), onError(message, error), messages {unsupported, insecure,
 *   denied, unavailable, timeout} to translate the error messages, and point [lon, lat] to
 *   show an already chosen point (without calling onPick).
 *
 * What a map shows so that a place can be recognised (a city intranet is often offline):
 *   - the community outlines, with their names from zoom LABEL_MIN_ZOOM on (always);
 *   - without tiles, from zoom CELLS_MIN_ZOOM on, the unit grid cells in view with their
 *     codes (the sequence at zoom 17, the whole code from 18), fetched in CHUNK_DEG boxes as
 *     the map moves, each box one cacheable URL. With tiles the streets are on the tiles:
 *     only the community names are drawn over them;
 *   - pickerMap's locate(): the device's own position and the circle of its accuracy.
 * The features' `label` property ([lon, lat]) says where a name goes; else the shape's centre.
 */
(function () {
  "use strict";

  var DEFAULT_ZOOM = 16;
  var DEFAULT_MAX_ZOOM = 19;
  var LOCATE_TIMEOUT_MS = 10000;
  var COORD_DECIMALS = 7; // about 1 cm: enough for any report, no float noise in forms
  var LABEL_MIN_ZOOM = 13; // community names: below this they run into each other
  var CELLS_MIN_ZOOM = 17; // a 100 m cell is ~100 px wide: its code fits
  var CELLS_FULL_ZOOM = 18; // the whole 14/15-digit code, not only the sequence
  // Cells are fetched in boxes of this size (~500 m): a phone at zoom 17 needs 1 to 4 of
  // them, ~10 kB each for 100 m cells; the same box is the same URL, so the browser's cache
  // serves a box seen before.
  var CHUNK_DEG = 0.005;
  var CHUNKS_KEPT = 64; // past this many boxes in memory, start again from the view
  var MOVE_DEBOUNCE_MS = 250;

  var MESSAGES = {
    unsupported: "This browser cannot tell its location.",
    insecure: "Location needs a secure (https) connection.",
    denied: "Location permission was refused.",
    unavailable: "The location is not available right now.",
    timeout: "Finding the location took too long.",
  };

  /** The one place where (lon, lat) becomes Leaflet's [lat, lon]. */
  function latLng(lon, lat) {
    return [lat, lon];
  }

  function round(value) {
    var factor = Math.pow(10, COORD_DECIMALS);
    return Math.round(value * factor) / factor;
  }

  function element(elementId) {
    var el = typeof elementId === "string" ? document.getElementById(elementId) : elementId;
    if (!el) {
      throw new Error("gridmgmt map: no element #" + elementId);
    }
    return el;
  }

  /** An option, else the element's data-* attribute, else the fallback. */
  function option(options, el, name, fallback) {
    if (options[name] !== undefined && options[name] !== null) {
      return options[name];
    }
    var data = el.dataset[name];
    return data !== undefined && data !== "" ? data : fallback;
  }

  /** The attribution is plain text (the settings refuse tags); Leaflet shows it as HTML. */
  function escapeHtml(text) {
    var span = document.createElement("span");
    span.textContent = String(text);
    return span.innerHTML;
  }

  function number(value) {
    var n = typeof value === "number" ? value : parseFloat(value);
    return isFinite(n) ? n : null;
  }

  /** The first view's centre as [lon, lat], from options.center or data-lon / data-lat. */
  function centerOf(options, el) {
    if (Array.isArray(options.center) && options.center.length === 2) {
      return [number(options.center[0]), number(options.center[1])];
    }
    var lon = number(el.dataset.lon);
    var lat = number(el.dataset.lat);
    return lon !== null && lat !== null ? [lon, lat] : null;
  }

  /** A label on the map: text (never HTML, a name may come from an import), not clickable. */
  function labelMarker(lon, lat, className, parts) {
    var box = document.createElement("span");
    parts.forEach(function (part) {
      var span = document.createElement("span");
      span.className = part[0];
      span.textContent = part[1];
      box.appendChild(span);
    });
    var icon = L.divIcon({ className: "gm-label " + className, html: box, iconSize: null });
    return L.marker(latLng(lon, lat), { icon: icon, interactive: false, keyboard: false });
  }

  /** Where a feature's label goes: its `label` property, else the centre of its shape. */
  function labelPoint(feature, layer) {
    var at = feature.properties && feature.properties.label;
    if (Array.isArray(at) && at.length === 2 && number(at[0]) !== null && number(at[1]) !== null) {
      return [number(at[0]), number(at[1])];
    }
    var centre = layer.getBounds().getCenter();
    return [centre.lng, centre.lat];
  }

  /** Show `group` on `map` only from zoom `minZoom` on. */
  function showFromZoom(map, group, minZoom) {
    function update() {
      var wanted = map.getZoom() >= minZoom;
      if (wanted && !map.hasLayer(group)) {
        group.addTo(map);
      } else if (!wanted && map.hasLayer(group)) {
        map.removeLayer(group);
      }
    }
    map.on("zoomend", update);
    update();
  }

  function addOutlines(map, source, fitToThem, labelled) {
    var style = { color: "#0b5cad", weight: 2, opacity: 0.8, fillOpacity: 0.05 };
    function show(geojson) {
      if (!geojson) {
        return null;
      }
      var names = L.layerGroup();
      var layer = L.geoJSON(geojson, {
        style: style,
        interactive: false,
        onEachFeature: function (feature, shape) {
          var name = feature.properties && feature.properties.name;
          if (labelled && name) {
            var at = labelPoint(feature, shape);
            names.addLayer(labelMarker(at[0], at[1], "gm-label-community", [["", name]]));
          }
        },
      }).addTo(map);
      showFromZoom(map, names, LABEL_MIN_ZOOM);
      var bounds = layer.getBounds();
      if (fitToThem && bounds.isValid()) {
        map.fitBounds(bounds, { padding: [8, 8] });
      }
      return layer;
    }
    if (!source) {
      return Promise.resolve(null);
    }
    if (typeof source === "object") {
      return Promise.resolve(show(source));
    }
    return fetch(source, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        return response.ok ? response.json() : null;
      })
      .then(show)
      .catch(function () {
        return null; // outlines are a help, not a requirement: the map works without them
      });
  }

  /** The cells URL: the option, else cells.geojson next to an outlines URL, else "". */
  function cellsSource(options, el) {
    var cells = option(options, el, "cells", null);
    if (cells === false || cells === "none") {
      return "";
    }
    if (cells) {
      return String(cells);
    }
    var outlines = option(options, el, "outlines", "");
    if (typeof outlines === "string" && /communities\.geojson$/.test(outlines)) {
      return outlines.replace(/communities\.geojson$/, "cells.geojson");
    }
    return "";
  }

  /**
   * The unit grid cells in view with their codes, from zoom CELLS_MIN_ZOOM on. Fetched box by
   * box (CHUNK_DEG) after the map stops moving; a box that failed is asked again next time.
   */
  function addCells(map, el, source) {
    var group = L.layerGroup();
    var style = { color: "#57606a", weight: 1, opacity: 0.7, fill: false, dashArray: "4 3" };
    var chunks = {}; // "i,j" -> true once asked (the answer adds its cells to the group)
    var shown = {}; // cell code -> true: a cell across two boxes is drawn once
    var asked = 0;
    var timer = null;

    function fixed(value) {
      return (Math.round(value * 1e6) / 1e6).toFixed(6).replace(/\.?0+$/, "");
    }

    function addFeatures(geojson) {
      (geojson.features || []).forEach(function (feature) {
        var code = feature.properties && feature.properties.code;
        if (!code || shown[code]) {
          return;
        }
        shown[code] = true;
        var shape = L.geoJSON(feature, { style: style, interactive: false });
        group.addLayer(shape);
        var at = labelPoint(feature, shape);
        // The sequence is what differs between neighbours; the whole code from CELLS_FULL_ZOOM.
        group.addLayer(
          labelMarker(at[0], at[1], "gm-label-cell", [
            ["gm-cell-community", code.slice(0, 12)],
            ["gm-cell-sequence", code.slice(12)],
          ])
        );
      });
      el.dataset.cellsShown = String(Object.keys(shown).length); // for tools and tests
    }

    function fetchChunk(i, j) {
      var key = i + "," + j;
      if (chunks[key]) {
        return;
      }
      chunks[key] = true;
      asked += 1;
      var bbox = [i * CHUNK_DEG, j * CHUNK_DEG, (i + 1) * CHUNK_DEG, (j + 1) * CHUNK_DEG]
        .map(fixed)
        .join(",");
      var url = source + (source.indexOf("?") < 0 ? "?" : "&") + "bbox=" + bbox;
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) {
          if (!response.ok) {
            throw new Error("cells " + response.status);
          }
          return response.json();
        })
        .then(addFeatures)
        .catch(function () {
          delete chunks[key]; // a help, not a requirement: try again when the map moves
        });
    }

    function update() {
      timer = null;
      var zoom = map.getZoom();
      el.classList.toggle("gm-cells-full", zoom >= CELLS_FULL_ZOOM);
      if (zoom < CELLS_MIN_ZOOM) {
        return;
      }
      if (asked > CHUNKS_KEPT) {
        group.clearLayers();
        chunks = {};
        shown = {};
        asked = 0;
      }
      var view = map.getBounds();
      var west = Math.floor(view.getWest() / CHUNK_DEG);
      var east = Math.floor(view.getEast() / CHUNK_DEG);
      var south = Math.floor(view.getSouth() / CHUNK_DEG);
      var north = Math.floor(view.getNorth() / CHUNK_DEG);
      for (var i = west; i <= east; i += 1) {
        for (var j = south; j <= north; j += 1) {
          fetchChunk(i, j);
        }
      }
    }

    function later() {
      clearTimeout(timer);
      timer = setTimeout(update, MOVE_DEBOUNCE_MS);
    }

    showFromZoom(map, group, CELLS_MIN_ZOOM);
    map.on("moveend zoomend", later);
    update();
    return group;
  }

  /** A Leaflet map with optional tiles, outlines and labels; returns {map, outlines (a Promise
   * of the outlines' layer), cells (the cells' layer group, or null without)}. */
  function baseMap(elementId, options) {
    options = options || {};
    var el = element(elementId);
    var center = centerOf(options, el);
    var zoom = number(option(options, el, "zoom", DEFAULT_ZOOM));
    var maxZoom = number(options.maxZoom) || DEFAULT_MAX_ZOOM;
    var tiles = option(options, el, "tiles", "");

    var map = L.map(el, {
      maxZoom: maxZoom,
      minZoom: 1,
      attributionControl: Boolean(tiles),
    });
    if (tiles) {
      L.tileLayer(tiles, {
        maxZoom: maxZoom,
        attribution: escapeHtml(option(options, el, "attribution", "")),
      }).addTo(map);
    }
    if (center) {
      map.setView(latLng(center[0], center[1]), zoom === null ? DEFAULT_ZOOM : zoom);
    } else {
      map.setView(latLng(0, 0), 2); // replaced by the outlines' extent once they arrive
    }
    var labelled = options.labels !== false && el.dataset.labels !== "none";
    var outlines = addOutlines(map, option(options, el, "outlines", ""), !center, labelled);
    // With tiles the streets are drawn already: cell codes over them would only clutter.
    var cells = !tiles && labelled ? cellsSource(options, el) : "";
    el.classList.toggle("gm-plain", !tiles);
    return { map: map, outlines: outlines, cells: cells ? addCells(map, el, cells) : null };
  }

  /** A map where the user taps or clicks to place one marker; reports it through onPick. */
  function pickerMap(elementId, options) {
    options = options || {};
    var onPick = options.onPick || function () {};
    var onError = options.onError || function () {};
    var messages = Object.assign({}, MESSAGES, options.messages || {});
    var el = element(elementId);
    var base = baseMap(el, options);
    var map = base.map;
    var marker = null;
    var point = null;
    var here = null; // the device's position: a dot in its accuracy circle (locate())

    function setPoint(lon, lat) {
      point = [round(lon), round(lat)];
      if (marker) {
        marker.setLatLng(latLng(point[0], point[1]));
      } else {
        marker = L.marker(latLng(point[0], point[1]), { draggable: true, keyboard: true });
        marker.on("dragend", function () {
          var moved = marker.getLatLng().wrap();
          pick(moved.lng, moved.lat);
        });
        marker.addTo(map);
      }
      return point;
    }

    function pick(lon, lat) {
      var chosen = setPoint(lon, lat);
      onPick(chosen[0], chosen[1]);
    }

    function clear() {
      if (marker) {
        map.removeLayer(marker);
      }
      marker = null;
      point = null;
    }

    function fail(message, error) {
      onError(message, error || null);
      return null;
    }

    /** Draw the device's position and how far off it may be; bring both into view (close
     * enough for the cells' codes when the fix is good, the whole circle when it is not). */
    function showHere(lon, lat, accuracy) {
      var at = latLng(lon, lat);
      var radius = number(accuracy) || 0;
      if (here) {
        map.removeLayer(here);
      }
      here = L.layerGroup([
        L.circle(at, {
          radius: radius,
          className: "gm-here-accuracy",
          interactive: false,
          color: "#1a73e8",
          weight: 1,
          fillOpacity: 0.12,
        }),
        L.circleMarker(at, {
          radius: 7,
          className: "gm-here",
          interactive: false,
          color: "#ffffff",
          weight: 2,
          fillColor: "#1a73e8",
          fillOpacity: 1,
        }),
      ]).addTo(map);
      el.dataset.accuracy = String(Math.round(radius)); // for tools and tests
      var zoom = Math.max(map.getZoom(), 17);
      var circle = L.latLng(at).toBounds(2 * radius);
      if (radius > 0 && map.getBoundsZoom(circle) < zoom) {
        map.fitBounds(circle, { padding: [16, 16] });
      } else {
        map.setView(at, zoom);
      }
    }

    /** Ask the device for its position; place the marker there. Resolves to [lon, lat] or null. */
    function locate() {
      if (window.isSecureContext === false) {
        return Promise.resolve(fail(messages.insecure));
      }
      if (!navigator.geolocation) {
        return Promise.resolve(fail(messages.unsupported));
      }
      return new Promise(function (resolve) {
        navigator.geolocation.getCurrentPosition(
          function (position) {
            var lon = position.coords.longitude;
            var lat = position.coords.latitude;
            pick(lon, lat);
            showHere(lon, lat, position.coords.accuracy);
            resolve(point.slice());
          },
          function (error) {
            var key = { 1: "denied", 2: "unavailable", 3: "timeout" }[error.code] || "unavailable";
            resolve(fail(messages[key], error));
          },
          { enableHighAccuracy: true, timeout: LOCATE_TIMEOUT_MS, maximumAge: 0 }
        );
      });
    }

    map.on("click", function (event) {
      var at = event.latlng.wrap();
      pick(at.lng, at.lat);
    });

    if (Array.isArray(options.point) && options.point.length === 2) {
      setPoint(number(options.point[0]), number(options.point[1]));
    }

    return {
      map: map,
      outlines: base.outlines,
      setPoint: setPoint,
      getPoint: function () {
        return point ? point.slice() : null;
      },
      locate: locate,
      clear: clear,
    };
  }

  /** A read-only map centred on one point (a case's location). */
  function pointMap(elementId, lon, lat, options) {
    var el = element(elementId);
    options = Object.assign({}, options || {}, { center: [lon, lat] });
    if (options.zoom === undefined && !el.dataset.zoom) {
      options.zoom = 17; // a case is one spot: start close
    }
    var base = baseMap(el, options);
    var marker = L.marker(latLng(lon, lat), { keyboard: false }).addTo(base.map);
    if (options.popup) {
      var text = document.createElement("span");
      text.textContent = options.popup; // text, never HTML: it may come from a citizen
      marker.bindPopup(text);
    }
    return { map: base.map, marker: marker, outlines: base.outlines };
  }

  window.gridmgmt = Object.assign(window.gridmgmt || {}, {
    latLng: latLng,
    baseMap: baseMap,
    pickerMap: pickerMap,
    pointMap: pointMap,
  });
})();
