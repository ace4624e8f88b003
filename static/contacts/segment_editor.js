/* Live count and sample on a segment's admin page.
 *
 * As the marketer edits the definition (JSON textarea), waits until typing pauses (400 ms), POSTs
 * the text to the preview endpoint and shows {count, sample, errors}: the number of matching
 * contacts, 20 of them, or every problem with its path. Late answers never overwrite newer ones.
 * No framework, no external files.
 */
(function () {
  "use strict";

  const DEBOUNCE_MS = 400;
  const panel = document.getElementById("segment-preview");
  const textarea = document.getElementById("id_definition");
  if (!panel || !textarea) {
    return;
  }
  const form = textarea.form;
  const countEl = document.getElementById("segment-preview-count");
  const errorsEl = document.getElementById("segment-preview-errors");
  const table = document.getElementById("segment-preview-sample");
  let timer = null;
  let latest = 0;

  function csrfToken() {
    const input = form && form.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  function cell(row, text) {
    const td = document.createElement("td");
    td.textContent = text;
    row.appendChild(td);
  }

  function render(answer) {
    errorsEl.replaceChildren();
    const body = table.tBodies[0];
    body.replaceChildren();
    if (answer.errors && answer.errors.length) {
      countEl.textContent = "The definition has problems:";
      answer.errors.forEach(function (message) {
        const li = document.createElement("li");
        li.textContent = message;
        errorsEl.appendChild(li);
      });
      table.hidden = true;
      return;
    }
    countEl.textContent = answer.count === 1 ? "1 contact matches" : answer.count + " contacts match";
    answer.sample.forEach(function (contact) {
      const row = document.createElement("tr");
      cell(row, contact.email);
      cell(row, contact.name);
      cell(row, String(contact.score));
      body.appendChild(row);
    });
    table.hidden = answer.sample.length === 0;
  }

  function refresh() {
    const ticket = ++latest;
    const data = new URLSearchParams();
    data.set("definition", textarea.value);
    data.set("segment_id", panel.dataset.segmentId || "");
    countEl.textContent = "Counting…";
    fetch(panel.dataset.previewUrl, {
      method: "POST",
      body: data,
      credentials: "same-origin",
      headers: {"X-CSRFToken": csrfToken(), "Accept": "application/json"},
    })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        return response.json();
      })
      .then(function (answer) {
        if (ticket === latest) {
          render(answer);
        }
      })
      .catch(function (error) {
        if (ticket === latest) {
          countEl.textContent = "Preview unavailable (" + error.message + ")";
        }
      });
  }

  textarea.addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(refresh, DEBOUNCE_MS);
  });
  refresh();
})();
