/* Live progress on a contact import's admin page.
 *
 * While the import is queued or running, polls the job's status endpoint (JSON) every 500 ms and
 * updates the status, progress bar, counts, message, log and error report link in place; stops
 * once the import has completed or failed. No framework, no external files.
 */
(function () {
  "use strict";

  const INTERVAL_MS = 500;
  const MAX_BACKOFF_MS = 5000;
  const panel = document.getElementById("import-live");
  if (!panel || panel.dataset.poll !== "true") {
    return;
  }
  const statusUrl = panel.dataset.statusUrl;
  let failures = 0;

  function byId(id) {
    return document.getElementById(id);
  }

  function setText(id, text) {
    const element = byId(id);
    if (element) {
      element.textContent = text;
    }
  }

  function renderLog(entries) {
    const body = byId("import-log-body");
    if (!body) {
      return;
    }
    const rows = entries.map(function (entry) {
      const row = document.createElement("tr");
      const at = document.createElement("td");
      at.className = "at";
      at.textContent = entry.at;
      const message = document.createElement("td");
      message.textContent = entry.message;
      row.append(at, message);
      return row;
    });
    body.replaceChildren(...rows);
  }

  function render(state) {
    panel.dataset.status = state.status;
    byId("import-progress").value = state.progress;
    setText("import-progress-text", state.progress + " %");
    setText("import-status-label", state.status_label);
    const message = byId("import-message");
    message.textContent = state.message;
    message.hidden = !state.message;
    panel.querySelectorAll("[data-count]").forEach(function (cell) {
      cell.textContent = String(state[cell.dataset.count]);
    });
    setText("import-started", state.started_at || "—");
    setText("import-finished", state.finished_at || "—");
    renderLog(state.log);
    if (state.finished && state.error_report_url) {
      byId("error-report-link").href = state.error_report_url;
      byId("import-report").hidden = false;
    }
  }

  function showPollError(text) {
    const note = byId("import-poll-error");
    note.textContent = text;
    note.hidden = !text;
  }

  function poll() {
    fetch(statusUrl, {credentials: "same-origin", cache: "no-store", headers: {Accept: "application/json"}})
      .then(function (response) {
        if (response.status === 403 || response.status === 404) {
          throw new Error("stop:" + response.status);
        }
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        return response.json();
      })
      .then(function (state) {
        failures = 0;
        showPollError("");
        render(state);
        if (!state.finished) {
          window.setTimeout(poll, INTERVAL_MS);
        }
      })
      .catch(function (error) {
        if (String(error.message).startsWith("stop:")) {
          showPollError("This page can no longer read the import's status; reload it to see the result.");
          return;
        }
        failures += 1;
        showPollError("Could not reach the server to refresh the progress; retrying…");
        window.setTimeout(poll, Math.min(INTERVAL_MS * 2 ** failures, MAX_BACKOFF_MS));
      });
  }

  window.setTimeout(poll, INTERVAL_MS);
})();
