// Live update: fetch /api/state every second (the next request starts one
// second after the previous one ends, so they never overlap) and rebuild
// the tables in place. Only one page of files is asked for, found, sorted
// and paged by the server (q, sort, order, offset, limit). The Get and
// Delete buttons POST to /api/get and /api/delete with the token the page
// was opened with (#token=..., kept in sessionStorage: a fragment never
// reaches the server). Network strings only ever go into textContent or
// title. Mirrors the server's formatting (src/units.rs, src/http/format.rs).
(() => {
  "use strict";

  const POLL_MS = 1000;
  const FETCH_TIMEOUT_MS = 4000;
  const UNITS = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
  const SHORT_ID_CHARS = 12;
  const MAX_DATED_SECS = 253402300800;
  const LIVE_SECS = 15;
  const SEARCH_DELAY_MS = 300;

  // --- the action token: from the address once, then this tab's storage ---

  const TOKEN_KEY = "peershare-token";
  const tokenFromHash = /(?:^#|&)token=([0-9a-fA-F]{32})(?:&|$)/.exec(location.hash);
  if (tokenFromHash) {
    try {
      sessionStorage.setItem(TOKEN_KEY, tokenFromHash[1]);
    } catch (_) {
      // Storage refused (private mode): the token lives in this page only.
    }
    // Out of the address bar (and of screenshots and bookmarks).
    history.replaceState(null, "", location.pathname + location.search);
  }
  const token = (() => {
    try {
      return sessionStorage.getItem(TOKEN_KEY) || (tokenFromHash && tokenFromHash[1]) || "";
    } catch (_) {
      return (tokenFromHash && tokenFromHash[1]) || "";
    }
  })();

  // --- units (same output as src/units.rs) ---

  // bytes() is humanBytes below.
  const unitRate = (n) => `${humanBytes(n)}/s`;
  // A download from several holders names each one's share after its peer.
  const peerText = (t) =>
    !t.sources || t.sources.length === 0
      ? t.peer
      : `${t.peer}: ` +
        t.sources
          .map((s) => `${s.peer} ${humanBytes(s.bytes)} at ${unitRate(s.rate_bytes_per_sec)}` +
            (s.state === "active" ? "" : ` (${s.state})`))
          .join("; ");
  const unitEta = (secs) => {
    const pad = (n) => String(n).padStart(2, "0");
    if (secs < 60) return `${secs}s`;
    if (secs < 3600) return `${Math.floor(secs / 60)}m ${pad(secs % 60)}s`;
    return `${Math.floor(secs / 3600)}h ${pad(Math.floor((secs % 3600) / 60))}m`;
  };

  // --- formatting (same output as format.rs) ---

  const humanBytes = (n) => {
    if (n < 1024) return `${n} B`;
    let divisor = 1;
    let shown = "";
    for (const unit of UNITS) {
      divisor *= 1024;
      const tenths = Math.round((n * 10) / divisor);
      shown = `${Math.floor(tenths / 10)}.${tenths % 10} ${unit}`;
      if (tenths < 10240) break;
    }
    return shown;
  };

  const plainText = (v) => {
    if (typeof v === "string") return v;
    if (v === null || v === undefined) return "";
    if (isRaw(v)) return rawOf(v);
    return JSON.stringify(v, (_, x) => (isRaw(x) ? Number(rawOf(x)) : x));
  };

  // Numbers under file_size and file_timestamp are shown as the network
  // gave them ("123.0" is float megabytes, "123" is bytes), which a parsed
  // JS number forgets. So before parsing, each such number is wrapped with
  // its source text. The body is compact JSON, so a quote right after "{"
  // or "," always opens a key: the pattern never matches inside a string.
  const RAW_KEY = "peershare:raw-number";
  const RAW_NUMBER =
    /([{,])"(file_size|file_timestamp)":(-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)/g;
  const parseState = (text) =>
    JSON.parse(
      text.replace(RAW_NUMBER, (_, before, key, num) => `${before}"${key}":{"${RAW_KEY}":"${num}"}`)
    );
  const isRaw = (v) => v !== null && typeof v === "object" && typeof v[RAW_KEY] === "string";
  const rawOf = (v) => v[RAW_KEY];

  const sizeText = (v) => {
    if (!isRaw(v)) return plainText(v);
    const raw = rawOf(v);
    return /^[0-9]+$/.test(raw) ? humanBytes(Number(raw)) : `${raw} MB?`;
  };

  // The user's own local date-time for a timestamp in seconds.
  const localTime = (secs) => new Date(secs * 1000).toLocaleString();

  const timestampLocal = (v) => {
    if (!isRaw(v)) return plainText(v);
    const secs = Number(rawOf(v));
    return secs >= 0 && secs < MAX_DATED_SECS ? localTime(Math.floor(secs)) : rawOf(v);
  };

  const timestampTitle = (v) => {
    if (!isRaw(v)) return null;
    const secs = Number(rawOf(v));
    if (!(secs >= 0 && secs < MAX_DATED_SECS)) return null;
    const iso = new Date(Math.floor(secs) * 1000).toISOString();
    return `${iso.slice(0, 10)} ${iso.slice(11, 19)} UTC`;
  };

  const shortId = (id) => {
    const chars = Array.from(id);
    return chars.length > SHORT_ID_CHARS ? `${chars.slice(0, SHORT_ID_CHARS).join("")}…` : id;
  };

  const localText = (local, verified) => (!local ? "no" : verified ? "yes" : "yes (unverified)");

  const doneText = (done, total) => {
    if (total === null || total === undefined) return humanBytes(done);
    if (total === 0) return `${humanBytes(done)} of ${humanBytes(0)}`;
    const pct = Math.min(100, Math.floor((done * 100) / total));
    return `${humanBytes(done)} of ${humanBytes(total)} (${pct}%)`;
  };

  const count = (n, singular, plural) => `${n} ${n === 1 ? singular : plural}`;

  const rangeText = (offset, shown, total) =>
    total === 0
      ? "No files."
      : shown === 0
      ? `No files from ${offset + 1} on (${total} in all)`
      : `Files ${offset + 1}–${offset + shown} of ${total}`;

  // --- DOM building ---

  const cell = (text, cls, title) => {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    if (title) td.title = title;
    return td;
  };

  const fillTable = (id, items, makeCells, emptyText, columns) => {
    const body = document.getElementById(`${id}-body`);
    if (!body) return;
    const rows = document.createDocumentFragment();
    if (items.length === 0) {
      const td = cell(emptyText, "empty");
      td.colSpan = columns;
      const tr = document.createElement("tr");
      tr.appendChild(td);
      rows.appendChild(tr);
    }
    for (const item of items) {
      const tr = document.createElement("tr");
      for (const td of makeCells(item)) tr.appendChild(td);
      rows.appendChild(tr);
    }
    while (body.firstChild) body.removeChild(body.firstChild);
    body.appendChild(rows);
  };

  const setText = (id, text) => {
    const el = document.getElementById(id);
    if (el) el.textContent = text;
  };

  // What files are asked for: the pager's page, a search and a sort.
  const pager = document.getElementById("files-pager");
  const ask = {
    offset: Number((pager && pager.dataset.offset) || 0),
    limit: Number((pager && pager.dataset.limit) || 100),
    q: "",
    sort: "name",
    order: "asc",
  };
  let me = "";
  let lastFilesKey = "";

  const stateUrl = () =>
    `/api/state?offset=${ask.offset}&limit=${ask.limit}` +
    `&q=${encodeURIComponent(ask.q)}&sort=${ask.sort}&order=${ask.order}`;

  const renderPager = (s) => {
    const shown = s.files.length;
    const link = (id, offset, hide) => {
      const a = document.getElementById(id);
      if (!a) return;
      a.href = `/?offset=${offset}&limit=${s.limit}`;
      a.dataset.offset = String(offset);
      a.hidden = hide;
    };
    link("files-prev", Math.max(0, s.offset - Math.max(1, s.limit)), s.offset === 0);
    link("files-next", s.offset + shown, s.offset + shown >= s.files_matching);
    const found = ask.q ? ` (${s.files_matching} found of ${s.files_total})` : "";
    setText("files-range", rangeText(s.offset, shown, s.files_matching) + found);
  };

  const progressCell = (t) => {
    const td = cell(doneText(t.bytes_done, t.bytes_total));
    if (t.bytes_total) {
      const bar = document.createElement("progress");
      bar.max = t.bytes_total;
      bar.value = Math.min(t.bytes_done, t.bytes_total);
      td.insertBefore(document.createTextNode(" "), td.firstChild);
      td.insertBefore(bar, td.firstChild);
    }
    return td;
  };

  const actionStatus = (text, ok) => {
    const el = document.getElementById("action-status");
    if (!el) return;
    el.className = ok ? "status ok" : "status lost";
    el.textContent = text;
  };

  const act = async (verb, fileId) => {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), FETCH_TIMEOUT_MS);
    try {
      const resp = await fetch(`/api/${verb}`, {
        method: "POST",
        cache: "no-store",
        signal: abort.signal,
        headers: { "Content-Type": "application/json", "X-Peershare-Token": token },
        body: JSON.stringify({ file_id: fileId }),
      });
      const answer = await resp.json().catch(() => ({}));
      actionStatus(
        answer.ok ? answer.message || `${verb}: done` : answer.error || `${verb}: HTTP ${resp.status}`,
        !!answer.ok
      );
    } catch (err) {
      actionStatus(`${verb}: the peer did not answer`, false);
    } finally {
      clearTimeout(timer);
      pollNow();
    }
  };

  const button = (label, verb, f) => {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = label;
    b.className = `act act-${verb}`;
    b.dataset.fileId = f.file_id;
    if (!token) {
      b.disabled = true;
      b.title = "Open the page at the address the peer printed at start (with #token=) to act";
    }
    b.addEventListener("click", () => {
      if (verb === "delete" && !window.confirm(`Delete ${f.file_name} everywhere?`)) return;
      act(verb, f.file_id);
    });
    return b;
  };

  const actionCell = (f) => {
    const td = cell("");
    if (!f.local) td.appendChild(button("Get", "get", f));
    if (f.file_owner === me) td.appendChild(button("Delete", "delete", f));
    return td;
  };

  const eventKind = (k) => String(k).replace(/_/g, " ");

  const render = (s) => {
    me = s.peer_id;
    const title = `Peer Stats for ${s.peer_id}`;
    document.title = title;
    setText("heading", title);
    setText(
      "summary",
      `${s.host}:${s.port} · ${count(s.peers.length, "tracked peer", "tracked peers")} · ` +
        `${count(s.files_total, "file", "files")} · ` +
        `${count(s.transfers.length, "transfer", "transfers")}`
    );
    fillTable("transfers", s.transfers, (t) => [
      cell(t.direction === "up" ? "↑ up" : "↓ down"),
      cell(t.file_name, "", t.file_id),
      cell(peerText(t)),
      progressCell(t),
      cell(unitRate(t.rate_bytes_per_sec), "num"),
      cell(t.eta_secs === null || t.eta_secs === undefined ? "—" : unitEta(t.eta_secs), "num"),
    ], "No transfers in flight.", 6);
    fillTable("peers", s.peers, (p) => [
      cell(p.peer_id, "mono"),
      cell(`${p.host}:${p.port}`),
      cell(p.last_seen_secs_ago <= LIVE_SECS ? "live" : `silent for ${p.last_seen_secs_ago} s`),
    ], "No tracked peers.", 3);
    // Rebuilt only when it changed, so a button under the pointer stays.
    const filesKey = JSON.stringify([me, ask.q, s.files]);
    if (filesKey !== lastFilesKey) {
      lastFilesKey = filesKey;
      fillTable("files", s.files, (f) => [
        cell(shortId(f.file_id), "mono", f.file_id),
        cell(f.file_name),
        cell(f.file_owner),
        cell(sizeText(f.file_size), "num"),
        cell(timestampLocal(f.file_timestamp), "", timestampTitle(f.file_timestamp)),
        cell(localText(f.local, f.verified)),
        cell(f.peers_with_file.length ? f.peers_with_file.join(", ") : "—"),
        actionCell(f),
      ], ask.q ? "No file matches the search." : "No files known.", 8);
    }
    renderPager(s);
    fillTable("events", s.events.slice().reverse(), (e) => [
      cell(localTime(e.at_unix), "num"),
      cell(eventKind(e.kind)),
      cell(e.text),
    ], "No events yet.", 3);
  };

  const setStatus = (ok) => {
    const el = document.getElementById("status");
    if (!el) return;
    el.className = ok ? "status ok" : "status lost";
    el.textContent = ok
      ? `live · updated ${new Date().toLocaleTimeString()}`
      : "connection lost · retrying every second";
  };

  // --- polling ---

  let pollTimer = null;
  let inFlight = false;
  let again = false;

  const poll = async () => {
    if (inFlight) {
      again = true;
      return;
    }
    inFlight = true;
    clearTimeout(pollTimer);
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), FETCH_TIMEOUT_MS);
    try {
      const resp = await fetch(stateUrl(), { cache: "no-store", signal: abort.signal });
      if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
      render(parseState(await resp.text()));
      setStatus(true);
    } catch (err) {
      setStatus(false);
    } finally {
      clearTimeout(timer);
      inFlight = false;
      if (again) {
        again = false;
        pollNow();
      } else {
        pollTimer = setTimeout(poll, POLL_MS);
      }
    }
  };
  const pollNow = () => {
    clearTimeout(pollTimer);
    pollTimer = setTimeout(poll, 0);
  };

  // --- search, sort, pages ---

  const search = document.getElementById("files-q");
  let searchTimer = null;
  if (search) {
    search.addEventListener("input", () => {
      clearTimeout(searchTimer);
      searchTimer = setTimeout(() => {
        ask.q = search.value;
        ask.offset = 0;
        pollNow();
      }, SEARCH_DELAY_MS);
    });
  }
  for (const [id, key] of [["files-sort", "sort"], ["files-order", "order"]]) {
    const select = document.getElementById(id);
    if (select) {
      select.addEventListener("change", () => {
        ask[key] = select.value;
        ask.offset = 0;
        pollNow();
      });
    }
  }
  for (const id of ["files-prev", "files-next"]) {
    const a = document.getElementById(id);
    if (a) {
      a.addEventListener("click", (ev) => {
        ev.preventDefault();
        ask.offset = Number(a.dataset.offset || 0);
        pollNow();
      });
    }
  }

  pollNow();
})();
