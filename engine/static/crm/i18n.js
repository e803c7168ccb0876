/* crmT("Cancel"): a script's text in the reader's language. The page carries
   the translations of every crmT() id of the scripts (crm/_i18n.html renders
   them as JSON); an id without one is shown as it is. Ids are English and are
   extracted into the catalogs by `python -m engine.i18n update`. */
(function () {
  "use strict";
  var strings = null;

  function load() {
    if (strings === null) {
      var el = document.getElementById("crm-i18n");
      try { strings = el ? JSON.parse(el.textContent) : {}; } catch (e) { strings = {}; }
    }
    return strings;
  }

  // crmT("%(n)s rows", {n: 3}) fills the named placeholders
  window.crmT = function (id, values) {
    var text = Object.prototype.hasOwnProperty.call(load(), id) ? strings[id] : id;
    if (values) {
      text = text.replace(/%\((\w+)\)s/g, function (all, name) {
        return Object.prototype.hasOwnProperty.call(values, name) ? String(values[name]) : all;
      });
    }
    return text;
  };
}());
