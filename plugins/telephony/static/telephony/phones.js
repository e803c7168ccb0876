/* Calls on every page (plugins/telephony/phones.py):
   - a call button beside every element marked data-phone="+E164" (record
     pages, lists, related lists, the caller card); without an extension the
     button is disabled and its title says why;
   - a click rings the user's extension, then the number (POST
     /telephony/call), and the call's progress is shown beside the button,
     read from /telephony/calls/<id> until the call ends;
   - the caller card: while the tab is visible, /telephony/ringing is asked
     every 0.3 s (saying which calls the page has shown); a new
     incoming call comes with its card and opens it; a dismissed card does
     not come back. */
(function () {
  "use strict";
  var crmT = window.crmT || function (id) { return id; };
  var POLL_RINGING_MS = 300;
  var POLL_CALL_MS = 1000;
  var me = null;
  var shown = {};           // call id → its card element
  var DISMISSED = "crm-telephony-dismissed";

  function getJSON(url) {
    return fetch(url, {credentials: "same-origin", headers: {Accept: "application/json"}})
      .then(function (r) {
        var type = r.headers.get("Content-Type") || "";
        if (type.indexOf("application/json") < 0) { throw new Error("not signed in"); }
        return r.json().then(function (body) { return {ok: r.ok, status: r.status, body: body}; });
      });
  }

  function link() {
    if (document.querySelector("link[data-crm-telephony]")) { return; }
    var css = document.createElement("link");
    css.rel = "stylesheet";
    css.href = "/telephony-static/telephony/phones.css";
    css.setAttribute("data-crm-telephony", "1");
    document.head.appendChild(css);
  }

  function clock(seconds) {
    seconds = Math.max(0, Math.round(seconds || 0));
    var s = seconds % 60;
    return Math.floor(seconds / 60) + ":" + (s < 10 ? "0" : "") + s;
  }

  // --- the call button and the call's progress ---------------------------------------------

  function say(box, text, status, bad) {
    box.hidden = false;
    box.textContent = text;
    box.setAttribute("data-status", status || "");
    box.classList.toggle("text-danger", !!bad);
  }

  function follow(box, id, button) {
    var answeredSeen = null;
    function show(call) {
      if (call.ended) {
        var text = call.status === "answered"
          ? crmT("Ended · %(time)s", {time: clock(call.duration)})
          : crmT("Ended: %(status)s", {status: call.status_label});
        say(box, text, "ended", call.status !== "answered");
        box.setAttribute("data-outcome", call.status);
        button.disabled = false;
        return false;
      }
      if (call.answered) {
        if (answeredSeen === null) { answeredSeen = Date.now(); }
        say(box, crmT("Answered · %(time)s", {time: clock((Date.now() - answeredSeen) / 1000)}), "answered");
        return true;
      }
      say(box, crmT("Ringing…"), "ringing");
      return true;
    }
    function poll() {
      getJSON("/telephony/calls/" + id)
        .then(function (a) {
          if (!a.ok) { say(box, a.body.message || crmT("The call could not be followed"), "error", true); button.disabled = false; return; }
          if (show(a.body)) { window.setTimeout(poll, POLL_CALL_MS); }
        })
        .catch(function () { window.setTimeout(poll, POLL_CALL_MS * 3); });
    }
    poll();
  }

  function dial(number, button, box) {
    button.disabled = true;
    say(box, crmT("Calling…"), "calling");
    fetch("/telephony/call", {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": me.csrf},
      body: JSON.stringify({number: number})
    })
      .then(function (r) { return r.json().then(function (body) { return {ok: r.ok, body: body}; }); })
      .then(function (a) {
        if (!a.ok) {
          say(box, a.body.message || crmT("The call could not be placed"), "error", true);
          button.disabled = false;
          return;
        }
        box.setAttribute("data-call", String(a.body.id));
        follow(box, a.body.id, button);
      })
      .catch(function () {
        say(box, crmT("The call could not be placed"), "error", true);
        button.disabled = false;
      });
  }

  function decorate(root) {
    if (!me) { return; }
    var marked = (root || document).querySelectorAll("[data-phone]");
    Array.prototype.forEach.call(marked, function (el) {
      var number = el.getAttribute("data-phone");
      if (!number || el.hasAttribute("data-phone-ready")) { return; }
      el.setAttribute("data-phone-ready", "1");
      var button = document.createElement("button");
      button.type = "button";
      button.className = "btn btn-default btn-xs crm-call-button";
      button.setAttribute("data-number", number);
      button.innerHTML = '<span class="fa fa-phone" aria-hidden="true"></span>';
      var box = document.createElement("span");
      box.className = "small crm-call-progress";
      box.setAttribute("role", "status");
      box.hidden = true;
      if (me.extension) {
        button.title = crmT("Call %(number)s", {number: el.textContent.trim() || number});
      } else {
        button.disabled = true;
        button.title = me.reason || crmT("You have no phone extension");
        button.classList.add("crm-call-disabled");
      }
      button.setAttribute("aria-label", button.title);
      button.addEventListener("click", function (event) {
        event.preventDefault();
        event.stopPropagation();
        if (!button.disabled) { dial(number, button, box); }
      });
      el.insertAdjacentElement("afterend", box);
      el.insertAdjacentElement("afterend", button);
    });
  }

  // --- the caller card -----------------------------------------------------------------------

  function dismissed() {
    try { return JSON.parse(window.localStorage.getItem(DISMISSED) || "[]"); } catch (e) { return []; }
  }

  function dismiss(id) {
    var ids = dismissed();
    if (ids.indexOf(id) < 0) { ids.push(id); }
    try { window.localStorage.setItem(DISMISSED, JSON.stringify(ids.slice(-50))); } catch (e) { /* private mode */ }
  }

  function tray() {
    var t = document.querySelector(".crm-caller-cards");
    if (!t) {
      t = document.createElement("div");
      t.className = "crm-caller-cards";
      t.setAttribute("aria-live", "polite");
      document.body.appendChild(t);
    }
    return t;
  }

  function open(id, html) {
    shown[id] = "loading";
    var got = html ? Promise.resolve({ok: true, body: {html: html}}) : getJSON("/telephony/card/" + id);
    got
      .then(function (a) {
        if (!a.ok) { delete shown[id]; return; }
        if (dismissed().indexOf(id) >= 0) { return; }
        var cardEl = document.createElement("section");
        cardEl.className = "crm-caller-card";
        cardEl.setAttribute("data-call", String(id));
        cardEl.setAttribute("role", "dialog");
        cardEl.setAttribute("aria-label", crmT("Incoming call"));
        var head = document.createElement("div");
        head.className = "crm-caller-head";
        var title = document.createElement("strong");
        title.textContent = crmT("Incoming call");
        var close = document.createElement("button");
        close.type = "button";
        close.className = "close crm-caller-dismiss";
        close.setAttribute("aria-label", crmT("Dismiss"));
        close.title = crmT("Dismiss");
        close.textContent = "×";
        close.addEventListener("click", function () {
          dismiss(id);
          cardEl.remove();
          shown[id] = "dismissed";
        });
        head.appendChild(title);
        head.appendChild(close);
        cardEl.appendChild(head);
        var body = document.createElement("div");
        body.innerHTML = a.body.html;  // rendered and escaped by the server
        cardEl.appendChild(body);
        cardEl.setAttribute("data-opened", String(Date.now()));
        tray().appendChild(cardEl);
        shown[id] = cardEl;
        decorate(cardEl);
      })
      .catch(function () { delete shown[id]; });
  }

  function ringing() {
    if (document.visibilityState !== "visible") { return; }
    var gone = dismissed();
    var seen = Object.keys(shown).concat(gone.map(String));
    return getJSON("/telephony/ringing?seen=" + encodeURIComponent(seen.slice(-50).join(","))).then(function (a) {
      if (!a.ok) { return; }
      var cards = a.body.cards || {};
      a.body.calls.forEach(function (id) {
        if (!shown[id] && gone.indexOf(id) < 0) { open(id, cards[String(id)]); }
      });
    });
  }

  function loop() {
    var next = function () { window.setTimeout(loop, POLL_RINGING_MS); };
    var asked = ringing();
    if (asked) { asked.then(next, function () { window.setTimeout(loop, POLL_RINGING_MS * 10); }); } else { next(); }
  }

  getJSON("/telephony/me")
    .then(function (a) {
      if (!a.ok) { return; }
      me = a.body;
      link();
      decorate(document);
      if (me.may_read_calls) { loop(); }
      document.addEventListener("visibilitychange", function () {
        if (document.visibilityState === "visible") { ringing(); }
      });
    })
    .catch(function () { /* not signed in: no buttons, no cards */ });
}());
