// Live update: fetch /api/state every second (the next request starts one
// second after the previous one ends, so they never overlap) and rebuild
// the tables in place. Only the page of files this page shows is asked
// for (its offset and limit are on the pager); the pager's links load the
// neighbouring pages. Network strings only ever go into textContent or
// title. Mirrors the server's formatting (src/http/format.rs).
(() => {
  "use strict";

  const POLL_MS = 1000;
  const FETCH_TIMEOUT_MS = 4000;
  const UNITS = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
  const SHORT_ID_CHARS = 12;
  const MAX_DATED_SECS = 253402300800;

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
    shown === 0
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

  // The pager's page: where this page starts and how many it asks for.
  const pager = document.getElementById("files-pager");
  const pageOffset = Number((pager && pager.dataset.offset) || 0);
  const pageLimit = Number((pager && pager.dataset.limit) || 100);

  const renderPager = (s) => {
    const shown = s.files.length;
    const link = (id, offset, hide) => {
      const a = document.getElementById(id);
      if (!a) return;
      a.href = `/?offset=${offset}&limit=${s.limit}`;
      a.hidden = hide;
    };
    link("files-prev", Math.max(0, s.offset - Math.max(1, s.limit)), s.offset === 0);
    link("files-next", s.offset + shown, s.offset + shown >= s.files_total);
    setText("files-range", rangeText(s.offset, shown, s.files_total));
  };

  const render = (s) => {
    const title = `Peer Stats for ${s.peer_id}`;
    document.title = title;
    setText("heading", title);
    setText(
      "summary",
      `${s.host}:${s.port} · ${count(s.peers.length, "tracked peer", "tracked peers")} · ` +
        `${count(s.files_total, "file", "files")} · ` +
        `${count(s.transfers.length, "transfer", "transfers")}`
    );
    fillTable("peers", s.peers, (p) => [
      cell(p.peer_id, "mono"),
      cell(p.host),
      cell(String(p.port), "num"),
      cell(`${p.last_seen_secs_ago}s ago`, "num"),
    ], "No tracked peers.", 4);
    fillTable("files", s.files, (f) => [
      cell(shortId(f.file_id), "mono", f.file_id),
      cell(f.file_name),
      cell(f.file_owner),
      cell(sizeText(f.file_size), "num"),
      cell(plainText(f.file_timestamp), "", timestampTitle(f.file_timestamp)),
      cell(localText(f.local, f.verified)),
      cell(f.peers_with_file.length ? f.peers_with_file.join(", ") : "—"),
    ], "No files known.", 7);
    renderPager(s);
    fillTable("transfers", s.transfers, (t) => [
      cell(t.file_name, "", t.file_id),
      cell(t.source),
      cell(doneText(t.bytes_done, t.bytes_total), "num"),
      cell(`${humanBytes(t.rate_bytes_per_sec)}/s`, "num"),
    ], "No transfers in flight.", 4);
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

  const poll = async () => {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), FETCH_TIMEOUT_MS);
    try {
      const url = `/api/state?offset=${pageOffset}&limit=${pageLimit}`;
      const resp = await fetch(url, { cache: "no-store", signal: abort.signal });
      if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
      render(parseState(await resp.text()));
      setStatus(true);
    } catch (err) {
      setStatus(false);
    } finally {
      clearTimeout(timer);
      setTimeout(poll, POLL_MS);
    }
  };

  setTimeout(poll, POLL_MS);
})();
