// Long-lived ZoKrates worker: one JSON request per line on stdin, one JSON answer per line on stdout.
// Request {id, op, ...}; answer {id, ok: true, result} or {id, ok: false, error}. Ops: ping, compile, setup,
// load, prove, verify, export_verifier, poseidon, constants. Exits when stdin closes or its parent dies.
import { initialize } from "zokrates-js";
import { mkdirSync, readFileSync, writeFileSync, renameSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";

const out = process.stdout;
console.log = console.error; // zokrates-js logs through console.log: keep stdout for answers only
const parentPid = process.ppid;

const zokrates = await initialize();
const circuits = new Map(); // dir -> {program, abi, pk, vk}
const poseidonCircuits = new Map(); // N -> compiled artifacts

function circuit(dir) {
  let c = circuits.get(dir);
  if (!c) {
    c = {};
    circuits.set(dir, c);
  }
  return c;
}

function writeAtomic(path, data) {
  writeFileSync(path + ".tmp", data);
  renameSync(path + ".tmp", path);
}

// The Groth16 prover: zokrates-js's default (arkworks) unless a request names `backend` ("ark" | "bellman").
function provider(req) {
  return req.backend ? zokrates.withOptions({ backend: req.backend, curve: "bn128", scheme: "g16" }) : zokrates;
}

function requireDir(req) {
  if (typeof req.dir !== "string" || !req.dir) throw new Error("request needs `dir`, the circuit's key folder");
  return req.dir;
}

function loadArtifacts(dir, wantKeys) {
  const c = circuit(dir);
  if (!c.program) {
    c.program = new Uint8Array(readFileSync(join(dir, "program.bin")));
    c.abi = JSON.parse(readFileSync(join(dir, "abi.json"), "utf8"));
  }
  if (wantKeys && !c.pk) {
    c.pk = new Uint8Array(readFileSync(join(dir, "proving.key")));
    c.vk = JSON.parse(readFileSync(join(dir, "verification.key.json"), "utf8"));
  }
  return c;
}

function poseidonHash(inputs) {
  const n = inputs.length;
  if (n < 1 || n > 6) throw new Error(`Poseidon takes 1 to 6 inputs, got ${n}`);
  let art = poseidonCircuits.get(n);
  if (!art) {
    art = zokrates.compile(`import "hashes/poseidon/poseidon" as poseidon;
def main(field[${n}] x) -> field { return poseidon(x); }`);
    poseidonCircuits.set(n, art);
  }
  return JSON.parse(zokrates.computeWitness(art, [inputs], { logCallback: () => {} }).output);
}

const ops = {
  ping: () => ({ pid: process.pid }),
  compile: (req) => {
    const dir = requireDir(req);
    mkdirSync(dir, { recursive: true });
    const art = zokrates.compile(req.source);
    writeAtomic(join(dir, "program.bin"), art.program);
    writeAtomic(join(dir, "abi.json"), JSON.stringify(art.abi));
    const c = circuit(dir);
    Object.assign(c, { program: art.program, abi: art.abi, pk: undefined, vk: undefined });
    return { constraints: art.constraintCount };
  },
  setup: (req) => {
    const dir = requireDir(req);
    const c = loadArtifacts(dir, false);
    const keys = req.entropy ? provider(req).setup(c.program, req.entropy) : provider(req).setup(c.program);
    writeAtomic(join(dir, "proving.key"), keys.pk);
    writeAtomic(join(dir, "verification.key.json"), JSON.stringify(keys.vk));
    Object.assign(c, { pk: keys.pk, vk: keys.vk });
    return { vk: keys.vk, proving_key_bytes: keys.pk.length };
  },
  load: (req) => {
    const c = loadArtifacts(requireDir(req), true);
    return { vk: c.vk };
  },
  prove: (req) => {
    const c = loadArtifacts(requireDir(req), true);
    let witness;
    try {
      witness = zokrates.computeWitness({ program: c.program, abi: c.abi }, req.args, { logCallback: () => {} });
    } catch (e) {
      const why = String(e?.message ?? e).split("\n")[0].replace("Sum check failed", "a range check failed");
      throw new Error(`the statement does not hold for these inputs: ${why}`);
    }
    return provider(req).generateProof(c.program, witness.witness, c.pk);
  },
  verify: (req) => {
    const vk = req.vk ?? loadArtifacts(requireDir(req), true).vk;
    return { valid: provider(req).verify(vk, { scheme: "g16", curve: "bn128", proof: req.proof, inputs: req.inputs }) };
  },
  export_verifier: (req) => {
    const c = loadArtifacts(requireDir(req), true);
    return { source: zokrates.exportSolidityVerifier(c.vk) };
  },
  poseidon: (req) => ({ hash: poseidonHash(req.inputs) }),
  constants: () => {
    const art = zokrates.compile(`from "hashes/poseidon/constants" import POSEIDON_C, POSEIDON_M;
def main() -> (field[6][497], field[6][7][7]) { return (POSEIDON_C, POSEIDON_M); }`);
    const [c, m] = JSON.parse(zokrates.computeWitness(art, [], { logCallback: () => {} }).output);
    return { C: c, M: m };
  },
};

function answer(msg) {
  out.write(JSON.stringify(msg) + "\n");
}

function handle(line) {
  let req;
  try {
    req = JSON.parse(line);
  } catch (e) {
    answer({ id: null, ok: false, error: `request is not JSON: ${e.message}` });
    return;
  }
  const id = req?.id ?? null;
  const op = ops[req?.op];
  if (!op) {
    answer({ id, ok: false, error: `unknown op ${JSON.stringify(req?.op)}; known: ${Object.keys(ops).join(", ")}` });
    return;
  }
  try {
    answer({ id, ok: true, result: op(req) });
  } catch (e) {
    answer({ id, ok: false, error: String(e?.message ?? e) });
  }
}

const rl = createInterface({ input: process.stdin, crlfDelay: Infinity });
rl.on("line", (line) => {
  if (line.trim()) handle(line);
});
rl.on("close", () => process.exit(0));
// Dies with its parent even if stdin stays open (e.g. inherited by a grandchild).
setInterval(() => {
  if (process.ppid !== parentPid) process.exit(0);
}, 500).unref();
answer({ id: "ready", ok: true, result: { pid: process.pid } });
