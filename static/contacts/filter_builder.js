/* Point-and-click builder for a filter tree (segments' definition, fit rules' conditions).
 *
 * Each builder is a <div class="filter-builder" data-target="id_definition"> next to the JSON
 * textarea it edits. It reads the textarea's JSON, shows it as nested groups (all / any / not) of
 * conditions (field, custom field, tag, list, event with count, window and properties, segment),
 * and writes the JSON back on every change, firing "input" so the live count follows. The JSON
 * stays the truth and stays editable ("Advanced: JSON"); a tree the builder cannot show (hand
 * written, with an unknown key) leaves the builder off with a note rather than losing anything.
 * Choices come from <script id="filter-builder-options" type="application/json"> (the server's
 * contacts/builder_options.py). No framework, no build step.
 */
(function () {
  "use strict";

  const optionsEl = document.getElementById("filter-builder-options");
  if (!optionsEl) {
    return;
  }
  const OPTIONS = JSON.parse(optionsEl.textContent);
  const OP_LABELS = {
    eq: "is", neq: "is not", in: "is one of", not_in: "is none of", contains: "contains",
    startswith: "starts with", gt: "is more than", gte: "is at least", lt: "is less than",
    lte: "is at most", is_set: "has a value", is_empty: "has no value", within_days: "in the last (days)",
  };
  const KINDS = ["field", "attribute", "tag", "list", "event", "segment", "all", "any", "not"];
  const KIND_LABELS = {
    field: "Contact field", attribute: "Custom field", tag: "Has tag", list: "On list",
    event: "Did an event", segment: "In segment", all: "All of (group)", any: "Any of (group)",
    not: "Not (group)",
  };

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    Object.entries(attrs || {}).forEach(function ([key, value]) {
      if (key === "text") {
        node.textContent = value;
      } else if (key.startsWith("on")) {
        node.addEventListener(key.slice(2), value);
      } else {
        node.setAttribute(key, value);
      }
    });
    (children || []).forEach(function (child) { node.appendChild(child); });
    return node;
  }

  function select(values, current, onchange, cls) {
    const s = el("select", {class: cls || "", onchange: function () { onchange(s.value); }});
    values.forEach(function (v) {
      const value = typeof v === "object" ? v.value : v;
      const label = typeof v === "object" ? v.label : v;
      const o = el("option", {value: String(value), text: label});
      if (String(value) === String(current)) {
        o.selected = true;
      }
      s.appendChild(o);
    });
    return s;
  }

  function input(value, onchange, attrs) {
    const i = el("input", Object.assign({type: "text", value: value === undefined ? "" : String(value)}, attrs || {}));
    i.addEventListener("input", function () { onchange(i.value); });
    return i;
  }

  function kindOf(node) {
    if (node === null || typeof node !== "object" || Array.isArray(node)) {
      return null;
    }
    return KINDS.find(function (k) { return k in node; }) || null;
  }

  function fieldKind(node) {
    if ("field" in node) {
      const f = OPTIONS.fields.find(function (x) { return x.name === node.field; });
      return f ? f.kind : "text";
    }
    const a = OPTIONS.attributes.find(function (x) { return x.name === node.attribute; });
    return a ? a.kind : "text";
  }

  /* A typed value from what was typed: numbers for number fields, booleans for bool, lists for in. */
  function typed(kind, op, text) {
    if (op === "within_days") {
      return parseInt(text, 10) || 0;
    }
    const one = function (t) {
      t = t.trim();
      if (kind === "number") {
        const n = Number(t);
        return t !== "" && !isNaN(n) ? n : t;
      }
      if (kind === "bool") {
        return t === "true" || t === "yes";
      }
      return t;
    };
    if (op === "in" || op === "not_in") {
      return text.split(",").map(one).filter(function (v) { return v !== ""; });
    }
    return one(text);
  }

  function shown(value) {
    return Array.isArray(value) ? value.join(", ") : (value === undefined ? "" : String(value));
  }

  function fresh(kind) {
    switch (kind) {
      case "field": return {field: "email", op: "contains", value: ""};
      case "attribute": return OPTIONS.attributes.length ? {attribute: OPTIONS.attributes[0].name, op: "is_set"} : {field: "company", op: "is_set"};
      case "tag": return {tag: OPTIONS.tags[0] || ""};
      case "list": return {list: OPTIONS.lists[0] || ""};
      case "event": return {event: (OPTIONS.events[0] || {name: "page_view"}).name, did: true, min_count: 1};
      case "segment": return {segment: OPTIONS.segments.length ? OPTIONS.segments[0].id : 0};
      case "not": return {not: {all: []}};
      default: {
        const group = {};
        group[kind] = [];
        return group;
      }
    }
  }

  function Builder(root, textarea) {
    this.root = root;
    this.textarea = textarea;
    this.tree = null;
  }

  /* JSON typed by hand: the builder follows as soon as the text parses (on input, not on change:
   * a change fires on blur, and redrawing then would move the button being clicked). */
  Builder.prototype.follow = function () {
    const self = this;
    this.textarea.addEventListener("input", function () {
      if (self.textarea.value === self.written) {
        return;  // our own write
      }
      try {
        JSON.parse(self.textarea.value || "{}");
      } catch (e) {
        return;  // half typed: keep showing the last tree that parsed
      }
      self.load();
    });
  };

  Builder.prototype.load = function () {
    const text = this.textarea.value.trim();
    let tree = {all: []};
    if (text) {
      try {
        tree = JSON.parse(text);
      } catch (e) {
        return this.off("The JSON below does not parse; fix it there, or clear it to start here.");
      }
    }
    if (!kindOf(tree)) {
      tree = {all: [tree].filter(function (n) { return n && Object.keys(n).length; })};
    }
    if (kindOf(tree) !== "all" && kindOf(tree) !== "any") {
      tree = {all: [tree]};
    }
    this.tree = tree;
    this.render();
  };

  Builder.prototype.off = function (message) {
    this.root.replaceChildren(el("p", {class: "help filter-builder-off", text: message}));
  };

  Builder.prototype.changed = function () {
    this.textarea.value = this.written = JSON.stringify(this.tree);
    this.textarea.dispatchEvent(new Event("input", {bubbles: true}));
    this.render();
  };

  Builder.prototype.render = function () {
    const self = this;
    this.root.replaceChildren(this.group(this.tree, null));
    this.root.querySelectorAll("input, select").forEach(function (control) {
      control.addEventListener("change", function () { self.changed(); });
    });
  };

  /* A group: its mode (all / any), its children, and buttons to add a condition or a subgroup. */
  Builder.prototype.group = function (node, remove) {
    const self = this;
    const mode = "all" in node ? "all" : "any";
    const children = node[mode];
    const box = el("div", {class: "fb-group"});
    const head = el("div", {class: "fb-head"}, [
      el("span", {text: "Contacts matching "}),
      select([{value: "all", label: "all of"}, {value: "any", label: "any of"}], mode, function (value) {
        if (value !== mode) {
          node[value] = node[mode];
          delete node[mode];
        }
      }, "fb-mode"),
    ]);
    if (remove) {
      head.appendChild(el("button", {type: "button", class: "button fb-remove", text: "Remove group", onclick: remove}));
    }
    box.appendChild(head);
    const list = el("ul", {class: "fb-children"});
    children.forEach(function (child, index) {
      const drop = function () { children.splice(index, 1); self.changed(); };
      list.appendChild(el("li", {class: "fb-item"}, [self.node(child, drop, function (next) { children[index] = next; })]));
    });
    box.appendChild(list);
    const adder = select([{value: "", label: "+ Add a condition…"}].concat(KINDS.map(function (k) {
      return {value: k, label: KIND_LABELS[k]};
    })), "", function (kind) {
      if (kind) {
        children.push(fresh(kind));
        self.changed();
      }
    }, "fb-add");
    box.appendChild(el("div", {class: "fb-foot"}, [adder]));
    return box;
  };

  Builder.prototype.node = function (node, remove, replace) {
    const self = this;
    const kind = kindOf(node);
    if (kind === "all" || kind === "any") {
      return this.group(node, remove);
    }
    const row = el("div", {class: "fb-condition fb-" + (kind || "unknown")});
    if (kind === "not") {
      row.appendChild(el("span", {text: "None of these: "}));
      if (!kindOf(node.not) || (kindOf(node.not) !== "all" && kindOf(node.not) !== "any")) {
        node.not = {all: [node.not]};
      }
      row.appendChild(this.group(node.not, remove));
      return row;
    }
    const kindSelect = select(KINDS.slice(0, 6).map(function (k) { return {value: k, label: KIND_LABELS[k]}; }), kind,
      function (value) { replace(fresh(value)); }, "fb-kind");
    row.appendChild(kindSelect);
    if (kind === "field" || kind === "attribute") {
      this.condition(row, node);
    } else if (kind === "tag" || kind === "list") {
      const names = kind === "tag" ? OPTIONS.tags : OPTIONS.lists;
      row.appendChild(names.length ? select(names, node[kind], function (v) { node[kind] = v; }, "fb-name")
        : input(node[kind], function (v) { node[kind] = v; }, {class: "fb-name"}));
    } else if (kind === "segment") {
      row.appendChild(select(OPTIONS.segments.map(function (s) { return {value: s.id, label: s.name}; }), node.segment,
        function (v) { node.segment = parseInt(v, 10); }, "fb-name"));
    } else if (kind === "event") {
      this.event(row, node);
    } else {
      row.appendChild(el("code", {text: JSON.stringify(node)}));
    }
    row.appendChild(el("button", {type: "button", class: "button fb-remove", text: "Remove", onclick: remove}));
    return row;
  };

  Builder.prototype.condition = function (row, node) {
    const isField = "field" in node;
    const names = isField ? OPTIONS.fields.map(function (f) { return {value: f.name, label: f.name.replace(/_/g, " ")}; })
      : OPTIONS.attributes.map(function (a) { return {value: a.name, label: a.label || a.name}; });
    const key = isField ? "field" : "attribute";
    row.appendChild(select(names, node[key], function (v) {
      node[key] = v;
      const ops = OPTIONS.ops[fieldKind(node)] || [];
      if (ops.indexOf(node.op) < 0) {
        node.op = ops[0];
      }
    }, "fb-field"));
    const kind = fieldKind(node);
    const ops = OPTIONS.ops[kind] || OPTIONS.ops.text;
    row.appendChild(select(ops.map(function (op) { return {value: op, label: OP_LABELS[op] || op}; }), node.op, function (v) {
      node.op = v;
      if (v === "is_set" || v === "is_empty") {
        delete node.value;
      }
    }, "fb-op"));
    if (node.op === "is_set" || node.op === "is_empty") {
      return;
    }
    const attribute = !isField && OPTIONS.attributes.find(function (a) { return a.name === node.attribute; });
    if (kind === "choice" && attribute && attribute.choices.length && (node.op === "eq" || node.op === "neq")) {
      row.appendChild(select(attribute.choices, node.value, function (v) { node.value = v; }, "fb-value"));
    } else if (kind === "bool") {
      row.appendChild(select(["true", "false"], String(node.value), function (v) { node.value = v === "true"; }, "fb-value"));
    } else {
      row.appendChild(input(shown(node.value), function (v) { node.value = typed(kind, node.op, v); },
        {class: "fb-value", placeholder: node.op === "in" || node.op === "not_in" ? "a, b, c" : ""}));
    }
  };

  Builder.prototype.event = function (row, node) {
    const names = OPTIONS.events.map(function (e) { return e.name; });
    if (node.event && names.indexOf(node.event) < 0) {
      names.push(node.event);
    }
    row.appendChild(select([{value: "true", label: "did"}, {value: "false", label: "did not do"}],
      String(node.did !== false), function (v) { node.did = v === "true"; }, "fb-did"));
    row.appendChild(select(names, node.event, function (v) { node.event = v; node.properties = {}; }, "fb-event"));
    row.appendChild(el("span", {text: " at least "}));
    row.appendChild(input(node.min_count || 1, function (v) { node.min_count = Math.max(1, parseInt(v, 10) || 1); },
      {class: "fb-count", size: "3", type: "number", min: "1"}));
    row.appendChild(el("span", {text: " time(s), in the last "}));
    row.appendChild(input(node.within_days || "", function (v) {
      const days = parseInt(v, 10);
      if (days > 0) { node.within_days = days; } else { delete node.within_days; }
    }, {class: "fb-days", size: "4", type: "number", min: "1", placeholder: "any"}));
    row.appendChild(el("span", {text: " days "}));
    this.properties(row, node, "properties", node.event);
  };

  /* Property filters {name: value}: rows of name (the names seen for that event type) = value. */
  Builder.prototype.properties = function (row, node, key, eventName) {
    const self = this;
    const seen = (OPTIONS.events.find(function (e) { return e.name === eventName; }) || {properties: []}).properties;
    const props = node[key] || {};
    const box = el("span", {class: "fb-properties"});
    Object.keys(props).forEach(function (name) {
      box.appendChild(el("span", {class: "fb-property"}, [
        el("span", {text: " where " + name + " = "}),
        input(props[name], function (v) { props[name] = /^-?\d+(\.\d+)?$/.test(v) ? Number(v) : v; }, {class: "fb-property-value", size: "14"}),
        el("button", {type: "button", class: "button", text: "×", onclick: function () { delete props[name]; self.changed(); }}),
      ]));
    });
    const names = seen.filter(function (n) { return !(n in props); });
    box.appendChild(select([{value: "", label: "+ property…"}].concat(names), "", function (name) {
      if (name) {
        props[name] = "";
        node[key] = props;
        self.changed();
      }
    }, "fb-add-property"));
    row.appendChild(box);
  };

  window.LeadflowFilterBuilder = {Builder: Builder, properties: Builder.prototype.properties, options: OPTIONS};

  document.querySelectorAll(".filter-builder").forEach(function (root) {
    const textarea = document.getElementById(root.dataset.target);
    if (!textarea) {
      return;
    }
    const builder = new Builder(root, textarea);
    builder.load();
    builder.follow();
  });
})();
