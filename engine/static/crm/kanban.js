/* Kanban: drag a card to another column → the record's transition endpoint
   (the same rules as the form, with the card's version: a card changed by
   someone else meanwhile is refused). When the move only lacks fields the
   user may fill in, a small form asks for them and posts the move again;
   Cancel puts the card back. A done move offers to undo it for a few seconds
   (data-undo-ms), through the same rules in reverse. Counts and sums of the
   columns come from the server's answer. "More" pages one column. Text goes
   in with textContent only; the words come from the page's data-t-* attributes. */
(function () {
  "use strict";
  var page = document.querySelector(".crm-kanban-page");
  if (!page) { return; }
  var api = page.getAttribute("data-api");
  var csrf = document.getElementById("crm-csrf").value;
  var modal = document.getElementById("crm-move-modal");
  var modalForm = modal.querySelector(".crm-move-form");
  var toast = page.querySelector(".crm-toast");
  var dragged = null;
  var asking = null;     // the move the modal asks fields for
  var toastTimer = null;
  var lastMove = null;   // what the toast's Undo reverses

  function t(key) { return page.getAttribute("data-t-" + key) || key; }

  /* the board ends at the window's bottom edge, so its sideways scrollbar is in sight */
  var boardBox = page.querySelector(".crm-kanban");
  function fit() {
    var top = boardBox.getBoundingClientRect().top + window.scrollY;
    boardBox.style.height = Math.max(320, window.innerHeight - top - 12) + "px";
  }
  fit();
  window.addEventListener("resize", fit);

  function bind(card) {
    card.addEventListener("dragstart", function (e) {
      dragged = card;
      e.dataTransfer.setData("text/plain", card.getAttribute("data-id"));
    });
  }
  Array.prototype.forEach.call(document.querySelectorAll(".crm-card"), bind);

  function columnOf(name) {
    return page.querySelector(".crm-column[data-column='" + name + "']");
  }

  function titleOf(card) { return card.querySelector("a").textContent.trim(); }

  function shift(column, delta) {
    var offset = parseInt(column.getAttribute("data-offset"), 10) || 0;
    column.setAttribute("data-offset", String(Math.max(0, offset + delta)));
  }

  /* the counts and sums the server computed after the move */
  function totals(columns) {
    Object.keys(columns || {}).forEach(function (name) {
      var column = columnOf(name);
      if (!column) { return; }
      column.querySelector(".crm-count").textContent = String(columns[name].count);
      var sum = column.querySelector(".crm-sum");
      if (sum) { sum.textContent = columns[name].sum; }
    });
  }

  function boardQuery(from, to) {
    var params = new URLSearchParams(window.location.search);
    var query = new URLSearchParams();
    query.set("columns", from + "," + to);
    ["owner", "department", "kind"].forEach(function (key) {
      if (params.get(key)) { query.set(key, params.get(key)); }
    });
    return query.toString();
  }

  /* POST the transition; resolves to {status, body} (status 0: no answer) */
  function post(card, from, to, fields) {
    var body = { to: to, version: parseInt(card.getAttribute("data-version"), 10), fields: fields || {} };
    return fetch(api + card.getAttribute("data-id") + "/transition?" + boardQuery(from, to), {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf },
      body: JSON.stringify(body)
    }).then(function (response) {
      return response.json().then(function (data) { return { status: response.status, body: data }; },
        function () { return { status: response.status, body: {} }; });
    }, function () { return { status: 0, body: { message: t("network") } }; });
  }

  function reasonsOf(body) {
    var reasons = body.reasons && body.reasons.length ? body.reasons : [body.message || t("refused")];
    return reasons.map(function (r) { return r.message || r; }).join("; ");
  }

  function place(card, column) { column.querySelector(".crm-cards").prepend(card); }

  function refuse(card, from, message) {
    place(card, from);
    card.classList.add("crm-refused");
    card.querySelector(".crm-card-error").textContent = message;
  }

  function done(card, from, to, result, undoing) {
    card.setAttribute("data-version", String(result.body.version));
    place(card, to);
    shift(from, -1);
    shift(to, 1);
    totals(result.body.columns);
    if (undoing) {
      say(t("undone") + ": " + titleOf(card) + " → " + to.getAttribute("data-label"), null);
    } else {
      lastMove = { card: card, from: from, to: to };
      say(page.getAttribute("data-type-label") + " " + titleOf(card) + " → " + to.getAttribute("data-label"), lastMove);
    }
  }

  /* move ``card`` from column ``from`` to column ``to`` (fields: what the modal asked) */
  function move(card, from, to, fields, undoing) {
    card.querySelector(".crm-card-error").textContent = "";
    card.classList.remove("crm-refused");
    card.classList.add("crm-pending");
    place(card, to);
    return post(card, from.getAttribute("data-column"), to.getAttribute("data-column"), fields).then(function (result) {
      card.classList.remove("crm-pending");
      if (result.status === 200) {
        if (asking) { close(); }
        done(card, from, to, result, undoing);
        return;
      }
      if (result.status === 422 && result.body.needs && result.body.needs.length &&
          modal.querySelector(".crm-move-fields[data-state='" + to.getAttribute("data-column") + "']")) {
        ask({ card: card, from: from, to: to, undoing: undoing }, result.body, fields);
        return;
      }
      if (asking) { close(); }
      refuse(card, from, reasonsOf(result.body));
      if (result.status === 422 && result.body.errors && result.body.errors.next) {
        // new records to plan come along with this move: the transition's own form asks for them
        var link = document.createElement("a");
        link.className = "crm-card-form";
        link.href = card.querySelector("a").getAttribute("href") +
          "/transition/" + encodeURIComponent(to.getAttribute("data-column"));
        link.textContent = " " + t("form");
        card.querySelector(".crm-card-error").appendChild(link);
      }
      if (undoing) { say(t("undo-refused") + ": " + reasonsOf(result.body), null, true); }
    });
  }

  // -- the "fill in to move" form -------------------------------------------------------------

  function groups() {
    return modal.querySelectorAll(".crm-move-fields:not([hidden]) .form-group");
  }

  function clearErrors() {
    Array.prototype.forEach.call(modal.querySelectorAll(".crm-move-error"), function (e) { e.remove(); });
    Array.prototype.forEach.call(modal.querySelectorAll(".has-error"), function (g) { g.classList.remove("has-error"); });
    var reasons = modal.querySelector(".crm-move-reasons");
    reasons.hidden = true;
    reasons.textContent = "";
  }

  function ask(m, body, fields) {
    var first = !asking;
    asking = m;
    var state = m.to.getAttribute("data-column");
    if (first) {
      Array.prototype.forEach.call(modal.querySelectorAll(".crm-move-fields"), function (box) {
        box.hidden = box.getAttribute("data-state") !== state;
      });
      Array.prototype.forEach.call(modal.querySelectorAll(".crm-move-fields[data-state='" + state + "'] .form-group"), function (g) {
        g.hidden = body.needs.indexOf(g.getAttribute("data-field")) < 0;
        Array.prototype.forEach.call(g.querySelectorAll("input, textarea, select"), function (input) {
          if (input.type === "checkbox") { input.checked = false; } else { input.value = ""; }
          if (window.jQuery && window.jQuery(input).data("select2")) { window.jQuery(input).trigger("change"); }
        });
      });
      modal.querySelector("#crm-move-title").textContent =
        page.getAttribute("data-type-label") + " " + titleOf(m.card) + " → " + m.to.getAttribute("data-label");
      modal.hidden = false;
    }
    clearErrors();
    if (!first || (fields && Object.keys(fields).length)) {
      var errors = body.errors || {};
      var placed = [];
      Array.prototype.forEach.call(groups(), function (g) {
        var name = g.getAttribute("data-field");
        if (g.hidden || !errors[name]) { return; }
        g.classList.add("has-error");
        var help = document.createElement("span");
        help.className = "help-block crm-error crm-move-error";
        help.textContent = errors[name];
        g.appendChild(help);
        placed.push(errors[name]);
      });
      var rest = (body.reasons || []).filter(function (r) { return placed.indexOf(r) < 0; });
      if (rest.length) {
        var reasons = modal.querySelector(".crm-move-reasons");
        reasons.textContent = rest.join("; ");
        reasons.hidden = false;
      }
    }
    var input = modal.querySelector(".crm-move-fields:not([hidden]) .form-group:not([hidden]) input, " +
      ".crm-move-fields:not([hidden]) .form-group:not([hidden]) textarea, .crm-move-fields:not([hidden]) .form-group:not([hidden]) select");
    if (input && first) { input.focus(); }
  }

  function close() {
    modal.hidden = true;
    asking = null;
    clearErrors();
  }

  /* "2030-05-15T10:00" on the company's clock (data-tz) → an ISO moment in UTC */
  function companyTime(text) {
    var tz = page.getAttribute("data-tz");
    var m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2}))?$/.exec(text);
    if (!tz || !m || !window.Intl) { return text; }
    var wall = Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +(m[6] || 0));
    var format = new Intl.DateTimeFormat("en-US", { timeZone: tz, hourCycle: "h23", year: "numeric",
      month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit" });
    function offset(ms) {  // how far the company's clock is ahead of UTC at ``ms``
      var p = {};
      format.formatToParts(new Date(ms)).forEach(function (x) { p[x.type] = +x.value; });
      return Date.UTC(p.year, p.month - 1, p.day, p.hour, p.minute, p.second) - ms;
    }
    var guess = wall - offset(wall);
    return new Date(wall - offset(guess)).toISOString();
  }

  modalForm.addEventListener("submit", function (e) {
    e.preventDefault();
    if (!asking) { return; }
    var fields = {};
    Array.prototype.forEach.call(groups(), function (g) {
      if (g.hidden) { return; }
      var input = g.querySelector("[name]");
      if (!input) { return; }
      // as the transition form reads them: a blank input is no value, a
      // date and time is the company's wall-clock time
      var value = input.type === "checkbox" ? input.checked :
        (input.value.trim() === "" ? null : input.value);
      if (value && input.getAttribute("data-type") === "datetime") { value = companyTime(value); }
      fields[input.name] = value;
    });
    var m = asking;
    move(m.card, m.from, m.to, fields, m.undoing);
  });

  modal.querySelector(".crm-move-cancel").addEventListener("click", function () {
    if (!asking) { return; }
    var m = asking;
    close();
    m.card.classList.remove("crm-pending");
    place(m.card, m.from);
  });

  document.addEventListener("keydown", function (e) {
    if (e.key === "Escape" && asking) { modal.querySelector(".crm-move-cancel").click(); }
  });

  // -- the toast and its Undo -----------------------------------------------------------------

  function say(text, undo, error) {
    clearTimeout(toastTimer);
    toast.querySelector(".crm-toast-text").textContent = text;
    toast.querySelector(".crm-undo").hidden = !undo;
    toast.classList.toggle("crm-toast-error", !!error);
    toast.hidden = false;
    if (!undo) { lastMove = null; }
    toastTimer = setTimeout(function () {
      toast.hidden = true;
      lastMove = null;
    }, parseInt(page.getAttribute("data-undo-ms"), 10) || 8000);
  }

  toast.querySelector(".crm-undo").addEventListener("click", function () {
    var m = lastMove;
    lastMove = null;
    toast.hidden = true;
    clearTimeout(toastTimer);
    if (m) { move(m.card, m.to, m.from, {}, true); }
  });

  // -- dragging -------------------------------------------------------------------------------

  Array.prototype.forEach.call(document.querySelectorAll(".crm-column"), function (column) {
    column.addEventListener("dragover", function (e) { e.preventDefault(); column.classList.add("crm-over"); });
    column.addEventListener("dragleave", function () { column.classList.remove("crm-over"); });
    column.addEventListener("drop", function (e) {
      e.preventDefault();
      column.classList.remove("crm-over");
      if (!dragged || asking) { return; }
      var card = dragged;
      dragged = null;
      var from = card.closest(".crm-column");
      if (from === column) { return; }
      move(card, from, column, {}, false);
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
          if (page.querySelector(".crm-card[data-id='" + c.id + "']")) { return; }
          var card = template.content.firstElementChild.cloneNode(true);
          card.setAttribute("data-id", c.id);
          card.setAttribute("data-version", c.version);
          if (c.fixed) { card.setAttribute("draggable", "false"); card.classList.add("crm-card-fixed"); }
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
