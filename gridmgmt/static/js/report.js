/*
 * The report form, enhanced: map picker and geolocation, major → minor class filter, and a
 * submission that survives a flaky network. The form's idempotency key is sent with every
 * retry, so the server makes one case however often the request is repeated.
 * Without JavaScript the form posts normally to the same service.
 */
(function () {
  "use strict";
  var form = document.getElementById("report-form");
  if (!form) return;
  var status = document.getElementById("report-status");
  var lonInput = document.getElementById("lon");
  var latInput = document.getElementById("lat");
  var position = document.getElementById("position");

  function message(id, values) {
    var text = document.getElementById(id).innerHTML;
    Object.keys(values || {}).forEach(function (key) {
      text = text.replace("{" + key + "}", values[key]);
    });
    return text;
  }

  function show(text, kind) {
    status.textContent = text;
    status.className = "status " + (kind || "");
  }

  // --- where -------------------------------------------------------------------------------
  var picker = window.gridmgmt.pickerMap("picker", {
    onPick: function (lon, lat) {
      lonInput.value = lon;
      latInput.value = lat;
      position.textContent = message("msg-position", {lon: lon, lat: lat});
      // The near-me panel (nearby.js) hears of a picked point as a change of the position.
      lonInput.dispatchEvent(new Event("change", {bubbles: true}));
    },
    onError: function (text) { position.textContent = text; },
  });
  document.getElementById("locate").addEventListener("click", function () { picker.locate(); });
  if (lonInput.value && latInput.value) {
    picker.setPoint(parseFloat(lonInput.value), parseFloat(latInput.value));
  }

  // --- what: the major class narrows the minor classes ---------------------------------------
  var major = document.getElementById("major");
  var category = document.getElementById("category");
  major.addEventListener("change", function () {
    Array.prototype.forEach.call(category.querySelectorAll("optgroup"), function (group) {
      var hidden = major.value && group.dataset.major !== major.value;
      group.hidden = hidden;
      group.disabled = hidden;
    });
    if (category.selectedOptions.length && category.selectedOptions[0].parentNode.disabled) {
      category.value = "";
    }
  });

  // --- send, and keep sending while offline --------------------------------------------------
  var sending = false;
  var delay = 2000;
  var retryTimer = null;

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : form.elements.csrf_token.value;
  }

  function send(body) {
    show(message("msg-sending"), "busy");
    fetch(form.dataset.api, {
      method: "POST",
      body: body,
      credentials: "same-origin",
      headers: {
        "Accept": "application/json",
        "X-CSRFToken": csrfToken(),
        "Idempotency-Key": form.elements.idempotency_key.value,
        "X-Flash": "1", // the case page, next, says "reported"
      },
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (data) {
        if (response.ok) {
          window.location.assign(data.url);
          return;
        }
        if (response.status >= 500 || response.status === 429) {
          throw new Error("server busy");
        }
        sending = false;
        var error = data.error || {};
        show(error.message || response.statusText, "error");
      });
    }).catch(function () {
      // Offline, or the server could not answer: keep the report and try again.
      show(message("msg-offline"), "offline");
      clearTimeout(retryTimer);
      retryTimer = setTimeout(function () { send(body); }, delay);
      delay = Math.min(delay * 2, 30000);
    });
  }

  window.addEventListener("online", function () {
    if (sending && retryTimer) {
      clearTimeout(retryTimer);
      delay = 2000;
      retryTimer = setTimeout(function () { send(lastBody); }, 200);
    }
  });

  var lastBody = null;
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (sending) return;
    if (!form.reportValidity()) return;
    // The phone's outbox (outbox.js) keeps the report until the server confirms it.
    if (window.gridmgmt.outbox && window.gridmgmt.outbox.takeForm(form)) return;
    sending = true;
    delay = 2000;
    lastBody = new FormData(form);
    send(lastBody);
  });
})();
