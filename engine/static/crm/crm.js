/* The generated forms' behaviour: server-side ref pickers, table rows
   (add, remove, reorder), confirmations. jQuery and select2 are served
   locally by Flask-AppBuilder; no inline handlers, so the CSP stays strict. */
(function ($) {
  "use strict";
  // the layout loads this script on every page; a page that also asks for it
  // must not bind every handler twice
  if (!$ || window.crmScriptLoaded) { return; }
  window.crmScriptLoaded = true;

  function refPickers(root) {
    $(root).find("select.crm-ref").each(function () {
      var $el = $(this);
      if ($el.data("select2")) { return; }
      $el.select2({
        theme: "bootstrap",
        width: "100%",
        allowClear: true,
        placeholder: "",
        minimumInputLength: 0,
        ajax: {
          url: $el.data("lookup"),
          dataType: "json",
          delay: 200,
          data: function (params) { return lookupParams($el, params); },
          processResults: function (data) { return data; }
        }
      });
      // Select2 4.0 with jQuery 3.6 no longer focuses the search box when the
      // dropdown opens, so typing right after the click went nowhere.
      $el.on("select2:open", function () {
        var search = document.querySelector(".select2-container--open .select2-search__field");
        if (search) { search.focus(); }
      });
    });
  }

  // -- Ref constraints (`where:` in metadata, engine/refwhere.py) ------------
  // A constrained picker (data-for="Deal.interest", data-where="customer")
  // sends the form's current values of the fields it depends on, so the
  // server offers only the matching records; an empty one narrows nothing.
  // The names are those of the picker's own form or row (`next-0-customer`).
  function dependency($el, name) {
    var prefix = $el.attr("name").slice(0, -String($el.data("for")).split(".")[1].length);
    return $el.closest("form").find("[name='" + prefix + name + "']");
  }
  function lookupParams($el, params) {
    var out = { q: params.term || "" };
    if (!$el.data("where")) { return out; }
    out["for"] = $el.data("for");
    String($el.data("where")).split(",").forEach(function (name) {
      out["f." + name] = dependency($el, name).val() || "";
    });
    return out;
  }
  // When a field a choice depends on changes from one value to another, the
  // choice made for the old value is cleared (the server would refuse it).
  function watchDependencies(root) {
    $(root).find("select.crm-ref[data-where]").each(function () {
      var $el = $(this);
      String($el.data("where")).split(",").forEach(function (name) {
        var $dep = dependency($el, name);
        $dep.data("crmBefore", $dep.val() || "");
        $dep.on("change", function () {
          var before = $dep.data("crmBefore"), now = $dep.val() || "";
          $dep.data("crmBefore", now);
          if (before && before !== now && $el.val()) { $el.val(null).trigger("change"); }
        });
      });
    });
  }

  function renumber($table) {
    var field = $table.data("field");
    $table.find("tbody tr.crm-row").each(function (i) {
      $(this).find("[name]").each(function () {
        var parts = this.name.split("-");
        if (parts.length === 3 && parts[0] === field) {
          this.name = field + "-" + i + "-" + parts[2];
        }
      });
    });
  }

  $(document).on("click", ".crm-add-row", function () {
    var $box = $(this).closest(".crm-table");
    var html = $box.find("template.crm-row-template").html();
    var $row = $(html.replace(/__i__/g, String($box.find("tbody tr.crm-row").length)));
    $box.find("tbody").append($row);
    renumber($box);
    refPickers($row);
    datePickers($row);
    $row.find("input,select").first().trigger("focus");
  });
  $(document).on("click", ".crm-remove-row", function () {
    var $box = $(this).closest(".crm-table");
    $(this).closest("tr").remove();
    renumber($box);
  });
  $(document).on("click", ".crm-row-up", function () {
    var $row = $(this).closest("tr");
    $row.prev("tr.crm-row").before($row);
    renumber($(this).closest(".crm-table"));
  });
  $(document).on("click", ".crm-row-down", function () {
    var $row = $(this).closest("tr");
    $row.next("tr.crm-row").after($row);
    renumber($(this).closest(".crm-table"));
  });
  $(document).on("submit", "form.crm-confirm", function (e) {
    if (!window.confirm($(this).data("confirm"))) { e.preventDefault(); }
  });

  // Dates typed as the user writes them (31.12.2026); the picker is
  // Flask-AppBuilder's bootstrap-datepicker, its names of months and days
  // from the browser's Intl in the page's language.
  function pickerLanguage(lang) {
    var dp = $.fn.datepicker;
    if (!dp || !window.Intl || dp.dates[lang]) { return dp && dp.dates[lang] ? lang : "en"; }
    var months = [], monthsShort = [], days = [], daysShort = [], daysMin = [];
    for (var m = 0; m < 12; m++) {
      var d = new Date(2021, m, 1);
      months.push(new Intl.DateTimeFormat(lang, {month: "long"}).format(d));
      monthsShort.push(new Intl.DateTimeFormat(lang, {month: "short"}).format(d));
    }
    for (var i = 0; i < 7; i++) {
      var day = new Date(2021, 0, 3 + i); // 3 January 2021 was a Sunday
      days.push(new Intl.DateTimeFormat(lang, {weekday: "long"}).format(day));
      daysShort.push(new Intl.DateTimeFormat(lang, {weekday: "short"}).format(day));
      daysMin.push(daysShort[i].slice(0, 2));
    }
    dp.dates[lang] = {days: days, daysShort: daysShort, daysMin: daysMin, months: months,
      monthsShort: monthsShort, today: "", clear: "", weekStart: lang === "en" ? 0 : 1};
    return lang;
  }

  function datePickers(root) {
    if (!$.fn.datepicker) { return; }
    $(root).find("input.crm-date:not([readonly])").each(function () {
      var $el = $(this);
      if ($el.data("datepicker")) { return; }
      var ru = $el.data("format") === "dd.mm.yyyy";
      $el.datepicker({
        format: ru ? "dd.mm.yyyy" : "yyyy-mm-dd",
        language: pickerLanguage($el.data("locale") || "en"),
        autoclose: true, forceParse: false, todayHighlight: true,
        // typing is the quick way: the calendar opens from its button only
        showOnFocus: false
      });
    });
  }

  $(document).on("click", ".crm-date-pick", function () {
    var $input = $(this).closest(".crm-date-group").find("input.crm-date");
    $input.datepicker("show");
  });
  $(document).on("keydown", "input.crm-date", function (e) {
    if (e.key === "Escape" || e.key === "Tab") { $(this).datepicker("hide"); }
  });

  // the narrow screen's menu button works from the keyboard too
  $(document).on("keydown", ".crm-burger", function (e) {
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      var box = document.getElementById("crm-nav-toggle");
      if (box) { box.checked = !box.checked; }
    }
  });

  // Computed fields (a row's amount, the order's total) follow the inputs:
  // the form is posted to /<type>/compute, which runs the expressions a save
  // runs, and the answer fills the read-only inputs.
  var computeTimer = null, computeSeq = 0;
  function compute($form) {
    var url = $form.data("compute");
    if (!url) { return; }
    var data = new FormData($form[0]);
    if ($form.data("id")) { data.append("_id", $form.data("id")); }
    var seq = ++computeSeq;
    $form.addClass("crm-computing");
    fetch(url, {method: "POST", body: data, credentials: "same-origin", headers: {Accept: "application/json"}})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (answer) {
        if (seq !== computeSeq) { return; }
        $form.removeClass("crm-computing");
        if (!answer) { return; }
        $.each(answer.values || {}, function (name, value) {
          $form.find("[name='" + name + "']").val(value);
        });
      })
      .catch(function () { $form.removeClass("crm-computing"); });
  }
  function computeSoon(form) {
    var $form = $(form).closest("form[data-compute]");
    if (!$form.length) { return; }
    clearTimeout(computeTimer);
    computeTimer = setTimeout(function () { compute($form); }, 300);
  }
  $(document).on("input change", "form[data-compute] :input", function (e) {
    if (this.readOnly || this.type === "hidden") { return; }
    computeSoon(this);
  });
  $(document).on("click", "form[data-compute] .crm-remove-row", function () {
    computeSoon(document.querySelector("form[data-compute]"));
  });

  $(function () {
    refPickers(document);
    watchDependencies(document);
    datePickers(document);
  });
})(window.jQuery);
