/* The SMS compose page (/telephony/sms): the text's count of characters and
   SMS parts as it is typed (GSM-7: 160, 153 per part of a longer one; any
   other character makes it UCS-2: 70, 67 per part — as the server counts),
   and a template filled in over the record by the server. */
(function () {
  "use strict";
  var crmT = window.crmT || function (id) { return id; };
  var text = document.getElementById("crm-sms-text");
  var count = document.querySelector(".crm-sms-count");
  if (!text || !count) { return; }
  var GSM = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?" +
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
  var EXTENDED = "^{}\\[~]|€\f";

  function size(value) {
    var gsm = true, length = 0, i, c;
    for (i = 0; i < value.length; i++) {
      c = value.charAt(i);
      if (EXTENDED.indexOf(c) >= 0) { length += 2; } else if (GSM.indexOf(c) >= 0) { length += 1; } else { gsm = false; break; }
    }
    var single = 160, multi = 153, encoding = "GSM-7";
    if (!gsm) { length = value.length; single = 70; multi = 67; encoding = "UCS-2"; }
    var segments = length === 0 ? 0 : (length <= single ? 1 : Math.ceil(length / multi));
    return {length: length, encoding: encoding, segments: segments};
  }

  function show() {
    var s = size(text.value.replace(/\r\n/g, "\n"));
    count.textContent = crmT("%(length)s characters, %(encoding)s, %(segments)s SMS",
                             {length: s.length, encoding: s.encoding, segments: s.segments});
    var too = s.segments > parseInt(count.dataset.maxSegments || "10", 10);
    count.classList.toggle("text-danger", too);
  }
  text.addEventListener("input", show);
  show();

  var select = document.getElementById("crm-sms-template");
  if (!select) { return; }
  var note = document.querySelector(".crm-sms-template-note");
  var filled = text.value;
  function say(message, bad) {
    note.textContent = message;
    note.classList.toggle("text-danger", !!bad);
  }
  select.addEventListener("change", function () {
    if (!select.value) { return; }
    if (text.value && text.value !== filled &&
        !window.confirm(crmT("Replace the text with the template?"))) {
      return;
    }
    var query = new URLSearchParams({template: select.value, doctype: select.dataset.doctype,
                                     id: select.dataset.id});
    say(crmT("Filling in the template…"), false);
    fetch(select.dataset.url + "?" + query.toString(), {credentials: "same-origin",
                                                         headers: {"Accept": "application/json"}})
      .then(function (response) {
        return response.json().then(function (body) { return {ok: response.ok, body: body}; });
      })
      .then(function (answer) {
        if (!answer.ok) {
          say(answer.body.message || crmT("The template could not be filled in"), true);
          return;
        }
        text.value = answer.body.text;
        filled = text.value;
        show();
        say(crmT("The template is filled in: edit the text as you like."), false);
      })
      .catch(function () { say(crmT("The template could not be filled in"), true); });
  });
}());
