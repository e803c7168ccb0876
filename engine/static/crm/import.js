/* The import's progress page: asks for the job's status until the import
   has finished, moving the bar, then reloads the page, which shows the
   result (the server renders it, escaped). Served from here with the page's
   nonce: no inline script, so the CSP stays strict. */
(function () {
  "use strict";
  var crmT = window.crmT || function (id) { return id; };

  var box = document.querySelector(".crm-import-job");
  if (!box || box.getAttribute("data-finished") === "true") { return; }
  var bar = box.querySelector(".progress-bar");
  var text = box.querySelector(".crm-import-message");
  var url = box.getAttribute("data-status-url");
  var every = parseInt(box.getAttribute("data-poll-ms"), 10) || 1000;
  var failures = 0;

  function show(s) {
    var percent = Math.max(0, Math.min(100, s.percent || 0));
    bar.style.width = percent + "%";
    bar.setAttribute("aria-valuenow", String(percent));
    bar.textContent = percent + "%";
    if (!text) { return; }
    if (s.state === "pending" && s.retrying) {
      text.textContent = crmT("The attempt failed and will be repeated:") + " " + s.retrying;
    } else if (s.state === "pending") {
      text.textContent = crmT("Queued: waiting for the job runner…");
    } else {
      text.textContent = s.message || crmT("Reading the file…");
    }
  }

  function poll() {
    fetch(url, { credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) { throw new Error("status " + response.status); }
        return response.json();
      })
      .then(function (s) {
        failures = 0;
        show(s);
        if (s.finished) {
          bar.classList.remove("active");
          window.setTimeout(function () { window.location.reload(); }, 400);
          return;
        }
        window.setTimeout(poll, every);
      })
      .catch(function () {
        // the server restarts, the network drops: ask again, less and less often
        failures += 1;
        window.setTimeout(poll, Math.min(every * Math.pow(2, failures), 30000));
      });
  }

  window.setTimeout(poll, every);
}());
