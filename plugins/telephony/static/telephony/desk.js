/* The operator's desk: "Next" claims a target, the Call button rings it
   through the exchange (its progress polled), a result or a call-back
   records it. Every request is JSON to /desk/<campaign>/...; an error's
   message is shown as the server wrote it. */
(function () {
  "use strict";
  var crmT = window.crmT || function (id) { return id; };
  var box = document.querySelector(".crm-desk[data-base]");
  if (!box) { return; }
  var base = box.getAttribute("data-base");
  var csrf = box.getAttribute("data-csrf");
  var targetBox = box.querySelector(".crm-desk-target");
  var errorBox = box.querySelector(".crm-desk-error");
  var closedBox = box.querySelector(".crm-desk-closed");
  var emptyBox = box.querySelector(".crm-desk-empty");
  var callStatus = box.querySelector(".crm-desk-call-status");
  var target = null;
  var polling = null;

  function q(sel) { return box.querySelector(sel); }

  function send(url, body) {
    return fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "Accept": "application/json", "X-CSRFToken": csrf},
      body: JSON.stringify(body || {})
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (data) {
        if (!r.ok) { throw new Error(data.message || data.error || crmT("The request failed")); }
        return data;
      });
    });
  }

  function fail(err) {
    errorBox.textContent = err.message;
    errorBox.hidden = false;
  }

  function show(state, claimed) {
    errorBox.hidden = true;
    closedBox.hidden = !state.closed;
    closedBox.textContent = state.closed || "";
    ["done", "failed", "callback"].forEach(function (name) {
      var cell = box.querySelector('[data-mine="' + name + '"]');
      if (cell) { cell.textContent = String((state.mine || {})[name] || 0); }
    });
    target = state.target;
    targetBox.hidden = !target;
    emptyBox.hidden = !(claimed && !target && !state.closed);
    if (!target) { box.removeAttribute("data-target"); return; }
    box.setAttribute("data-target", String(target.id));
    q(".crm-desk-name").textContent = target.name;
    q(".crm-desk-number").textContent = target.shown || target.number || "";
    var link = q(".crm-desk-link");
    link.hidden = !target.link;
    if (target.link) { link.setAttribute("href", target.link); }
    q(".crm-desk-attempts").textContent = String(target.attempts);
    q(".crm-desk-script").textContent = target.script_error || target.script || "";
    q(".crm-desk-comment").value = target.comment || "";
    Array.prototype.forEach.call(box.querySelectorAll(".crm-desk-answer"), function (el) { el.value = ""; });
    callStatus.textContent = "";
  }

  function answers() {
    var out = {};
    Array.prototype.forEach.call(box.querySelectorAll(".crm-desk-answer"), function (el) {
      if (el.value) { out[el.getAttribute("data-key")] = el.value; }
    });
    return out;
  }

  function pollCall(id) {
    if (polling) { window.clearTimeout(polling); }
    fetch("/desk/calls/" + id + ".json", {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (r) { return r.json(); })
      .then(function (c) {
        callStatus.textContent = c.label + (c.ended && c.duration ? " · " + c.duration + " s" : "");
        if (!c.ended) { polling = window.setTimeout(function () { pollCall(id); }, 1500); }
      })
      .catch(function () { polling = window.setTimeout(function () { pollCall(id); }, 4000); });
  }

  q(".crm-desk-next").addEventListener("click", function () {
    send(base + "/next").then(function (s) { show(s, true); }).catch(fail);
  });
  q(".crm-desk-call").addEventListener("click", function () {
    if (!target) { return; }
    callStatus.textContent = crmT("Calling…");
    send(base + "/targets/" + target.id + "/call").then(function (c) { pollCall(c.call); }).catch(fail);
  });
  Array.prototype.forEach.call(box.querySelectorAll(".crm-desk-result"), function (button) {
    button.addEventListener("click", function () {
      if (!target) { return; }
      send(base + "/targets/" + target.id + "/result", {
        code: button.getAttribute("data-code"), answers: answers(), comment: q(".crm-desk-comment").value
      }).then(function (s) { show(s, false); }).catch(fail);
    });
  });
  q(".crm-desk-callback").addEventListener("click", function () {
    if (!target) { return; }
    send(base + "/targets/" + target.id + "/callback", {
      at: q(".crm-desk-callback-at").value, comment: q(".crm-desk-comment").value
    }).then(function (s) { show(s, false); }).catch(fail);
  });

  try {
    var initial = JSON.parse(q(".crm-desk-initial").textContent);
    show(initial, false);
    if (initial.target && initial.target.call) { pollCall(initial.target.call); }
  } catch (e) { /* the page still works from "Next" */ }
}());
