/*
 * gridmgmt supervisors' pages: small progressive enhancements, plain ES2017, no build step.
 * Every page works without this file (the map's filters stay open, tables are plain tables
 * in rank order, column groups are chosen with the form's checkboxes and its button).
 *
 *   - Map page (.map-layout): the filter panel opens and closes (a side panel on a desktop,
 *     a drawer over the map on a phone), from a button with aria-expanded; Escape closes the
 *     drawer and gives the focus back to the button.
 *   - Sortable tables (table.sortable): each column header with data-sort becomes a button;
 *     a click sorts the rows by that column (numbers from the cells' data-value, empty values
 *     last whatever the direction) and sets aria-sort on the header.
 *   - Column groups (input[data-column-group]): a checkbox shows or hides every cell of its
 *     group (class g-<group>) at once, and keeps the choice in the address (?show=<group>).
 */
(function () {
  "use strict";

  var NARROW = window.matchMedia("(max-width: 47.99rem)");

  function mapPanel(layout) {
    var panel = layout.querySelector(".map-panel");
    var toggle = layout.querySelector(".map-toggle");
    if (!panel || !toggle) {
      return;
    }
    layout.classList.add("has-js");
    toggle.hidden = false;

    function set(open, focus) {
      layout.setAttribute("data-panel", open ? "open" : "closed");
      toggle.setAttribute("aria-expanded", open ? "true" : "false");
      if (open && focus && NARROW.matches) {
        var first = panel.querySelector("input, select, button, a[href]");
        if (first) {
          first.focus();
        }
      }
    }

    set(!NARROW.matches, false); // open on a desktop, closed on a phone
    toggle.addEventListener("click", function () {
      set(layout.getAttribute("data-panel") !== "open", true);
    });
    layout.addEventListener("keydown", function (event) {
      if (event.key === "Escape" && NARROW.matches && layout.getAttribute("data-panel") === "open") {
        set(false, false);
        toggle.focus();
      }
    });
    NARROW.addEventListener("change", function () {
      set(!NARROW.matches, false);
    });
  }

  function cellValue(row, index, kind) {
    var cell = row.cells[index];
    if (!cell) {
      return null;
    }
    var raw = cell.hasAttribute("data-value") ? cell.getAttribute("data-value") : cell.textContent;
    raw = raw.trim();
    if (raw === "") {
      return null;
    }
    if (kind === "number") {
      var n = parseFloat(raw);
      return isNaN(n) ? null : n;
    }
    return raw;
  }

  function sortable(table) {
    var head = table.tHead && table.tHead.rows[table.tHead.rows.length - 1];
    var body = table.tBodies[0];
    if (!head || !body) {
      return;
    }
    var headers = Array.prototype.slice.call(head.cells);
    var collator = new Intl.Collator(document.documentElement.lang || undefined, {numeric: true});

    headers.forEach(function (th, index) {
      var kind = th.getAttribute("data-sort");
      if (!kind) {
        return;
      }
      var button = document.createElement("button");
      button.type = "button";
      button.className = "sort";
      while (th.firstChild) {
        button.appendChild(th.firstChild);
      }
      var arrow = document.createElement("span");
      arrow.className = "sort-arrow";
      arrow.setAttribute("aria-hidden", "true");
      button.appendChild(arrow);
      th.appendChild(button);

      button.addEventListener("click", function () {
        var now = th.getAttribute("aria-sort");
        // Numbers start from the highest (the best rate, the most cases), names from A; the
        // rank column from 1.
        var first = kind === "number" && index > 0 && th.getAttribute("data-key") ? "descending" : "ascending";
        var direction = now === first ? (first === "ascending" ? "descending" : "ascending") : first;
        var sign = direction === "ascending" ? 1 : -1;
        var rows = Array.prototype.slice.call(body.rows).map(function (row, i) {
          return {row: row, value: cellValue(row, index, kind), i: i};
        });
        rows.sort(function (a, b) {
          if (a.value === null || b.value === null) {
            if (a.value === b.value) {
              return a.i - b.i;
            }
            return a.value === null ? 1 : -1; // empty values last, either way
          }
          var order = kind === "number" ? a.value - b.value : collator.compare(a.value, b.value);
          return order !== 0 ? sign * order : a.i - b.i;
        });
        rows.forEach(function (r) {
          body.appendChild(r.row);
        });
        headers.forEach(function (other) {
          other.removeAttribute("aria-sort");
        });
        th.setAttribute("aria-sort", direction);
      });
    });
  }

  function columnGroups(boxes) {
    if (!boxes.length) {
      return;
    }
    function apply(box) {
      var cells = document.querySelectorAll("table .g-" + box.getAttribute("data-column-group"));
      Array.prototype.forEach.call(cells, function (cell) {
        cell.hidden = !box.checked;
      });
    }
    Array.prototype.forEach.call(boxes, function (box) {
      box.addEventListener("change", function () {
        apply(box);
        var url = new URL(window.location.href);
        url.searchParams.delete("show");
        Array.prototype.forEach.call(boxes, function (b) {
          if (b.checked) {
            url.searchParams.append("show", b.value);
          }
        });
        window.history.replaceState(null, "", url.toString());
      });
    });
  }

  function start() {
    Array.prototype.forEach.call(document.querySelectorAll(".map-layout"), mapPanel);
    Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), sortable);
    columnGroups(document.querySelectorAll("input[data-column-group]"));
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
