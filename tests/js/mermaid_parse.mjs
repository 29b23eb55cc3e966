// Parse Mermaid flowcharts with mermaid's own parser and print what it read, as JSON.
//
// stdin: a JSON array of diagram texts. stdout: a JSON array, one entry per diagram:
// {"error": message} or {"vertices": {id: text}, "edges": [[from, to, text]],
//  "subgraphs": [[id, title, [node ids]]]}, every text as a browser would show it: mermaid's
// `#NN;` entity codes decoded, and split into lines at `<br/>`. A label that would render as
// any other HTML element is reported as {"markup": [element names]} in place of its text.
// Run from the folder that holds node_modules (tests/test_graph_parsers.py does).
import { parseHTML } from "linkedom";

// mermaid sanitises labels with DOMPurify, which needs a DOM: linkedom's is enough to parse.
const { window } = parseHTML("<!doctype html><html><body></body></html>");
globalThis.window = window;
globalThis.document = window.document;
const { default: mermaid } = await import("mermaid");
const fs = await import("node:fs");

// mermaid keeps `#NN;` as placeholders while parsing and turns them into HTML entities when it
// renders (decodeEntities in mermaidAPI); the browser then decodes those.
function shown(text) {
  const html = text.replace(/ﬂ°°/g, "&#").replace(/ﬂ°/g, "&").replace(/¶ß/g, ";");
  const lines = [];
  const markup = [];
  for (const part of html.split("<br/>")) {
    const div = window.document.createElement("div");
    div.innerHTML = part;
    for (const el of div.querySelectorAll("*")) markup.push(el.tagName.toLowerCase());
    lines.push(div.textContent);
  }
  return markup.length ? { markup } : lines.join("\n");
}

const out = [];
for (const text of JSON.parse(fs.readFileSync(0, "utf8"))) {
  try {
    await mermaid.parse(text);
    const d = await mermaid.mermaidAPI.getDiagramFromText(text);
    const vertices = {};
    for (const v of d.db.getVertices().values()) vertices[v.id] = shown(v.text);
    out.push({
      vertices,
      edges: d.db.getEdges().map((e) => [e.start, e.end, shown(e.text)]),
      subgraphs: d.db.getSubGraphs().map((s) => [s.id, shown(s.title), s.nodes]),
    });
  } catch (e) {
    out.push({ error: String(e.message || e) });
  }
}
process.stdout.write(JSON.stringify(out));
