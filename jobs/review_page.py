"""The review page served at /review: one static HTML page that signs in with a key and calls the API.

Self-contained (inline CSS and script, no external assets). The key stays in sessionStorage and goes out as
`Authorization: Bearer KEY`; the pair drawings are fetched with it and shown as blob URLs, since an <img>
cannot send headers. Every piece of data reaches the page as text nodes, never as markup.
"""

REVIEW_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline';
  style-src 'unsafe-inline'; img-src blob:; connect-src 'self'; base-uri 'none'; form-action 'none'">
<title>copyscope review</title>
<style>
  :root { --fg: #1d2430; --muted: #5d6675; --line: #d8dde5; --bg: #f4f6f9; --card: #fff;
          --match: #b42318; --review: #b54708; --ok: #067647; --no: #b42318; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg);
         background: var(--bg); }
  header.top { display: flex; align-items: center; gap: 1rem; padding: .7rem 1.5rem; background: var(--card);
               border-bottom: 1px solid var(--line); position: sticky; top: 0; z-index: 1; }
  header.top h1 { font-size: 1.15rem; margin: 0; white-space: nowrap; }
  #status { margin: 0; color: var(--muted); flex: 1; }
  #status.bad { color: var(--no); }
  main { max-width: 1100px; margin: 0 auto; padding: 1.2rem 1.5rem 3rem; }
  button { font: inherit; padding: .35rem .9rem; border-radius: 6px; border: 1px solid var(--line);
           background: var(--card); color: var(--fg); cursor: pointer; }
  button:hover { border-color: var(--muted); }
  button:disabled { opacity: .5; cursor: default; }
  button.confirm { background: var(--ok); border-color: var(--ok); color: #fff; }
  button.reject { background: var(--no); border-color: var(--no); color: #fff; }
  input[type=text], input[type=password] { font: inherit; padding: .35rem .55rem; border: 1px solid var(--line);
                                           border-radius: 6px; }
  #signin { max-width: 26rem; margin: 4rem auto; padding: 1.5rem; background: var(--card);
            border: 1px solid var(--line); border-radius: 10px; }
  #signin h2 { margin-top: 0; font-size: 1.1rem; }
  #signin label { display: block; font-weight: 600; margin-bottom: .3rem; }
  #signin input { width: 100%; margin-bottom: .8rem; }
  .hint { color: var(--muted); font-size: .9rem; }
  .error { color: var(--no); margin: .4rem 0 0; }
  .error:empty { display: none; }
  .controls { display: flex; align-items: center; gap: 1rem; margin-bottom: 1rem; }
  .empty { color: var(--muted); text-align: center; padding: 3rem 0; }
  article { background: var(--card); border: 1px solid var(--line); border-radius: 10px; margin-bottom: 1.2rem;
            padding: 1rem 1.2rem; }
  article > header { display: flex; flex-wrap: wrap; align-items: baseline; gap: .3rem .8rem; }
  article h2 { font-size: 1.05rem; margin: 0; overflow-wrap: anywhere; }
  .meta { color: var(--muted); font-size: .88rem; margin: 0; flex-basis: 100%; }
  .badge { display: inline-block; font-size: .75rem; font-weight: 700; letter-spacing: .04em;
           text-transform: uppercase; padding: .05rem .5rem; border-radius: 99px; color: #fff; }
  .badge.match { background: var(--match); }
  .badge.review { background: var(--review); }
  section.result { border-top: 1px solid var(--line); margin-top: .9rem; padding-top: .9rem; }
  section.result h3 { font-size: 1rem; margin: 0 0 .3rem; overflow-wrap: anywhere; }
  dl { display: flex; flex-wrap: wrap; gap: .2rem 1.4rem; margin: 0 0 .4rem; }
  dl div { display: flex; gap: .35rem; }
  dt { color: var(--muted); }
  dd { margin: 0; font-variant-numeric: tabular-nums; }
  .evidence { margin: 0 0 .6rem; color: var(--muted); font-size: .9rem; }
  figure { margin: 0 0 .7rem; min-height: 4rem; background: var(--bg); border-radius: 6px; overflow: hidden; }
  figure img { display: block; max-width: 100%; max-height: 480px; margin: 0 auto; }
  figure p { margin: 0; padding: 1.4rem; color: var(--muted); text-align: center; }
  figcaption { font-size: .85rem; color: var(--muted); padding: .3rem .6rem; text-align: center; }
  .actions { display: flex; flex-wrap: wrap; align-items: center; gap: .6rem; }
  .actions label { display: flex; align-items: center; gap: .4rem; flex: 1; min-width: 14rem; }
  .actions input { flex: 1; }
  .verdict { margin: .6rem 0 0; font-weight: 600; }
  .verdict:empty { display: none; }
  .verdict.confirmed { color: var(--ok); }
  .verdict.rejected { color: var(--no); }
</style>
</head>
<body>
<header class="top">
  <h1>copyscope review</h1>
  <p id="status" role="status" aria-live="polite"></p>
  <button type="button" id="signout" hidden>Sign out</button>
</header>
<main>
  <form id="signin" hidden>
    <h2>Sign in</h2>
    <label for="key">API key</label>
    <input id="key" type="password" autocomplete="off" required>
    <button type="submit">Sign in</button>
    <p class="hint">A curator key: <code>copyscope keys create --role curator --name NAME</code>.
      It is kept in this tab only.</p>
    <p id="signin-error" class="error" role="alert"></p>
  </form>
  <section id="queue-view" aria-label="Decisions" hidden>
    <div class="controls">
      <label><input type="checkbox" id="show-all"> Show reviewed decisions too</label>
      <button type="button" id="refresh">Refresh</button>
    </div>
    <div id="queue"></div>
  </section>
</main>
<script>
"use strict";
const KEY = "copyscope.key", LIMIT = 50;
const $ = (id) => document.getElementById(id);
const blobs = [], pending = new WeakMap();
let observer = null, generation = 0;

class SignedOut extends Error {}

// An element with attributes (on* as listeners) and children; strings become text nodes, never markup.
function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  node.append(...children.filter((child) => child != null));
  return node;
}

function setStatus(text, bad = false) {
  $("status").textContent = text;
  $("status").classList.toggle("bad", bad);
}

// fetch with the key; 401 signs out, other failures throw Error(the API's message).
async function api(path, options = {}) {
  const key = sessionStorage.getItem(KEY);
  if (!key) throw new SignedOut();
  const response = await fetch(path, {...options, headers: {...options.headers, Authorization: "Bearer " + key}});
  if (response.status === 401) {
    signOut("The key was refused: sign in again with a valid key.");
    throw new SignedOut();
  }
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      if (body.error) message = `${body.error.message} (${response.status})`;
    } catch {}
    throw new Error(message);
  }
  return response;
}

function signOut(message = "") {
  sessionStorage.removeItem(KEY);
  clear();
  $("queue-view").hidden = $("signout").hidden = true;
  $("signin").hidden = false;
  $("signin-error").textContent = message;
  setStatus("");
  $("key").focus();
}

function clear() {
  if (observer) observer.disconnect();
  blobs.splice(0).forEach((url) => URL.revokeObjectURL(url));
  $("queue").replaceChildren();
}

async function load() {
  const all = $("show-all").checked, mine = ++generation;
  setStatus("Loading…");
  let records;
  try {
    records = (await (await api(`v1/matches?${all ? "" : "unreviewed=true&"}limit=${LIMIT}`)).json()).matches;
  } catch (e) {
    if (!(e instanceof SignedOut)) setStatus("Could not load the decisions: " + e.message, true);
    return;
  }
  if (mine !== generation) return;  // a later load has started
  $("signin").hidden = true;
  $("signin-error").textContent = "";
  $("queue-view").hidden = $("signout").hidden = false;
  clear();
  observer = new IntersectionObserver((entries) => {
    for (const entry of entries.filter((entry) => entry.isIntersecting)) {
      observer.unobserve(entry.target);
      pending.get(entry.target)();
    }
  }, {rootMargin: "600px"});
  $("queue").append(...records.map(card));
  if (!records.length) {
    $("queue").append(el("p", {class: "empty"}, all ? "No recent decisions." : "Nothing waiting for review."));
  }
  const n = records.length, s = n === 1 ? "" : "s";
  setStatus(all ? `${n} recent decision${s}.` : `${n} decision${s} waiting for review.`);
}

function when(iso) {
  const date = new Date(iso);
  return isNaN(date) ? iso : date.toLocaleString(undefined, {dateStyle: "medium", timeStyle: "medium"});
}

const badge = (decision) => el("span", {class: "badge " + decision}, decision);
const number = (x) => (x == null ? "–" : x.toFixed(4));
const percent = (x) => Math.round(100 * x) + "%";

function card(record) {
  const heading = el("h2", {id: "match-" + record.match_id}, record.external_id || record.match_id);
  return el("article", {"aria-labelledby": heading.id},
    el("header", {}, heading, badge(record.decision),
      el("p", {class: "meta"}, el("time", {datetime: record.created}, when(record.created)),
        " · matched by ", el("strong", {}, record.key), " · banks ", record.banks.join(", "),
        " · match ", el("code", {}, record.match_id))),
    ...record.matches.map((hit, rank) => result(record, hit, rank)));
}

function evidence(e) {
  const parts = [];
  if (e.inliers != null) parts.push(`${e.inliers} inliers` + (e.matches != null ? ` of ${e.matches} matches` : ""));
  if (e.query_coverage != null) parts.push(`covering ${percent(e.query_coverage)} of the upload`);
  if (e.reference_coverage != null) parts.push(`${percent(e.reference_coverage)} of the bank image`);
  if (e.frame_inliers) parts.push(`${e.frame_inliers} set aside on a shared frame`);
  if (e.mirrored) parts.push("mirrored");
  return parts.length ? parts.join(" · ") : "no local evidence";
}

// One result of a record: its numbers, its drawing (fetched once visible) and the review buttons.
function result(record, hit, rank) {
  const name = `${hit.bank} / ${hit.content_id}`;
  const figure = el("figure", {}, el("p", {}, "Drawing the pair…"));
  const verdict = el("p", {class: "verdict"});
  const error = el("p", {class: "error", role: "alert"});
  const note = el("input", {type: "text", maxlength: "2000", placeholder: "optional"});
  const confirm = el("button", {type: "button", class: "confirm", onclick: () => send("confirmed")}, "Confirm");
  const reject = el("button", {type: "button", class: "reject", onclick: () => send("rejected")}, "Reject");

  function show(reviews) {
    const mine = reviews.filter((r) => r.bank === hit.bank && r.content_id === hit.content_id);
    const last = mine[mine.length - 1];
    verdict.className = "verdict " + (last ? last.verdict : "");
    verdict.textContent = !last ? "" : `${last.verdict[0].toUpperCase()}${last.verdict.slice(1)} by ${last.key}, `
      + when(last.created) + (last.note ? ` — “${last.note}”` : "")
      + (mine.length > 1 ? ` (${mine.length} reviews)` : "");
  }

  async function send(choice) {
    confirm.disabled = reject.disabled = true;
    error.textContent = "";
    try {
      const response = await api(`v1/matches/${encodeURIComponent(record.match_id)}/reviews`, {
        method: "POST", headers: {"Content-Type": "application/json"},
        body: JSON.stringify({content_id: hit.content_id, bank: hit.bank, verdict: choice, note: note.value}),
      });
      show((await response.json()).reviews);
      note.value = "";
      setStatus(`Recorded: ${name} ${choice}.`);
    } catch (e) {
      if (!(e instanceof SignedOut)) error.textContent = "Could not record the review: " + e.message;
    } finally {
      confirm.disabled = reject.disabled = false;
    }
  }

  pending.set(figure, async () => {
    try {
      const blob = await (await api(`v1/matches/${encodeURIComponent(record.match_id)}/pairs/${rank}.png`)).blob();
      if (!figure.isConnected) return;  // the queue was reloaded meanwhile
      const url = URL.createObjectURL(blob);
      blobs.push(url);
      figure.replaceChildren(
        el("img", {src: url, alt: `The upload and ${name}, drawn side by side with their verified inliers`}),
        el("figcaption", {}, `left: the upload · right: ${name}`));
    } catch (e) {
      if (!(e instanceof SignedOut)) figure.replaceChildren(el("p", {class: "error"}, "No drawing: " + e.message));
    }
  });
  observer.observe(figure);
  show(record.reviews);

  return el("section", {class: "result", "aria-label": name},
    el("h3", {}, name, " ", badge(hit.decision)),
    el("dl", {},
      el("div", {}, el("dt", {}, "score"), el("dd", {}, number(hit.score))),
      el("div", {}, el("dt", {}, "reverse score"), el("dd", {}, number(hit.reverse_score)))),
    el("p", {class: "evidence"}, evidence(hit.evidence || {})),
    figure,
    el("div", {class: "actions"}, el("label", {}, "Note", note), confirm, reject),
    verdict, error);
}

$("signin").addEventListener("submit", (event) => {
  event.preventDefault();
  const key = $("key").value.trim();
  $("key").value = "";
  if (!key) return signOut("Give a key.");
  sessionStorage.setItem(KEY, key);
  load();
});
$("signout").addEventListener("click", () => signOut());
$("refresh").addEventListener("click", load);
$("show-all").addEventListener("change", load);
if (sessionStorage.getItem(KEY)) load(); else signOut();
</script>
</body>
</html>
"""
