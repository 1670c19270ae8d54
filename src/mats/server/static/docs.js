// A small offline renderer of /openapi.json: every endpoint, its body fields and its answers.
"use strict";

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function resolve(spec, schema) {
  if (schema && schema.$ref) return resolve(spec, spec.components.schemas[schema.$ref.split("/").pop()]);
  return schema || {};
}

function typeOf(spec, s) {
  s = resolve(spec, s);
  if (s.anyOf) return s.anyOf.map((x) => typeOf(spec, x)).join(" | ");
  if (s.type === "array") return typeOf(spec, s.items) + "[]";
  return s.format === "binary" ? "file" : (s.type || "object");
}

function limits(s) {
  const out = [];
  for (const [k, name] of [["minimum", "≥"], ["maximum", "≤"], ["minLength", "min length"],
                           ["maxLength", "max length"], ["minItems", "min items"], ["maxItems", "max items"]]) {
    if (s[k] !== undefined) out.push(`${name} ${s[k]}`);
  }
  for (const alt of s.anyOf || []) out.push(...limits(alt));
  if (s.default !== undefined && s.default !== null) out.push(`default ${JSON.stringify(s.default)}`);
  return out.join(", ");
}

function fieldTable(spec, schema) {
  schema = resolve(spec, schema);
  const table = el("table", "fields");
  for (const [name, prop] of Object.entries(schema.properties || {})) {
    const row = el("tr");
    row.append(el("td", "name", name + ((schema.required || []).includes(name) ? " *" : "")),
               el("td", "type", typeOf(spec, prop)), el("td", "", (prop.description || "") + " " + limits(prop)));
    table.appendChild(row);
  }
  return table;
}

async function main() {
  const spec = await (await fetch("/openapi.json")).json();
  const root = document.getElementById("endpoints");
  root.innerHTML = "";
  for (const [path, ops] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      const card = el("section", "card");
      card.appendChild(el("h2", "", `${method.toUpperCase()} ${path}`));
      if (op.summary) card.appendChild(el("p", "", op.summary));
      const body = op.requestBody && op.requestBody.content;
      if (body) {
        for (const [ctype, media] of Object.entries(body)) {
          card.appendChild(el("h3", "", ctype));
          card.appendChild(fieldTable(spec, media.schema));
        }
      }
      const ok = op.responses && op.responses["200"] && op.responses["200"].content;
      if (ok && ok["application/json"]) {
        card.appendChild(el("h3", "", "200 answer"));
        card.appendChild(fieldTable(spec, ok["application/json"].schema));
      }
      const errs = Object.keys(op.responses || {}).filter((s) => s !== "200");
      if (errs.length) card.appendChild(el("p", "muted", "errors: " + errs.join(", ")));
      root.appendChild(card);
    }
  }
}

main().catch((e) => { document.getElementById("endpoints").textContent = "Could not read /openapi.json: " + e; });
