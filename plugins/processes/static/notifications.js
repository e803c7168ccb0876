// The unread counter beside "Notifications" in the navbar: asked once per
// page, then every minute while the page stays open.
(function () {
  "use strict";
  var links = Array.prototype.filter.call(
    document.querySelectorAll("a[href='/notifications/']"),
    function (a) { return !a.closest(".crm-notifications-page"); }
  );
  if (!links.length) { return; }
  function show(count) {
    links.forEach(function (a) {
      var badge = a.querySelector(".crm-unread");
      if (!badge) {
        badge = document.createElement("span");
        badge.className = "badge crm-unread";
        a.appendChild(document.createTextNode(" "));
        a.appendChild(badge);
      }
      badge.textContent = count ? String(count) : "";
      badge.style.display = count ? "" : "none";
    });
    // the menu category holding the link shows the count too
    var toggle = links[0].closest(".dropdown");
    toggle = toggle && toggle.querySelector(".dropdown-toggle");
    if (toggle) {
      var b = toggle.querySelector(".crm-unread");
      if (!b) {
        b = document.createElement("span");
        b.className = "badge crm-unread";
        toggle.insertBefore(b, toggle.querySelector(".caret"));
      }
      b.textContent = count ? String(count) : "";
      b.style.display = count ? "" : "none";
    }
  }
  function ask() {
    fetch("/notifications/unread", {credentials: "same-origin", headers: {Accept: "application/json"}})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) { if (data) { show(data.count); } })
      .catch(function () {});
  }
  ask();
  setInterval(ask, 60000);
})();
