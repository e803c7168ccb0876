/* The generated forms' behaviour: server-side ref pickers, table rows
   (add, remove, reorder), confirmations. jQuery and select2 are served
   locally by Flask-AppBuilder; no inline handlers, so the CSP stays strict. */
(function ($) {
  "use strict";

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

  $(function () { refPickers(document); watchDependencies(document); });
})(window.jQuery);
