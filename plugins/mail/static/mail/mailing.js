/* A mailing's page: the progress bar and the counts follow the sending,
   polling /mailings/<id>/progress.json every 1.5 s while it runs. */
(function () {
  "use strict";
  var crmT = window.crmT || function (id) { return id; };
  var box = document.querySelector(".crm-mailing[data-progress]");
  if (!box || box.getAttribute("data-polling")) { return; }
  box.setAttribute("data-polling", "1");
  var bar = box.querySelector(".crm-mailing-bar");
  var status = box.querySelector(".crm-mailing-status");
  var note = box.querySelector(".crm-mailing-note");

  function show(p) {
    bar.style.width = p.percent + "%";
    bar.textContent = p.percent + " %";
    bar.setAttribute("aria-valuenow", String(p.percent));
    status.textContent = p.status_label;
    box.setAttribute("data-status", p.status);
    Object.keys(p).forEach(function (name) {
      var cell = box.querySelector('[data-count="' + name + '"]');
      if (cell) { cell.textContent = String(p[name]); }
    });
  }

  function poll() {
    fetch(box.getAttribute("data-progress"), {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (r) {
        if (!r.ok) { throw new Error(String(r.status)); }
        return r.json();
      })
      .then(function (p) {
        note.hidden = true;
        show(p);
        if (p.running) { window.setTimeout(poll, 1500); }
      })
      .catch(function () {
        note.textContent = crmT("The progress could not be read; trying again");
        note.hidden = false;
        window.setTimeout(poll, 5000);
      });
  }

  if (box.getAttribute("data-running") === "true") { window.setTimeout(poll, 1000); }
}());
