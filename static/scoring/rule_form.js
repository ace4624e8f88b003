/* The scoring rule form: only the section of the chosen kind is shown; the event type is picked
 * from the types seen (with the product's own); property filters are rows of name = value; fit
 * conditions use the segment builder (filter_builder.js). Each control writes the JSON fields the
 * server validates, which stay visible under "Advanced: JSON". No framework, no build step.
 */
(function () {
  "use strict";

  const kind = document.getElementById("id_kind");
  const optionsEl = document.getElementById("filter-builder-options");
  if (!kind || !optionsEl) {
    return;
  }
  const OPTIONS = JSON.parse(optionsEl.textContent);

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    Object.entries(attrs || {}).forEach(function ([key, value]) {
      if (key === "text") { node.textContent = value; } else if (key.startsWith("on")) { node.addEventListener(key.slice(2), value); } else { node.setAttribute(key, value); }
    });
    (children || []).forEach(function (child) { node.appendChild(child); });
    return node;
  }

  // Only the chosen kind's section.
  function showKind() {
    document.querySelectorAll("fieldset.rule-kind-behaviour").forEach(function (f) { f.hidden = kind.value !== "behaviour"; });
    document.querySelectorAll("fieldset.rule-kind-fit").forEach(function (f) { f.hidden = kind.value !== "fit"; });
  }
  kind.addEventListener("change", showKind);
  showKind();

  // Event type: the types seen, as suggestions on the text input.
  const eventType = document.getElementById("id_event_type");
  if (eventType) {
    const list = el("datalist", {id: "known-event-types"});
    OPTIONS.events.forEach(function (e) { list.appendChild(el("option", {value: e.name})); });
    eventType.setAttribute("list", "known-event-types");
    eventType.after(list);
  }

  // Property filters: rows of name = value over the JSON textarea.
  const filters = document.getElementById("id_property_filters");
  if (filters) {
    const box = el("div", {id: "property-filter-builder", class: "filter-builder"});
    filters.before(box);
    const details = el("details", {class: "advanced-json"}, [el("summary", {text: "Advanced: JSON"})]);
    filters.before(details);
    details.appendChild(filters);

    function current() {
      try {
        const value = JSON.parse(filters.value || "{}");
        return value && typeof value === "object" && !Array.isArray(value) ? value : null;
      } catch (e) {
        return null;
      }
    }
    function write(value) {
      filters.value = JSON.stringify(value);
      render();
    }
    function render() {
      const props = current();
      box.replaceChildren();
      if (props === null) {
        box.appendChild(el("p", {class: "help", text: "The JSON below is not an object of property = value; edit it there."}));
        return;
      }
      Object.keys(props).forEach(function (name) {
        const value = el("input", {type: "text", class: "fb-property-value", value: String(props[name])});
        value.addEventListener("change", function () {
          props[name] = /^-?\d+(\.\d+)?$/.test(value.value) ? Number(value.value) : value.value;
          write(props);
        });
        box.appendChild(el("div", {class: "fb-property"}, [el("span", {text: "where " + name + " = "}), value,
          el("button", {type: "button", class: "button", text: "Remove", onclick: function () { delete props[name]; write(props); }})]));
      });
      const seen = ((OPTIONS.events.find(function (e) { return e.name === (eventType ? eventType.value : ""); }) || {}).properties || [])
        .filter(function (n) { return !(n in props); });
      const add = el("select", {class: "fb-add-property"});
      add.appendChild(el("option", {value: "", text: "+ Only when the event's property…"}));
      seen.forEach(function (n) { add.appendChild(el("option", {value: n, text: n})); });
      add.appendChild(el("option", {value: "__other__", text: "another property…"}));
      add.addEventListener("change", function () {
        let name = add.value;
        if (name === "__other__") {
          name = (window.prompt("Property name") || "").trim();
        }
        if (name) {
          props[name] = "";
          write(props);
        }
      });
      box.appendChild(add);
    }
    if (eventType) {
      eventType.addEventListener("change", render);
    }
    filters.addEventListener("input", render);
    render();
  }

  // Fit conditions: the segment builder over the conditions JSON.
  const conditions = document.getElementById("id_conditions");
  if (conditions && window.LeadflowFilterBuilder) {
    const root = el("div", {class: "filter-builder", "data-target": "id_conditions"});
    conditions.before(root);
    const details = el("details", {class: "advanced-json"}, [el("summary", {text: "Advanced: JSON"})]);
    conditions.before(details);
    details.appendChild(conditions);
    const builder = new window.LeadflowFilterBuilder.Builder(root, conditions);
    builder.load();
    builder.follow();
  }
})();
