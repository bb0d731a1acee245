/* evalkit site: sortable and filterable tables. No dependencies, no network.
 *
 * Tables are rendered server-side; this script only reorders and hides existing rows. The raw
 * values it sorts and filters on come from a <script type="application/json"> block next to
 * each table (referenced by the table's data-rows attribute), so nothing is parsed out of the
 * formatted cells and no data is ever inserted as markup: the only text this script writes
 * goes through textContent.
 */
(function () {
  "use strict";

  function readRows(table) {
    var source = document.getElementById(table.getAttribute("data-rows"));
    if (!source) { return []; }
    try { return JSON.parse(source.textContent); } catch (e) { return []; }
  }

  function bodyRows(table) {
    return Array.prototype.slice.call(table.tBodies[0].rows);
  }

  function isMissing(value) {
    return value === null || value === undefined || value === "";
  }

  function compareValues(a, b, type) {
    if (type === "text") {
      return String(a).localeCompare(String(b), undefined, { numeric: true, sensitivity: "base" });
    }
    return Number(a) - Number(b);
  }

  // A board's sort lives in the address (?sort=<board>~<column>~asc|desc, one per board), so a
  // reload, a bookmark or a shared link shows the table the way its reader left it.
  var SORT_PARAM = "sort";

  function savedSorts() {
    var sorts = {};
    new URLSearchParams(window.location.search).getAll(SORT_PARAM).forEach(function (value) {
      var parts = value.split("~");
      if (parts.length === 3) { sorts[parts[0]] = { key: parts[1], descending: parts[2] === "desc" }; }
    });
    return sorts;
  }

  function saveSort(board, key, descending) {
    var params = new URLSearchParams(window.location.search);
    var kept = params.getAll(SORT_PARAM).filter(function (value) { return value.split("~")[0] !== board; });
    params.delete(SORT_PARAM);
    kept.concat([board + "~" + key + "~" + (descending ? "desc" : "asc")]).forEach(function (value) {
      params.append(SORT_PARAM, value);
    });
    try {
      window.history.replaceState(null, "", "?" + params.toString() + window.location.hash);
    } catch (e) { /* an address the browser will not rewrite (some file:// set-ups): sorting still works */ }
  }

  function makeSortable(table, sorts) {
    var data = readRows(table);
    var board = table.getAttribute("data-board");
    var headers = Array.prototype.slice.call(table.querySelectorAll("th[data-key]"));
    function sortBy(th, descending) {
      var key = th.getAttribute("data-key");
      var type = th.getAttribute("data-type") || "number";
      headers.forEach(function (other) { other.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", descending ? "descending" : "ascending");
      var rows = bodyRows(table);
      rows.sort(function (left, right) {
        var a = (data[Number(left.getAttribute("data-index"))] || {})[key];
        var b = (data[Number(right.getAttribute("data-index"))] || {})[key];
        if (isMissing(a) || isMissing(b)) {
          // Missing values stay at the bottom whichever way the column is sorted.
          return (isMissing(a) ? 1 : 0) - (isMissing(b) ? 1 : 0);
        }
        var order = compareValues(a, b, type);
        return descending ? -order : order;
      });
      var body = table.tBodies[0];
      rows.forEach(function (row) { body.appendChild(row); });
    }
    headers.forEach(function (th) {
      var button = th.querySelector("button.sort");
      if (!button) { return; }
      button.addEventListener("click", function () {
        var descending = th.getAttribute("aria-sort") === "ascending";
        sortBy(th, descending);
        if (board) { saveSort(board, th.getAttribute("data-key"), descending); }
      });
    });
    var saved = board ? sorts[board] : undefined;
    if (saved) {
      var match = headers.filter(function (th) { return th.getAttribute("data-key") === saved.key; })[0];
      if (match) { sortBy(match, saved.descending); }
    }
  }

  function makeFilterable(table) {
    var data = readRows(table);
    var fields = (table.getAttribute("data-filter-field") || "model").split(",");
    var input = document.querySelector('input.filter[data-table="' + table.id + '"]');
    var count = document.querySelector('.filter-count[data-table="' + table.id + '"]');
    if (!input) { return; }
    function apply() {
      var query = input.value.trim().toLowerCase();
      var shown = 0;
      var rows = bodyRows(table);
      rows.forEach(function (row) {
        var record = data[Number(row.getAttribute("data-index"))] || {};
        var haystack = fields.map(function (f) { return String(record[f] === undefined ? "" : record[f]); })
          .join(" ").toLowerCase();
        var match = query === "" || haystack.indexOf(query) !== -1;
        row.hidden = !match;
        if (match) { shown += 1; }
      });
      if (count) {
        count.textContent = query === "" ? "" : shown + " of " + rows.length + " shown";
      }
    }
    input.addEventListener("input", apply);
    apply();
  }

  // The per-image records' type filter (TIFA's element types): hides the questions of other types
  // and recounts each image's "k of n correct" into the spans the page rendered for it.
  function makeRecordFilter(select) {
    var table = document.getElementById(select.getAttribute("data-table"));
    if (!table) { return; }
    function apply() {
      var kind = select.value;
      table.querySelectorAll('details.records[data-filterable="true"]').forEach(function (details) {
        var shown = 0;
        var passed = 0;
        details.querySelectorAll("li[data-kind]").forEach(function (item) {
          var match = kind === "" || item.getAttribute("data-kind") === kind;
          item.hidden = !match;
          if (match) {
            shown += 1;
            if (item.getAttribute("data-passed") === "true") { passed += 1; }
          }
        });
        var shownCount = details.querySelector(".shown");
        var passedCount = details.querySelector(".passed");
        if (shownCount) { shownCount.textContent = String(shown); }
        if (passedCount) { passedCount.textContent = String(passed); }
      });
    }
    select.addEventListener("change", apply);
    apply();
  }

  var sorts = savedSorts();
  document.querySelectorAll("table.sortable").forEach(function (table) { makeSortable(table, sorts); });
  document.querySelectorAll("table.filterable").forEach(makeFilterable);
  document.querySelectorAll("select.record-filter").forEach(makeRecordFilter);
}());
