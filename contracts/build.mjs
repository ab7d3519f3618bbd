// Compiles every Solidity source of the project with the pinned solc-js and writes ABI + bytecode artifacts.
// Usage: node contracts/build.mjs [--check]   (run from anywhere; settings live in contracts/compiler.json)
// Artifacts are written to contracts/artifacts/<Contract>.json with sorted keys and no timestamps, so the same
// sources always give the same bytes. --check compiles and exits 1 if the committed artifacts differ.
import { createRequire } from "node:module";
import { readFileSync, writeFileSync, readdirSync, existsSync, mkdirSync, rmSync } from "node:fs";
import { createHash } from "node:crypto";
import path from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const CONFIG = JSON.parse(readFileSync(path.join(ROOT, "contracts/compiler.json"), "utf8"));
const ARTIFACTS = path.join(ROOT, "contracts/artifacts");
const require = createRequire(import.meta.url);
const solc = require(path.join(ROOT, "node_modules/solc"));

function fail(message) {
  process.stderr.write(`build: ${message}\n`);
  process.exit(2);
}

function sourceFiles() {
  const files = [];
  for (const pattern of CONFIG.sources) {
    const dir = path.join(ROOT, path.dirname(pattern));
    if (!existsSync(dir)) continue;
    for (const name of readdirSync(dir).sort()) {
      if (name.endsWith(".sol")) files.push(path.join(path.dirname(pattern), name));
    }
  }
  return files;
}

function resolveImport(importPath) {
  for (const [prefix, target] of Object.entries(CONFIG.remappings)) {
    if (importPath.startsWith(prefix)) {
      const file = path.join(ROOT, target, importPath.slice(prefix.length));
      if (existsSync(file)) return { contents: readFileSync(file, "utf8") };
    }
  }
  const local = path.join(ROOT, importPath);
  if (existsSync(local)) return { contents: readFileSync(local, "utf8") };
  return { error: `import not found: ${importPath}` };
}

function sortKeys(value) {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.keys(value).sort().map((k) => [k, sortKeys(value[k])]));
  }
  return value;
}

const version = solc.version();
if (!version.startsWith(`${CONFIG.solc}+`)) fail(`solc-js is ${version}, expected ${CONFIG.solc}: run npm install`);

const files = sourceFiles();
const input = {
  language: "Solidity",
  sources: Object.fromEntries(files.map((f) => [f, { content: readFileSync(path.join(ROOT, f), "utf8") }])),
  settings: {
    evmVersion: CONFIG.evmVersion,
    optimizer: CONFIG.optimizer,
    viaIR: CONFIG.viaIR,
    metadata: { bytecodeHash: "none" },
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
  },
};
const output = JSON.parse(solc.compile(JSON.stringify(input), { import: resolveImport }));
const errors = (output.errors || []).filter((e) => e.severity === "error");
for (const w of (output.errors || []).filter((e) => e.severity !== "error")) {
  process.stderr.write(`build: warning: ${w.formattedMessage}`);
}
if (errors.length) fail(`solc ${CONFIG.solc} failed:\n${errors.map((e) => e.formattedMessage).join("\n")}`);

const artifacts = {};
for (const file of files) {
  for (const [name, c] of Object.entries(output.contracts[file] || {})) {
    if (artifacts[name]) fail(`two contracts are named ${name}; contract names must be unique`);
    artifacts[name] = sortKeys({
      contractName: name,
      sourceName: file,
      compiler: { solc: version, evmVersion: CONFIG.evmVersion, optimizer: CONFIG.optimizer, viaIR: CONFIG.viaIR },
      sourceSha256: createHash("sha256").update(input.sources[file].content).digest("hex"),
      abi: c.abi,
      bytecode: `0x${c.evm.bytecode.object}`,
      deployedBytecode: `0x${c.evm.deployedBytecode.object}`,
    });
  }
}

const rendered = Object.fromEntries(
  Object.entries(artifacts).map(([name, a]) => [`${name}.json`, `${JSON.stringify(a, null, 1)}\n`]),
);
if (process.argv.includes("--check")) {
  const existing = existsSync(ARTIFACTS) ? readdirSync(ARTIFACTS).filter((f) => f.endsWith(".json")).sort() : [];
  const stale = Object.keys(rendered).filter(
    (f) => !existsSync(path.join(ARTIFACTS, f)) || readFileSync(path.join(ARTIFACTS, f), "utf8") !== rendered[f],
  );
  const extra = existing.filter((f) => !(f in rendered));
  if (stale.length || extra.length) {
    process.stderr.write(`build: artifacts out of date: ${[...stale, ...extra].join(", ")}\n`);
    process.exit(1);
  }
} else {
  mkdirSync(ARTIFACTS, { recursive: true });
  for (const f of readdirSync(ARTIFACTS)) if (f.endsWith(".json") && !(f in rendered)) rmSync(path.join(ARTIFACTS, f));
  for (const [f, text] of Object.entries(rendered)) writeFileSync(path.join(ARTIFACTS, f), text);
}
process.stdout.write(`${JSON.stringify({ solc: version, contracts: Object.keys(artifacts).sort() })}\n`);
