#!/usr/bin/env node
// Decodes what interop/sparkplug/host.py captured from gateway-rx (NBIRTH, DBIRTH, DDATA,
// NDEATH) with sparkplug-payload, Eclipse Tahu's JavaScript decoder, and checks names,
// aliases, datatypes and values against what the PLC sent.
// Usage: node payload.js CAPTURE.json   (sparkplug-payload found through NODE_PATH)
"use strict";

const fs = require("fs");
const spb = require("sparkplug-payload").get("spBv1.0");

const TYPES = {
  u16: "UInt16", i16: "Int16", u32: "UInt32", i32: "Int32", u64: "UInt64", i64: "Int64",
  f32: "Float", f64: "Double", string: "String", bool: "Boolean",
};

const cap = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const tags = new Map(cap.tags.map((t) => [t.name, t]));
const passed = [];
const failed = [];
const notes = new Set();
function check(ok, what, detail) {
  if (ok) {
    passed.push(what);
    console.log(`  ok    ${what}`);
  } else {
    failed.push(what);
    console.log(`  FAIL  ${what}: ${detail}`);
  }
}

// Longs (64-bit fields) as decimal strings, to compare with the capture's.
function text(v) {
  if (v !== null && typeof v === "object" && typeof v.toString === "function" &&
      !Buffer.isBuffer(v) && !(v instanceof Uint8Array)) {
    return v.toString();
  }
  return typeof v === "number" ? String(v) : v;
}

function f32(x) {
  return Math.fround(x);
}

function sameValue(tag, got) {
  return tag.values.some((want) => {
    if (tag.type === "f32") return f32(got) === f32(want);
    if (tag.type === "f64" || tag.type === "bool" || tag.type === "string") return got === want;
    return text(got) === String(want);
  });
}

const msgs = cap.messages.map((m) => {
  const raw = Buffer.from(m.payload, "base64");
  try {
    return { kind: m.kind, p: spb.decodePayload(raw) };
  } catch (e) {
    return { kind: m.kind, p: null, error: String(e) };
  }
});
const undecoded = msgs.filter((m) => m.p === null);
check(undecoded.length === 0, `all ${msgs.length} captured messages decode`,
  undecoded.map((m) => `${m.kind}: ${m.error}`).slice(0, 3).join("; "));

const nbirth = msgs.find((m) => m.kind === "NBIRTH" && m.p);
const bd = nbirth && nbirth.p.metrics.find((m) => m.name === "bdSeq");
check(bd && bd.type === "Int64" && text(nbirth.p.seq) === "0",
  `NBIRTH: bdSeq ${bd && text(bd.value)} (Int64), seq 0`, JSON.stringify(nbirth && nbirth.p));

const dbirths = msgs.filter((m) => m.kind === "DBIRTH" && m.p &&
  [...tags.keys()].every((n) => m.p.metrics.some((x) => x.name === n)));
check(dbirths.length > 0, "a DBIRTH names every tag", `${msgs.map((m) => m.kind)}`);
const byAlias = new Map();
if (dbirths.length) {
  const wrong = [];
  for (const m of dbirths[0].p.metrics) {
    byAlias.set(text(m.alias), m.name);
    const t = tags.get(m.name);
    if (!t || m.type !== TYPES[t.type] || m.alias === undefined) {
      wrong.push(`${m.name}: ${m.type} alias ${text(m.alias)}`);
    }
  }
  check(wrong.length === 0 && byAlias.size === dbirths[0].p.metrics.length,
    "DBIRTH: each tag's datatype and an alias of its own", wrong.join("; "));
}

const wrong = [];
let resolved = 0;
let data = 0;
for (const m of msgs.filter((x) => x.kind === "DDATA" && x.p)) {
  for (const x of m.p.metrics) {
    data += 1;
    const name = byAlias.get(text(x.alias));
    const t = name && tags.get(name);
    if (!t) {
      wrong.push(`alias ${text(x.alias)} resolves to nothing`);
      continue;
    }
    resolved += 1;
    if (x.type !== TYPES[t.type]) {
      wrong.push(`${name}: ${x.type}`);
    } else if (!sameValue(t, x.value)) {
      // sparkplug-payload 1.0.3 reads UInt32 from long_value (and writes it there); the
      // specification has UInt32 in uint32, int_value, which is where the sink puts it.
      if (t.type === "u32" && (x.value === null || text(x.value) === "0")) {
        notes.add("sparkplug-payload reads UInt32 from long_value, not the specification's " +
          "int_value: every UInt32 decodes as null (or 0)");
      } else {
        wrong.push(`${name}: ${text(x.value)} not among ${t.values}`);
      }
    }
  }
}
check(data > 0 && resolved === data, `${data} DDATA metrics, each alias a DBIRTH name`,
  `${resolved} resolved`);
check(wrong.length === 0, "DDATA: each value one the PLC held, with its tag's datatype",
  wrong.slice(0, 4).join("; "));

const ndeath = msgs.find((m) => m.kind === "NDEATH" && m.p);
if (ndeath) {
  const b = ndeath.p.metrics.find((m) => m.name === "bdSeq");
  check(b && ndeath.p.seq === undefined, `NDEATH: bdSeq ${b && text(b.value)}, no seq`,
    JSON.stringify(ndeath.p));
}

for (const n of notes) console.log(`  note  ${n}`);
if (failed.length) {
  console.log(`sparkplug-payload interop: ${failed.length} of ${failed.length + passed.length} ` +
    "checks FAILED");
  process.exit(1);
}
console.log(`sparkplug-payload interop: all ${passed.length} checks passed`);
