// The dashboard's page: one EventSource on /api/stream; every `state` event re-renders the page.
// Rewards are shown from the wei strings the chain returned (BigInt), never from rounded floats.
"use strict";
const $ = (id) => document.getElementById(id);
const TOKEN = 10n ** 18n;
let lastUpdate = 0;

function tokens(wei) {
  const w = BigInt(wei || "0");
  const whole = w / TOKEN, frac = (w % TOKEN) * 10000n / TOKEN;
  return `${whole}.${frac.toString().padStart(4, "0")} SWT`;
}
function short(id) { return id && id.length > 14 ? `${id.slice(0, 6)}…${id.slice(-6)}` : (id || ""); }
function num(x, d = 1) { return x === null || x === undefined ? "–" : Number(x).toFixed(d); }
function rows(tbody, items, cells, attrs) {
  tbody.replaceChildren(...items.map((item) => {
    const tr = document.createElement("tr");
    if (attrs) attrs(tr, item);
    for (const c of cells(item)) {
      const td = document.createElement("td");
      td.textContent = c;
      tr.appendChild(td);
    }
    return tr;
  }));
}

function setHealth(kind, text, detail) {
  const h = $("health");
  h.className = `badge ${kind}`;
  h.dataset.state = kind;
  h.textContent = text;
  const err = $("error");
  err.hidden = kind !== "error";
  err.textContent = kind === "error" ? detail || text : "";
}

function render(s) {
  lastUpdate = Date.now();
  const hl = s.health || {};
  if (hl.ok) setHealth("ok", "live");
  else if (hl.dht === "starting") setHealth("starting", "looking for the swarm…");
  else setHealth("error", hl.dht === "lost" ? "lost the swarm" : "degraded", hl.message);
  $("name").textContent = (s.experiment && s.experiment.name) || "?";
  $("round").textContent = s.round ?? "–";
  $("n-peers").textContent = s.n_peers ?? 0;
  $("bottleneck").textContent = s.bottleneck_stage ?? "–";
  $("bytes").textContent = (s.bytes_averaged || 0).toLocaleString();
  const stages = s.stages || [];
  rows($("stages").tBodies[0], stages,
    (st) => [st.stage, st.peers.length, num(st.throughput), st.load, st.bottleneck ? "bottleneck" : ""],
    (tr, st) => { tr.dataset.stage = st.stage; if (st.bottleneck) tr.className = "bottleneck"; });
  const peers = stages.flatMap((st) => st.peers.map((p) => ({ ...p, stage: st.stage })));
  rows($("peers").tBodies[0], peers,
    (p) => [short(p.peer_id), p.stage, num(p.throughput), p.load, p.params_version, short(p.wallet)],
    (tr, p) => { tr.dataset.peer = p.peer_id; tr.className = "mono"; });
  const rounds = (s.rounds || []).slice(-12).reverse();
  rows($("rounds").tBodies[0], rounds,
    (r) => [r.round_global, r.stage, r.group_size, r.peers, r.verified ? r.parts_checked : "unverified",
      Object.keys(r.dropped || {}).map(short).join(" ") || "none", r.bytes.toLocaleString(), num(r.seconds, 2)],
    (tr, r) => { tr.dataset.round = r.round_global; });
  const c = s.chain;
  const chain = $("chain");
  if (c) {
    $("proofs").textContent = c.contributions;
    $("paid").textContent = tokens(c.paid_wei);
    $("pool").textContent = tokens(c.pool_wei);
    const kv = [["block", c.block], ["proofs verified (contributions)", c.contributions],
      ["rounds with proofs", c.proven_rounds], ["rounds finalized", c.finalized_rounds],
      ["audits opened / answered", `${c.audits_opened} / ${c.audits_answered}`], ["slashes", c.slashes],
      ["reward per round", `${c.reward_per_round} SWT`]];
    chain.replaceChildren(...kv.flatMap(([k, v]) => {
      const dt = document.createElement("dt"); dt.textContent = k;
      const dd = document.createElement("dd"); dd.textContent = v;
      return [dt, dd];
    }));
    rows($("rewards").tBodies[0], c.rewards,
      (r) => [short(r.peer), r.contributions, r.claims, tokens(r.claimed_wei), tokens(r.slashed_wei)],
      (tr, r) => { tr.dataset.peer = r.peer; tr.dataset.claimedWei = r.claimed_wei; tr.className = "mono"; });
  } else {
    chain.replaceChildren(Object.assign(document.createElement("dd"), { textContent: "no chain (economy off)" }));
  }
  rows($("checkpoints").tBodies[0], (s.checkpoints || []).slice(-8).reverse(),
    (k) => [k.round, k.complete ? "yes" : "partial", num(k.test_loss, 4),
      Object.entries(k.saved_by || {}).map(([st, p]) => `${st}:${short(p)}`).join(" ")]);
  drawLoss(s.loss || [], s.test_loss || [], s.swarm_loss || []);
  const tr = s.trainers || [];
  $("swarm-loss").textContent = tr.length ? `${num(tr.reduce((a, t) => a + t.loss, 0) / tr.length, 4)} (${tr.length} trainers)` : "–";
  const m = s.monitor || {};
  $("monitor-info").textContent = `${num(m.dht_requests_per_s, 2)} DHT requests/s, ${m.chain_requests ?? 0} chain reads, holds no key`;
  $("updated").textContent = new Date((s.updated_at || 0) * 1000).toLocaleTimeString();
}

function drawLoss(train, test, swarm) {
  const svg = $("loss-chart"), W = 520, H = 220, P = 28;
  const ys = train.map((p) => p[2]).concat(test.map((p) => p[1]), swarm.map((p) => p[2]));
  if (!ys.length) { svg.innerHTML = `<text x="${W / 2 - 40}" y="${H / 2}">no loss yet</text>`; return; }
  const lo = Math.min(...ys), hi = Math.max(...ys), span = hi - lo || 1;
  const y = (v) => H - P - (v - lo) / span * (H - 2 * P);
  const smax = Math.max(1, ...train.map((p) => p[1]), ...swarm.map((p) => p[1]));  // x: samples trained
  const line = (pts, cls) => pts.length ? `<polyline class="${cls}" points="${pts.map((p) =>
    `${(P + p[1] / smax * (W - 2 * P)).toFixed(1)},${y(p[2]).toFixed(1)}`).join(" ")}"></polyline>` : "";
  const rmax = Math.max(1, ...test.map((p) => p[0]));
  const dots = test.map((p) => `<circle class="test" cx="${(P + p[0] / rmax * (W - 2 * P)).toFixed(1)}" cy="${y(p[1]).toFixed(1)}" r="3"></circle>`).join("");
  svg.innerHTML = line(train, "train") + line(swarm, "swarm") + dots +
    `<text x="2" y="${P}">${hi.toFixed(3)}</text><text x="2" y="${H - P}">${lo.toFixed(3)}</text>` +
    `<text x="${W - 215}" y="${H - 6}">${train.length} local steps · ${swarm.length} swarm · ${test.length} checkpoints</text>`;
}

function connect() {
  const es = new EventSource("/api/stream");
  es.addEventListener("state", (ev) => render(JSON.parse(ev.data)));
  es.onerror = () => setHealth("error", "monitor unreachable", "the monitor does not answer; retrying…");
}
setInterval(() => {
  if (lastUpdate && Date.now() - lastUpdate > 30000) setHealth("error", "no updates", "no update from the monitor for 30 s");
}, 5000);
connect();
