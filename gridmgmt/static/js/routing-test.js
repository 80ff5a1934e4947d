/*
 * "Who gets this?" (admin/routing/test): a click or tap on the map fills the coordinates and,
 * once a class is chosen, asks the page again. Without JavaScript the form works the same
 * with typed coordinates. Load leaflet.js and map.js first.
 */
(function () {
  "use strict";
  var form = document.getElementById("tester-form");
  if (!form || !window.gridmgmt) return;
  var lonInput = document.getElementById("t-lon");
  var latInput = document.getElementById("t-lat");
  var category = document.getElementById("t-category");
  var mapElement = document.getElementById("tester-map");

  function ask() {
    if (category.value && lonInput.value && latInput.value) {
      form.requestSubmit ? form.requestSubmit() : form.submit();
    }
  }

  var point = null;
  if (lonInput.value && latInput.value) {
    var lon = parseFloat(lonInput.value);
    var lat = parseFloat(latInput.value);
    if (isFinite(lon) && isFinite(lat)) point = [lon, lat];
  }
  var picker = window.gridmgmt.pickerMap(mapElement, {
    point: point,
    onPick: function (lon, lat) {
      lonInput.value = lon;
      latInput.value = lat;
      ask();
    },
  });
  category.addEventListener("change", ask);

  // The answer's cell, outlined: the unit grid cell the point falls in.
  if (mapElement.dataset.cell) {
    try {
      window.L.geoJSON(JSON.parse(mapElement.dataset.cell), {
        style: { color: "#b3261e", weight: 3, fillOpacity: 0.15 },
        interactive: false,
      }).addTo(picker.map);
    } catch (error) {
      // the outline is a help: the answer stands without it
    }
  }
})();
