// The chat page. Plain JS, no dependencies, works offline.
// Everything the model or the server says is put in the page with textContent, never innerHTML,
// so an answer containing "<script>" is shown as those characters.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { apps: [] };

function key() { return $("key").value.trim(); }
function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (key()) h["Authorization"] = "Bearer " + key();
  return h;
}
function status(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "err" : "";
}
async function errorText(res) {
  try { const j = await res.json(); return (j.error && j.error.message) || res.statusText; }
  catch (e) { return res.status + " " + res.statusText; }
}

async function loadApps() {
  const res = await fetch("/v1/apps", { headers: headers() });
  if (res.status === 401) { $("keybox").open = true; status("enter the API key", true); return; }
  if (!res.ok) { status(await errorText(res), true); return; }
  state.apps = (await res.json()).apps;
  const sel = $("app");
  const previous = sel.value;
  sel.replaceChildren();
  for (const a of state.apps) {
    const o = document.createElement("option");
    o.value = a.name; o.textContent = a.title && a.title !== a.name ? `${a.title} (${a.name})` : a.name;
    sel.appendChild(o);
  }
  if (previous && state.apps.some((a) => a.name === previous)) sel.value = previous;
  showAppInfo();
  status("ready");
}

function showAppInfo() {
  const a = state.apps.find((x) => x.name === $("app").value);
  if (!a) { $("appinfo").textContent = ""; return; }
  const kb = a.knowledge_base || {};
  const size = kb.chunks !== undefined ? `${kb.chunks} chunks` : (kb.documents !== undefined ? `${kb.documents} documents` : "no knowledge base");
  $("appinfo").textContent = `${a.description || a.name} · strategies: ${a.strategies.join(", ")} · ${size}`;
  // the server's strategies (the registry's): the ones this app can run, then its excluded ones, disabled
  const sel = $("strategy");
  const chosen = sel.value;
  const excluded = a.excluded || {};
  const names = [...a.strategies, ...Object.keys(excluded).filter((s) => !a.strategies.includes(s))];
  sel.replaceChildren(new Option("auto (router)", "auto"));
  for (const s of names) {
    const o = new Option(s, s);
    o.disabled = !a.strategies.includes(s);
    if (o.disabled) o.title = excluded[s];
    sel.appendChild(o);
  }
  sel.value = a.strategies.includes(chosen) ? chosen : "auto";
}

// Reads a text/event-stream body and calls onEvent(name, data) per event.
async function readSSE(res, onEvent) {
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, cut); buf = buf.slice(cut + 2);
      let name = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) name = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      if (data) onEvent(name, JSON.parse(data));
    }
  }
}

const history = [];

async function ask(question) {
  const li = $("turn").content.firstElementChild.cloneNode(true);
  li.querySelector(".q").textContent = question;
  const answer = li.querySelector(".a");
  answer.classList.add("pending");
  $("log").appendChild(li);
  $("send").disabled = true;
  const body = { app: $("app").value, question, strategy: $("strategy").value, stream: true,
                 history: history.slice(-8) };
  let text = "";
  try {
    const res = await fetch("/v1/ask", { method: "POST", headers: headers({ "Content-Type": "application/json" }),
                                         body: JSON.stringify(body) });
    if (!res.ok) throw new Error(await errorText(res));
    await readSSE(res, (name, data) => {
      if (name === "token") { text += data.text; answer.textContent = text; }
      else if (name === "final") { showFinal(li, data); text = data.answer; }
      else if (name === "error") { throw new Error(data.error.message); }
    });
    history.push({ role: "user", content: question }, { role: "assistant", content: text });
  } catch (e) {
    const err = document.createElement("div");
    err.className = "error"; err.textContent = "error: " + e.message;
    li.appendChild(err);
  } finally {
    answer.classList.remove("pending");
    $("send").disabled = false;
  }
}

function showFinal(li, data) {
  li.querySelector(".a").textContent = data.answer;
  const badge = li.querySelector(".badge");
  badge.textContent = data.strategy;
  badge.className = "badge " + data.strategy;
  const d = data.decision || {};
  // The router's reason can be long (signals, exclusions): show its first clause, all of it on hover.
  const reason = li.querySelector(".reason");
  const head = (d.reason || "").split(/\. (?=[a-z]+:)|; /)[0];
  reason.textContent = d.reason ? `${head} · confidence ${(+d.confidence).toFixed(2)}` : "";
  reason.title = d.reason || "";
  const cites = li.querySelector(".cites");
  const list = cites.querySelector("ol");
  list.replaceChildren();
  for (const c of data.citations || []) {
    const item = document.createElement("li");
    item.value = c.n;
    const src = document.createElement("span");
    src.className = "src";
    src.textContent = c.source + (c.page != null ? `, page ${c.page}` : "");
    const snip = document.createElement("span");
    snip.className = "snip";
    snip.textContent = c.snippet;
    item.append(src, snip);
    list.appendChild(item);
  }
  if ((data.citations || []).length) {
    cites.dataset.n = data.citations.length;
    cites.querySelector("summary").textContent = `${data.citations.length} source${data.citations.length > 1 ? "s" : ""}`;
  }
  li.querySelector(".notices").textContent = (data.notices || []).join(" · ");
}

async function upload(files) {
  const form = new FormData();
  form.append("app", $("app").value);
  for (const f of files) form.append("files", f, f.name);
  const res = await fetch("/v1/documents", { method: "POST", headers: headers(), body: form });
  const item = document.createElement("li");
  $("jobs").appendChild(item);
  if (!res.ok) { item.className = "failed"; item.textContent = "upload failed: " + await errorText(res); return; }
  let job = await res.json();
  const names = job.files.join(", ");
  while (job.status === "queued" || job.status === "running") {
    item.textContent = `${names}: ${job.stage} (${Math.round(job.progress * 100)}%)`;
    await new Promise((r) => setTimeout(r, 400));
    const r = await fetch("/v1/jobs/" + encodeURIComponent(job.id), { headers: headers() });
    if (!r.ok) { item.className = "failed"; item.textContent = await errorText(r); return; }
    job = await r.json();
  }
  item.className = job.status;
  item.textContent = job.status === "done"
    ? `${names}: added (${job.report && job.report.documents} document(s))`
    : `${names}: failed: ${job.error}`;
  loadApps();
}

$("ask").addEventListener("submit", (e) => {
  e.preventDefault();
  const q = $("question").value.trim();
  if (!q) return;
  $("question").value = "";
  ask(q);
});
$("question").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("ask").requestSubmit(); }
});
$("upload").addEventListener("submit", (e) => {
  e.preventDefault();
  if ($("files").files.length) upload($("files").files);
});
$("app").addEventListener("change", showAppInfo);
$("key").addEventListener("change", () => { localStorage.setItem("hybrid-key", key()); loadApps(); });
$("key").value = localStorage.getItem("hybrid-key") || "";
loadApps();
