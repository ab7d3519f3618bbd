// Long-lived ZoKrates worker: one JSON request per line on stdin, one JSON answer per line on stdout.
// Request {id, op, ...}; answer {id, ok: true, result} or {id, ok: false, error}. Ops: ping, compile, setup,
// load, prove, witness, verify, export_verifier, compile_solidity, poseidon, constants. Exits when stdin closes
// or its parent dies.
import { initialize } from "zokrates-js";
import { mkdirSync, readFileSync, writeFileSync, renameSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");

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

function computeWitness(c, args, snarkjs) {
  try {
    return zokrates.computeWitness({ program: c.program, abi: c.abi }, args, { snarkjs, logCallback: () => {} });
  } catch (e) {
    const why = String(e?.message ?? e).split("\n")[0].replace("Sum check failed", "a range check failed");
    throw new Error(`the statement does not hold for these inputs: ${why}`);
  }
}

// One Solidity source compiled by the project's pinned solc-js with contracts/compiler.json's settings.
function compileSolidity(source, name) {
  const config = JSON.parse(readFileSync(join(ROOT, "contracts", "compiler.json"), "utf8"));
  const solc = createRequire(import.meta.url)(join(ROOT, "node_modules", "solc"));
  const input = {
    language: "Solidity",
    sources: { [`${name}.sol`]: { content: source } },
    settings: { optimizer: config.optimizer, evmVersion: config.evmVersion, viaIR: config.viaIR,
                outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } } },
  };
  const out = JSON.parse(solc.compile(JSON.stringify(input)));
  const errors = (out.errors ?? []).filter((e) => e.severity === "error");
  if (errors.length) throw new Error(`solc: ${errors.map((e) => e.formattedMessage).join("; ")}`);
  const contract = out.contracts[`${name}.sol`][name];
  return { abi: contract.abi, bytecode: "0x" + contract.evm.bytecode.object,
           deployed_bytecode: "0x" + contract.evm.deployedBytecode.object };
}

const ops = {
  ping: () => ({ pid: process.pid }),
  compile: (req) => {
    const dir = requireDir(req);
    mkdirSync(dir, { recursive: true });
    // `r1cs`: also write the constraint system in circom's format (circuit.r1cs) for other Groth16 provers
    const art = zokrates.compile(req.source, req.r1cs ? { snarkjs: true } : {});
    writeAtomic(join(dir, "program.bin"), art.program);
    writeAtomic(join(dir, "abi.json"), JSON.stringify(art.abi));
    if (req.r1cs) writeAtomic(join(dir, "circuit.r1cs"), art.snarkjs.program);
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
    return provider(req).generateProof(c.program, computeWitness(c, req.args, false).witness, c.pk);
  },
  // The witness in circom's .wtns format, written to `out`, for a prover of another backend (zk/backends.py).
  witness: (req) => {
    if (typeof req.out !== "string" || !req.out) throw new Error("request needs `out`, the .wtns path");
    const c = loadArtifacts(requireDir(req), false);
    writeFileSync(req.out, computeWitness(c, req.args, true).snarkjs.witness);
    return {};
  },
  verify: (req) => {
    const vk = req.vk ?? loadArtifacts(requireDir(req), true).vk;
    return { valid: provider(req).verify(vk, { scheme: "g16", curve: "bn128", proof: req.proof, inputs: req.inputs }) };
  },
  export_verifier: (req) => {
    const c = loadArtifacts(requireDir(req), true);
    return { source: zokrates.exportSolidityVerifier(c.vk) };
  },
  compile_solidity: (req) => compileSolidity(req.source, req.name),
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
