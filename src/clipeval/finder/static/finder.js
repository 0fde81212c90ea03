// clipeval finder: the page's script. Plain DOM, no framework, nothing loaded from the network.
// Every text that comes from the index (captions, ids, metadata, checkpoint names) goes into the page with
// textContent, never innerHTML. The body's data-state (loading, ready, busy, done, error) and data-searches
// (answers shown so far) let a browser test wait for a result.
// The page's URL holds its query, so a search can be linked, bookmarked or reloaded: ?q=TEXT (or ?similar=ID),
// k=N and checkpoint=SPEC, repeated for side by side; it is read on load and rewritten (replaceState) at each
// search. An image query cannot be put in a URL: its link keeps the checkpoints and k only.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const body = document.body;
  let lastSearch = null;  // re-run when the checkpoint, the side-by-side mode or k changes
  let selectedId = null;

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function setStatus(state, message) {
    body.dataset.state = state;
    $("status").textContent = message || "";
  }

  async function getJson(response) {
    let payload = null;
    try {
      payload = await response.json();
    } catch (_) {
      payload = null;
    }
    if (!response.ok) {
      const message = payload && payload.error ? payload.error : `HTTP ${response.status}`;
      throw new Error(message);
    }
    return payload;
  }

  function checkpoints() {
    const specs = [$("checkpoint").value];
    if ($("side-by-side").checked && $("checkpoint2").value && $("checkpoint2").value !== specs[0]) {
      specs.push($("checkpoint2").value);
    }
    return specs;
  }

  function fillSelect(select, specs, chosen) {
    select.replaceChildren();
    for (const spec of specs) {
      const option = el("option", null, spec);
      option.value = spec;
      select.append(option);
    }
    select.value = chosen;
  }

  function writeUrl(search) {
    const params = new URLSearchParams(search.link);
    params.set("k", $("k").value);
    for (const spec of checkpoints()) params.append("checkpoint", spec);
    history.replaceState(null, "", `${location.pathname}?${params}`);
  }

  // the query and settings a link gives (?q=...&k=...&checkpoint=...); what it gets wrong, for the status line
  function readUrl(info) {
    const params = new URLSearchParams(location.search);
    const problems = [];
    const specs = params.getAll("checkpoint").filter((spec) => spec);
    const unknown = specs.filter((spec) => !info.checkpoints.includes(spec));
    if (unknown.length) problems.push(`the link names a checkpoint this index does not have: ${unknown.join(", ")}`);
    const known = specs.filter((spec) => info.checkpoints.includes(spec));
    if (known.length) $("checkpoint").value = known[0];
    if (known.length > 1 && known[1] !== known[0]) {
      $("side-by-side").checked = true;
      $("checkpoint2").disabled = false;
      $("checkpoint2").value = known[1];
    }
    if (params.has("k")) {
      const k = Number(params.get("k"));
      if (Number.isInteger(k) && k >= 1 && k <= info.max_k) {
        if (![...$("k").options].some((option) => option.value === String(k))) $("k").add(new Option(String(k)));
        $("k").value = String(k);
      } else {
        problems.push(`k in the link must be a whole number from 1 to ${info.max_k}`);
      }
    }
    const query = (params.get("q") || "").trim();
    const similar = params.get("similar");
    if (query) $("query").value = query;
    return { search: query ? textSearch(query) : similar ? similarSearch(similar) : null, problems };
  }

  async function init() {
    try {
      const info = await getJson(await fetch("/api/checkpoints"));
      fillSelect($("checkpoint"), info.checkpoints, info.checkpoints[0]);
      fillSelect($("checkpoint2"), info.checkpoints, info.checkpoints[1] || info.checkpoints[0]);
      $("side-by-side").disabled = info.checkpoints.length < 2;
      $("index-info").textContent = `${info.images} images from ${info.rows} rows, ` +
        `${info.checkpoints.length} checkpoint(s)` +
        (info.log_queries ? " · queries are logged" : "");
      const linked = readUrl(info);
      if (linked.problems.length) {
        setStatus("error", linked.problems.join("; "));
      } else if (linked.search) {
        await run(linked.search);
      } else {
        setStatus("ready", "Type a query, choose an image, or click a result.");
      }
    } catch (error) {
      setStatus("error", `Could not open the index: ${error.message}`);
    }
  }

  async function run(search) {
    lastSearch = search;
    writeUrl(search);
    setStatus("busy", "searching…");
    try {
      const answer = await search.request(checkpoints(), $("k").value);
      render(answer, search.label);
    } catch (error) {
      $("results").replaceChildren();
      setStatus("error", error.message);
    }
    body.dataset.searches = String(Number(body.dataset.searches) + 1);
  }

  function textSearch(query) {
    return {
      label: `“${query}”`,
      link: { q: query },
      request: async (specs, k) => {
        const params = new URLSearchParams({ q: query, k: k });
        for (const spec of specs) params.append("checkpoint", spec);
        return getJson(await fetch(`/api/search?${params}`));
      },
    };
  }

  function imageSearch(file) {
    return {
      label: `the image ${file.name}`,
      link: {},
      request: async (specs, k) => {
        const form = new FormData();
        form.append("image", file);
        form.append("k", k);
        for (const spec of specs) form.append("checkpoint", spec);
        return getJson(await fetch("/api/search-image", { method: "POST", body: form }));
      },
    };
  }

  function similarSearch(itemId) {
    return {
      label: `images like ${itemId}`,
      link: { similar: itemId },
      request: async (specs, k) => {
        const params = new URLSearchParams({ k: k });
        for (const spec of specs) params.append("checkpoint", spec);
        return getJson(await fetch(`/api/similar/${encodeURIComponent(itemId)}?${params}`));
      },
    };
  }

  function card(hit, shared) {
    const figure = el("figure", "card" + (shared ? " shared" : ""));
    figure.dataset.id = hit.id;
    figure.dataset.score = String(hit.score);
    figure.dataset.rank = String(hit.rank);
    if (hit.id === selectedId) figure.classList.add("selected");
    const img = el("img");
    img.src = hit.thumb;
    img.alt = hit.caption || hit.id;
    img.decoding = "async";
    const caption = el("figcaption");
    const meta = el("div", "meta");
    meta.append(el("span", "rank", `#${hit.rank}`), el("span", "score", hit.score.toFixed(3)));
    if (shared) meta.append(el("span", "badge", "both"));
    const captions = hit.captions.length ? hit.captions : ["(no caption)"];
    const list = el("ul", "captions");
    for (const text of captions) list.append(el("li", "caption", text));
    caption.append(meta, list, el("div", "id", hit.id));
    const similar = el("button", "similar", "similar");
    similar.type = "button";
    similar.title = "search for images like this one";
    similar.addEventListener("click", (event) => {
      event.stopPropagation();
      run(similarSearch(hit.id));
    });
    figure.append(img, caption, similar);
    figure.addEventListener("click", () => showItem(hit.id));
    return figure;
  }

  function render(answer, label) {
    const results = $("results");
    results.replaceChildren();
    results.classList.toggle("two", answer.results.length === 2);
    const shared = new Set(answer.overlap || []);
    for (const result of answer.results) {
      const panel = el("section", "panel");
      panel.dataset.checkpoint = result.checkpoint;
      panel.append(el("h2", null, result.checkpoint));
      const grid = el("div", "grid");
      for (const hit of result.hits) grid.append(card(hit, shared.has(hit.id)));
      panel.append(grid);
      results.append(panel);
    }
    let message = `${answer.results[0].hits.length} results for ${label} in ${answer.seconds.toFixed(3)} s`;
    if (answer.overlap) {
      message += ` · ${answer.overlap.length} of the top ${answer.k} found by both checkpoints (marked “both”)`;
    }
    setStatus("done", message);
  }

  async function showItem(itemId) {
    selectedId = itemId;
    for (const node of document.querySelectorAll(".card")) {
      node.classList.toggle("selected", node.dataset.id === itemId);
    }
    try {
      const item = await getJson(await fetch(`/api/item/${encodeURIComponent(itemId)}`));
      $("detail-thumb").src = item.thumb;
      $("detail-thumb").alt = itemId;
      $("detail-id").textContent = item.id;
      const rows = $("detail-table").tBodies[0];
      rows.replaceChildren();
      for (const [key, value] of Object.entries(item.metadata)) {
        const row = el("tr");
        const shown = value !== null && typeof value === "object" ? JSON.stringify(value) : value;
        row.append(el("th", null, key), el("td", null, shown === null ? "" : shown));
        rows.append(row);
      }
      $("details").hidden = false;
    } catch (error) {
      setStatus("error", error.message);
    }
  }

  $("text-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const query = $("query").value.trim();
    if (query) run(textSearch(query));
  });
  $("image").addEventListener("change", () => {
    const file = $("image").files[0];
    if (file) run(imageSearch(file));
  });
  $("detail-similar").addEventListener("click", () => {
    if (selectedId) run(similarSearch(selectedId));
  });
  $("detail-close").addEventListener("click", () => {
    $("details").hidden = true;
  });
  $("side-by-side").addEventListener("change", () => {
    $("checkpoint2").disabled = !$("side-by-side").checked;
    if (lastSearch) run(lastSearch);
  });
  for (const id of ["checkpoint", "checkpoint2", "k"]) {
    $(id).addEventListener("change", () => {
      if (lastSearch) run(lastSearch);
    });
  }
  init();
})();
