/* The compose page (/mail/compose): choosing a template fills the subject
   and the text with it, rendered over the record by the server. */
(function () {
  "use strict";
  var crmT = window.crmT || function (id) { return id; };
  var select = document.getElementById("crm-mail-template");
  if (!select) { return; }
  var subject = document.getElementById("crm-mail-subject");
  var text = document.getElementById("crm-mail-text");
  var note = document.querySelector(".crm-mail-template-note");
  var filled = {subject: subject.value, text: text.value};

  function say(message, bad) {
    note.textContent = message;
    note.classList.toggle("text-danger", !!bad);
  }

  select.addEventListener("change", function () {
    if (!select.value) { return; }
    var typed = (subject.value !== filled.subject || text.value !== filled.text) &&
      (subject.value || text.value);
    if (typed && !window.confirm(crmT("Replace the subject and the text with the template?"))) {
      return;
    }
    var query = new URLSearchParams({template: select.value});
    if (select.dataset.doctype) {
      query.set("doctype", select.dataset.doctype);
      query.set("id", select.dataset.id);
    }
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
        subject.value = answer.body.subject;
        text.value = answer.body.text;
        filled = {subject: subject.value, text: text.value};
        say(crmT("The template is filled in: edit the letter as you like."), false);
      })
      .catch(function () { say(crmT("The template could not be filled in"), true); });
  });
}());
