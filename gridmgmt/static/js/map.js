/*
 * gridmgmt maps: small helpers on top of the vendored Leaflet (static/vendor/leaflet).
 * Plain ES2017, no build step. Load leaflet.js first.
 *
 * Coordinates are (lon, lat) everywhere in this API. Leaflet wants [lat, lon]: the flip
 * happens only in latLng() below.
 *
 *   window.gridmgmt.pickerMap(elementId, options) -> {map, setPoint, getPoint, locate, clear}
 *   window.gridmgmt.pointMap(elementId, lon, lat, options) -> {map, marker}
 *   window.gridmgmt.baseMap(elementId, options) -> {map, outlines}   (for other map pages)
 *   window.gridmgmt.latLng(lon, lat) -> [lat, lon]                    (the one flip)
 *
 * Options (each also readable from the element's data-* attribute):
 *   tiles        tile URL template ("" or absent: no tile layer, a plain grey map)  data-tiles
 *   attribution  tile attribution HTML                                             data-attribution
 *   outlines     URL of GeoJSON outlines (or a GeoJSON object); failures ignored    data-outlines
 *   center       [lon, lat] of the first view                                      data-lon, data-lat
 *   zoom         first zoom level (default 16)                                     data-zoom
 *   maxZoom      highest zoom (default 19)
 * pickerMap also: onPick(lon, lat), onError(message, error), messages {unsupported, insecure,
 *   denied, unavailable, timeout} to translate the error messages, and point [lon, lat] to
 *   show an already chosen point (without calling onPick).
 */
(function () {
  "use strict";

  var DEFAULT_ZOOM = 16;
  var DEFAULT_MAX_ZOOM = 19;
  var LOCATE_TIMEOUT_MS = 10000;
  var COORD_DECIMALS = 7; // about 1 cm: enough for any report, no float noise in forms

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

  function addOutlines(map, source, fitToThem) {
    var style = { color: "#0b5cad", weight: 2, opacity: 0.8, fillOpacity: 0.05 };
    function show(geojson) {
      if (!geojson) {
        return null;
      }
      var layer = L.geoJSON(geojson, { style: style, interactive: false }).addTo(map);
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

  /** A Leaflet map with optional tiles and outlines; returns {map, outlines (a Promise)}. */
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
        attribution: option(options, el, "attribution", ""),
      }).addTo(map);
    }
    if (center) {
      map.setView(latLng(center[0], center[1]), zoom === null ? DEFAULT_ZOOM : zoom);
    } else {
      map.setView(latLng(0, 0), 2); // replaced by the outlines' extent once they arrive
    }
    var outlines = addOutlines(map, option(options, el, "outlines", ""), !center);
    return { map: map, outlines: outlines };
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
            map.setView(latLng(lon, lat), Math.max(map.getZoom(), 17));
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
