/* Kanban: drag a card to another column → the record's transition endpoint
   (the same rules as the form); a refusal is shown on the card, which goes
   back. "More" pages one column. Text goes in with textContent only. */
(function () {
  "use strict";
  var page = document.querySelector(".crm-kanban-page");
  if (!page) { return; }
  var api = page.getAttribute("data-api");
  var csrf = document.getElementById("crm-csrf").value;
  var dragged = null;

  function bind(card) {
    card.addEventListener("dragstart", function (e) {
      dragged = card;
      e.dataTransfer.setData("text/plain", card.getAttribute("data-id"));
    });
  }
  Array.prototype.forEach.call(document.querySelectorAll(".crm-card"), bind);

  function counter(column, delta) {
    var badge = column.querySelector(".crm-count");
    badge.textContent = String(parseInt(badge.textContent, 10) + delta);
  }

  Array.prototype.forEach.call(document.querySelectorAll(".crm-column"), function (column) {
    column.addEventListener("dragover", function (e) { e.preventDefault(); column.classList.add("crm-over"); });
    column.addEventListener("dragleave", function () { column.classList.remove("crm-over"); });
    column.addEventListener("drop", function (e) {
      e.preventDefault();
      column.classList.remove("crm-over");
      if (!dragged) { return; }
      var card = dragged;
      dragged = null;
      var from = card.closest(".crm-column");
      if (from === column) { return; }
      var error = card.querySelector(".crm-card-error");
      error.textContent = "";
      card.classList.remove("crm-refused");
      column.querySelector(".crm-cards").prepend(card);
      fetch(api + card.getAttribute("data-id") + "/transition", {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrf },
        body: JSON.stringify({ to: column.getAttribute("data-column") })
      }).then(function (response) {
        return response.json().then(function (body) { return { ok: response.ok, body: body }; });
      }).then(function (result) {
        if (result.ok) {
          counter(from, -1);
          counter(column, 1);
          return;
        }
        from.querySelector(".crm-cards").prepend(card);
        card.classList.add("crm-refused");
        var reasons = result.body.reasons || [result.body.message || "refused"];
        error.textContent = reasons.map(function (r) { return r.message || r; }).join("; ");
      }).catch(function () {
        from.querySelector(".crm-cards").prepend(card);
        card.classList.add("crm-refused");
        error.textContent = "network error";
      });
    });
  });

  Array.prototype.forEach.call(document.querySelectorAll(".crm-more"), function (button) {
    button.addEventListener("click", function () {
      var column = button.closest(".crm-column");
      var offset = parseInt(column.getAttribute("data-offset"), 10);
      var url = button.getAttribute("data-url") + "?column=" + encodeURIComponent(column.getAttribute("data-column")) +
        "&offset=" + offset + window.location.search.replace(/^\?/, "&");
      fetch(url, { credentials: "same-origin" }).then(function (r) { return r.json(); }).then(function (body) {
        var template = document.getElementById("crm-card-template");
        body.cards.forEach(function (c) {
          var card = template.content.firstElementChild.cloneNode(true);
          card.setAttribute("data-id", c.id);
          card.setAttribute("data-version", c.version);
          var link = card.querySelector("a");
          link.textContent = c.title;
          link.href = window.location.pathname.replace(/kanban\/?$/, "") + c.id;
          card.querySelector(".crm-card-amount").textContent = c.amount || "";
          card.querySelector(".crm-card-owner").textContent = c.owner || "";
          column.querySelector(".crm-cards").appendChild(card);
          bind(card);
        });
        column.setAttribute("data-offset", String(offset + body.cards.length));
        if (body.cards.length === 0) { button.remove(); }
      });
    });
  });
})();
