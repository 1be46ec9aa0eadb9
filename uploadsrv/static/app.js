// The upload page: resumable uploads through tus (the vendored tus-js-client, window.tus),
// the optional access token, and the list of recent files. No build step: plain ES2020.
"use strict";
(() => {
  const TOKEN_KEY = "uploadsrv-token";
  const ENDPOINT = new URL("/files/", location.href).href;
  // Small enough that when the server refuses a file on its first bytes, the rest of the
  // request (which the server reads and discards, up to 16 MiB) fits, so the browser sees
  // the JSON error instead of a reset; large enough that a fast link stays busy.
  const CHUNK_SIZE = 8 * 1024 * 1024;
  // Lost connections and restarts: try at once, then back off for about two minutes.
  const RETRY_DELAYS = [0, 1000, 3000, 5000, 10000, 20000, 30000, 60000];
  // Worth another try; any other 4xx is the server's final word (wrong type, too large...).
  const RETRY_STATUSES = new Set([409, 423, 500, 502, 503, 504]);
  const PARALLEL = 3;  // uploads at once; the rest wait, so a big drop does not hit 429
  const RATE_WINDOW_MS = 5000;

  const $ = (id) => document.getElementById(id);
  const active = new Set();  // upload URLs this page is working on
  const waiting = [];
  let running = 0;

  function el(tag, props, ...children) {
    const node = Object.assign(document.createElement(tag), props || {});
    node.append(...children.filter((child) => child !== null && child !== undefined));
    return node;
  }
  function human(bytes) {
    const units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (bytes >= 1024 && i < units.length - 1) { bytes /= 1024; i++; }
    return (i ? bytes.toFixed(1) : String(bytes)) + " " + units[i];
  }
  function duration(seconds) {
    seconds = Math.ceil(seconds);
    if (seconds < 60) return seconds + " s";
    if (seconds < 3600) return Math.floor(seconds / 60) + " min " + (seconds % 60) + " s";
    return Math.floor(seconds / 3600) + " h " + Math.floor((seconds % 3600) / 60) + " min";
  }

  // --- the token (sessionStorage: gone when the tab closes) ---------------------------
  const token = () => sessionStorage.getItem(TOKEN_KEY) || "";
  const authHeaders = () => (token() ? { Authorization: "Bearer " + token() } : {});
  // The server's 401 message speaks to curl users; a person without a token gets the
  // page's own sentence, one with a wrong token the server's.
  function showAuth(serverMessage) {
    $("auth").hidden = false;
    if (token() && serverMessage) $("auth-note").textContent = serverMessage;
  }
  $("token").value = token();
  if (token()) showAuth();
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
    $("token-saved").textContent = token() ? "Saved for this tab." : "Cleared.";
    refreshRecent();
  });

  // The JSON error's message, or a sentence about the status.
  function messageOf(status, body) {
    try {
      const parsed = JSON.parse(body);
      if (parsed && parsed.error && parsed.error.message) return parsed.error.message;
    } catch (_) { /* not JSON: a proxy's page */ }
    return status ? `the server answered ${status}` : "the connection to the server failed";
  }
  async function fetchJson(url, options) {
    const response = await fetch(url, { cache: "no-store", ...options, headers: authHeaders() });
    const body = await response.text();
    if (response.status === 401) showAuth(messageOf(401, body));
    if (!response.ok) {
      throw Object.assign(new Error(messageOf(response.status, body)), { unauthorized: response.status === 401 });
    }
    return body ? JSON.parse(body) : null;
  }

  // --- opening a file: a plain link, or fetched with the token ------------------------
  function openLink(url, text) {
    const link = el("a", { href: url, target: "_blank", rel: "noopener", className: "open", textContent: text });
    link.addEventListener("click", (event) => {
      if (!token()) return;  // no token: the plain link works
      event.preventDefault();
      // Opened now, inside the click, so no popup blocker stops it; filled once fetched.
      const tab = window.open("", "_blank");
      fetch(url, { headers: authHeaders() }).then(async (response) => {
        if (!response.ok) throw new Error(messageOf(response.status, await response.text()));
        const blobUrl = URL.createObjectURL(await response.blob());
        if (tab) tab.location.href = blobUrl; else location.href = blobUrl;
        setTimeout(() => URL.revokeObjectURL(blobUrl), 60000);
      }).catch((error) => {
        if (tab) tab.close();
        link.title = "Not opened: " + error.message;
        alert("The file could not be opened: " + error.message);
      });
    });
    return link;
  }

  // --- one upload on the page ---------------------------------------------------------
  class Item {
    constructor(file) {
      this.bar = el("progress", { max: 100, value: 0 });
      this.bar.setAttribute("aria-label", "Upload of " + file.name);
      // Not a live region: progress changes five times a second; outcomes go to #announce.
      this.status = el("div", { className: "status", textContent: "Waiting…" });
      this.cancelButton = el("button", { type: "button" });
      this.name = file.name;
      this.cancelLabel("Cancel");
      this.retryButton = el("button", { type: "button", textContent: "Try again", hidden: true });
      this.retryButton.setAttribute("aria-label", "Try the upload of " + file.name + " again");
      this.node = el("li", { className: "item" },
        el("div", { className: "head" }, el("span", { className: "name", textContent: file.name }),
          this.retryButton, this.cancelButton),
        this.bar, this.status);
      this.node.dataset.filename = file.name;
      this.node.dataset.state = "waiting";
      this.samples = [];
      $("uploads").prepend(this.node);
    }
    set state(value) { this.node.dataset.state = value; }
    cancelLabel(verb) {
      this.cancelButton.textContent = verb;
      this.cancelButton.setAttribute("aria-label", `${verb} the upload of ${this.name}`);
    }
    note(text) { this.status.textContent = text; }
    progress(sent, total) {
      const now = performance.now();
      this.samples.push([now, sent]);
      while (this.samples.length > 2 && now - this.samples[0][0] > RATE_WINDOW_MS) this.samples.shift();
      if (now - (this.shownAt || 0) < 200 && sent < total) return;  // at most 5 updates a second
      this.shownAt = now;
      this.bar.value = total ? (100 * sent) / total : 100;
      if (sent >= total) { this.note(`${human(total)} sent; the server is checking and storing the file…`); return; }
      const [t0, b0] = this.samples[0];
      const speed = now - t0 > 500 ? ((sent - b0) * 1000) / (now - t0) : 0;
      const left = speed > 0 ? ` · ${human(Math.round(speed))}/s · ${duration((total - sent) / speed)} left` : "";
      this.note(`${Math.floor(this.bar.value)}% · ${human(sent)} of ${human(total)}${left}`);
    }
    done(record) {
      this.state = "done";
      this.bar.remove();
      this.cancelButton.remove();
      this.retryButton.remove();
      this.note("Stored.");
      announce(`${record.filename} is stored.`);
      const row = (term, ...value) => [el("dt", { textContent: term }), el("dd", null, ...value)];
      this.node.append(el("dl", { className: "record" },
        ...row("Name", record.filename),
        ...row("Size", `${human(record.size)} (${record.size.toLocaleString("en")} bytes)`),
        ...row("Type", `${record.type} (${record.mime})`),
        ...row("SHA-256", el("code", { className: "sha256", textContent: record.sha256 })),
        ...row("Link", openLink(record.url, "Open"), " ", el("code", { textContent: record.url }))));
    }
    fail(message, retryable) {
      // A refused file shows as failed, never as a full progress bar.
      this.state = "error";
      this.bar.hidden = true;
      this.retryButton.hidden = !retryable;
      // What can be tried again can be given up (deleting the partial upload); a refused
      // upload is gone from the server already.
      this.cancelButton.hidden = !retryable;
      this.cancelLabel("Discard");
      this.note("Failed: " + message);
      announce(`${this.name} failed: ${message}`);
    }
  }

  function announce(text) { $("announce").textContent = text; }

  function describe(error) {
    const response = error.originalResponse;
    if (response) return messageOf(response.getStatus(), response.getBody());
    if (error.originalRequest) {
      return "the connection to the server was lost; try again, or pick the file again later to resume";
    }
    return error.message;
  }
  const statusOf = (error) => (error.originalResponse ? error.originalResponse.getStatus() : 0);

  // The URL storage entries (localStorage) of unfinished uploads to this server.
  async function storedUploads() {
    const all = await tus.defaultOptions.urlStorage.findAllUploads();
    return all.filter((entry) => entry.uploadUrl && entry.uploadUrl.startsWith(ENDPOINT));
  }
  async function forget(url) {
    for (const entry of await storedUploads()) {
      if (entry.uploadUrl === url) await tus.defaultOptions.urlStorage.removeUpload(entry.urlStorageKey);
    }
  }

  function upload(file) {
    const item = new Item(file);
    const tusUpload = new tus.Upload(file, {
      endpoint: ENDPOINT,
      chunkSize: CHUNK_SIZE,
      retryDelays: RETRY_DELAYS,
      removeFingerprintOnSuccess: true,
      metadata: { filename: file.name },
      headers: authHeaders(),
      onUploadUrlAvailable() {
        item.node.dataset.uploadUrl = tusUpload.url;
        active.add(tusUpload.url);
        renderUnfinished();
      },
      onShouldRetry(error, attempt) {
        const status = statusOf(error);
        const retry = status === 0 || RETRY_STATUSES.has(status);
        if (retry) {
          item.samples = [];
          const why = status ? `The server answered ${status}: ${describe(error)}` : "Connection lost";
          item.note(`${why}; trying again (attempt ${attempt + 1} of ${RETRY_DELAYS.length})…`);
        }
        return retry;
      },
      onProgress(sent, total) { item.progress(sent, total); },
      onSuccess() {
        item.note("Stored; fetching its record…");
        fetchJson(tusUpload.url + "/info")
          .then((record) => item.done(record),
                (error) => item.fail("stored, but its record could not be read: " + error.message))
          .finally(() => { finished(item, tusUpload.url); refreshRecent(); });
      },
      onError(error) {
        const status = statusOf(error);
        if (status === 401) showAuth(describe(error));
        // A 4xx is final: the server removed the upload or never made it; forget its URL.
        // 401 can be tried again once the token is in.
        const final = status >= 400 && status < 500;
        const message = status === 401 && !token()
          ? "this server needs an access token: enter it above, then try again" : describe(error);
        item.fail(message, !final || status === 401);
        const forgotten = final && tusUpload.url ? forget(tusUpload.url) : Promise.resolve();
        forgotten.finally(() => finished(item, tusUpload.url));
      },
    });
    item.cancelButton.addEventListener("click", () => {
      item.cancelButton.disabled = true;
      const queued = waiting.indexOf(begin);
      if (queued >= 0) waiting.splice(queued, 1);
      // abort(true) also deletes the partial upload on the server and forgets its URL.
      tusUpload.abort(true).catch(() => {}).finally(() => {
        item.state = "cancelled";
        item.bar.hidden = true;
        item.cancelButton.remove();
        item.retryButton.remove();
        item.note("Cancelled; nothing of it is kept on the server.");
        announce(`${file.name} cancelled.`);
        finished(item, tusUpload.url);
      });
    });
    item.retryButton.addEventListener("click", () => {
      item.retryButton.hidden = true;
      item.cancelLabel("Cancel");
      item.bar.hidden = false;
      item.state = "uploading";
      item.note("Trying again…");
      tusUpload.options.headers = authHeaders();  // the token may have been entered since
      item.running = true;
      running++;
      tusUpload.start();
    });
    const begin = async () => {
      item.state = "uploading";
      item.note("Starting…");
      // Not one this page is sending already (the same file picked twice).
      const previous = (await tusUpload.findPreviousUploads()).filter((entry) => !active.has(entry.uploadUrl));
      if (item.cancelButton.disabled) return;  // cancelled while looking
      if (previous.length) {
        previous.sort((a, b) => String(b.creationTime).localeCompare(String(a.creationTime)));
        tusUpload.resumeFromPreviousUpload(previous[0]);
        item.note("Resuming the earlier upload of this file…");
      }
      tusUpload.start();
    };
    begin.item = item;
    waiting.push(begin);
    pump();
  }
  function pump() {
    while (running < PARALLEL && waiting.length) {
      const next = waiting.shift();
      next.item.running = true;
      running++;
      next();
    }
  }
  function finished(item, url) {
    if (item.running) { item.running = false; running--; }
    if (url) active.delete(url);
    renderUnfinished();
    pump();
  }

  async function renderUnfinished() {
    const list = $("unfinished-list");
    const entries = (await storedUploads()).filter((entry) => !active.has(entry.uploadUrl));
    list.replaceChildren(...entries.map((entry) => {
      const name = (entry.metadata && entry.metadata.filename) || "a file";
      const discard = el("button", { type: "button", className: "danger", textContent: "Discard" });
      discard.setAttribute("aria-label", "Discard the unfinished upload of " + name);
      discard.addEventListener("click", async () => {
        await tus.Upload.terminate(entry.uploadUrl, { headers: authHeaders() }).catch(() => {});
        await tus.defaultOptions.urlStorage.removeUpload(entry.urlStorageKey);
        renderUnfinished();
      });
      const started = entry.creationTime ? new Date(entry.creationTime).toLocaleString() : "earlier";
      return el("li", null, el("strong", { textContent: name }),
        ` (${human(entry.size)}), started ${started} `, discard);
    }));
    $("unfinished").hidden = entries.length === 0;
  }

  // --- recent files -------------------------------------------------------------------
  async function refreshRecent() {
    const message = $("recent-message");
    let files;
    try {
      files = (await fetchJson("/files?limit=20")).files;
    } catch (error) {
      message.className = "message err";
      message.textContent = token() || !error.unauthorized
        ? "Could not list the files: " + error.message : "Enter the access token to see the files.";
      $("recent").hidden = true;
      return;
    }
    message.className = "message";
    message.textContent = files.length ? "" : "No files yet.";
    $("recent").hidden = files.length === 0;
    $("recent-rows").replaceChildren(...files.map((record) => {
      const remove = el("button", { type: "button", className: "danger delete", textContent: "Delete" });
      remove.setAttribute("aria-label", "Delete " + record.filename);
      remove.addEventListener("click", async () => {
        if (!confirm(`Delete ${record.filename}? This cannot be undone.`)) return;
        let failure = null;
        try {
          await fetchJson("/files/" + encodeURIComponent(record.id), { method: "DELETE" });
        } catch (error) {
          failure = error;
        }
        await refreshRecent();
        if (failure) {
          message.className = "message err";
          message.textContent = `Could not delete ${record.filename}: ${failure.message}`;
        } else {
          announce(`${record.filename} deleted.`);
        }
      });
      const row = el("tr", null,
        el("td", { className: "name", textContent: record.filename }),
        el("td", { className: "size", textContent: human(record.size) }),
        el("td", { textContent: record.type }),
        el("td", { textContent: new Date(record.created_at).toLocaleString() }),
        el("td", { className: "actions" }, openLink(record.url, "Open"), remove));
      row.dataset.id = record.id;
      return row;
    }));
  }
  $("recent-refresh").addEventListener("click", refreshRecent);

  // --- picking and dropping -----------------------------------------------------------
  const drop = $("drop");
  const picker = $("picker");
  const take = (files) => { for (const file of files) upload(file); };
  picker.addEventListener("change", () => { take(picker.files); picker.value = ""; });
  // The whole window takes drops: a file dropped beside the zone would otherwise make the
  // browser leave the page to show the file.
  window.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  window.addEventListener("dragleave", (event) => { if (!event.relatedTarget) drop.classList.remove("over"); });
  window.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    take(event.dataTransfer.files);
  });

  if (!window.tus || !tus.isSupported) {
    drop.replaceChildren("This browser cannot upload from this page (tus-js-client did not load).");
    return;
  }
  renderUnfinished();
  refreshRecent();
})();
