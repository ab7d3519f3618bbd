// Proves statements of the stand-in chunk circuit (standin.zok) with zokrates-js, for tests and the demo.
// stdin: {"inputs": [[context, root, normSq, normBound], ...]} (decimal strings); stdout: {"proofs": [...]},
// one {"a","b","c"} (zokrates-js hex form) or {"error": "..."} per statement. Same fixed-entropy setup as
// make_verifier.mjs, checked against the committed verification.key.json.
import { initialize } from "zokrates-js";
import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ENTROPY = "swarm-standin-verifier-not-secure";
const FIELD = 21888242871839275222246405745257275088548364400416034343698204186575808495617n;

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const request = JSON.parse(Buffer.concat(chunks).toString("utf8"));

const zok = (await initialize()).withOptions({ backend: "ark", scheme: "g16", curve: "bn128" });
const artifacts = zok.compile(readFileSync(path.join(HERE, "standin.zok"), "utf8"));
const keypair = zok.setup(artifacts.program, ENTROPY);
const committedVk = JSON.parse(readFileSync(path.join(HERE, "verification.key.json"), "utf8"));
if (JSON.stringify(committedVk) !== JSON.stringify(JSON.parse(JSON.stringify(keypair.vk)))) {
  process.stderr.write("prove: setup does not reproduce verification.key.json; rerun make_verifier.mjs\n");
  process.exit(2);
}

const proofs = request.inputs.map(([context, root, normSq, normBound]) => {
  const opening = ((BigInt(root) + BigInt(context)) % FIELD).toString();
  try {
    const { witness } = zok.computeWitness(artifacts, [context, root, normSq, normBound, opening].map(String));
    return zok.generateProof(artifacts.program, witness, keypair.pk).proof;
  } catch (err) {
    return { error: String(err) };
  }
});
process.stdout.write(`${JSON.stringify({ proofs })}\n`);
