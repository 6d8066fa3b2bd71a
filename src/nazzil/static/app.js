// nazzil's page: preview without reloading, downloads as jobs with live progress, history.
// Progressive enhancement: without this file the forms still preview and stream downloads.
(function () {
  "use strict";
  const app = document.getElementById("app");
  if (!app || !window.fetch) return;
  const T = readStrings();
  const JOBS = app.dataset.jobs === "1";
  const FINAL = ["finished", "failed", "cancelled"];
  const form = document.getElementById("paste");
  const input = document.getElementById("url");
  const statusBox = document.getElementById("status");
  const result = document.getElementById("result");
  const pasteBtn = document.getElementById("paste-btn");
  const historyBox = document.getElementById("history");
  const jobList = document.getElementById("jobs");
  let previewSeq = 0;
  let historyTimer = 0;

  function readStrings() {
    const node = document.getElementById("i18n");
    try { return JSON.parse(node ? node.textContent : "{}"); } catch (e) { return {}; }
  }
  function t(key, values) {
    let text = T[key] != null ? String(T[key]) : key;
    for (const [name, value] of Object.entries(values || {})) text = text.split("{" + name + "}").join(value);
    return text;
  }
  function errorText(code) {
    const errors = T.errors || {};
    return errors[code] || errors.internal_error || "Error";
  }
  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text != null) node.textContent = text;
    return node;
  }

  // Numbers: Western digits in every language, like the server (see i18n.py).
  function size(n) {
    if (!n) return "";
    const u = T.units || {};
    const steps = [[1073741824, "GB"], [1048576, "MB"], [1024, "KB"]];
    for (const [factor, unit] of steps) {
      if (n >= factor) {
        const v = n / factor;
        return (v < 100 && factor > 1024 ? v.toFixed(1) : Math.round(v)) + "\u00a0" + (u[unit] || unit);
      }
    }
    return Math.round(n) + "\u00a0" + (u.B || "B");
  }
  function clock(s) {
    s = Math.max(0, Math.round(s));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = String(s % 60).padStart(2, "0");
    return h ? h + ":" + String(m).padStart(2, "0") + ":" + r : m + ":" + r;
  }
  // "1:30", "1.30", "90", "1:02:03", also typed with Arabic-Indic digits -> seconds; NaN if not a time.
  function parseTime(text) {
    const ascii = String(text || "").trim()
      .replace(/[\u0660-\u0669]/g, (d) => String(d.charCodeAt(0) - 0x0660))
      .replace(/[\u06f0-\u06f9]/g, (d) => String(d.charCodeAt(0) - 0x06f0));
    if (!ascii) return null;
    const parts = ascii.split(/\s*[:.,\u066b\u060c]\s*|\s+/);
    if (parts.length > 3 || !parts.every((p) => /^\d{1,5}$/.test(p))) return NaN;
    const nums = parts.map(Number);
    if (nums.slice(1).some((n) => n >= 60)) return NaN;
    return nums.reduce((acc, n) => acc * 60 + n, 0);
  }
  function findLink(text) {
    const m = /https?:\/\/[^\s<>"']+/i.exec(String(text || ""));
    return m ? m[0].replace(/[.,;:!?)\]}»\u060c\u061b\u061f]+$/, "") : "";
  }

  // ---------------------------------------------------------------- preview

  // kind: "error" and "busy" are shown; other news (found, started) is only announced.
  function showStatus(text, kind) {
    const cls = kind === true || kind === "error" ? "error" : kind === "busy" ? "busy" : "sr";
    statusBox.replaceChildren(text ? el("p", { class: cls }, text) : "");
  }
  function fragment(html) {
    const doc = new DOMParser().parseFromString(html, "text/html");
    return Array.from(doc.body.childNodes);
  }
  async function preview(url) {
    const seq = ++previewSeq;
    showStatus(t("looking"), "busy");
    result.setAttribute("aria-busy", "true");
    let resp, html;
    try {
      resp = await fetch("/preview?url=" + encodeURIComponent(url), {
        headers: { Accept: "text/html" }, credentials: "same-origin",
      });
      html = await resp.text();
    } catch (e) {
      if (seq === previewSeq) { showStatus(errorText("network"), true); result.setAttribute("aria-busy", "false"); }
      return;
    }
    if (seq !== previewSeq) return;  // a newer preview was asked for meanwhile
    result.setAttribute("aria-busy", "false");
    if (resp.redirected && !resp.headers.get("X-Nazzil-Fragment")) {
      // E.g. the access-token page of a private instance: load the page itself, which
      // sends the browser there and back to this preview afterwards.
      location.assign("/?url=" + encodeURIComponent(url));
      return;
    }
    if (!resp.headers.get("X-Nazzil-Fragment")) {
      const code = { 401: "unauthorized", 413: "payload_too_large", 429: "rate_limited" }[resp.status];
      showStatus(errorText(code || "internal_error"), true);
      return;
    }
    const nodes = fragment(html);
    if (!resp.ok) {
      result.replaceChildren();
      const p = nodes.find((n) => n.nodeType === 1 && n.classList.contains("error"));
      showStatus(p ? p.textContent : errorText("internal_error"), true);
      return;
    }
    result.replaceChildren(...nodes);
    enhance(result);
    const title = result.querySelector(".playlist-title, .title");
    showStatus(title ? t("found", { title: title.textContent.trim() }) : "");
    const here = new URL(location.href);
    here.search = "?url=" + encodeURIComponent(url);
    history.replaceState(null, "", here.pathname + here.search);
    // The language links keep the link being previewed.
    for (const a of document.querySelectorAll(".langs a[hreflang]")) {
      a.href = "?lang=" + encodeURIComponent(a.hreflang) + "&url=" + encodeURIComponent(url);
    }
  }

  function enhance(root) {
    for (const dl of root.querySelectorAll("form.dl")) {
      const trim = dl.querySelector(".trim");
      if (trim) trim.hidden = !JOBS;
      syncAudio(dl);
    }
  }
  function syncAudio(dl) {
    const quality = dl.querySelector("select.quality");
    const field = dl.querySelector(".audio-format");
    if (!quality || !field) return;
    const audio = quality.value === "audio";
    field.hidden = !audio;
    // A disabled select is not submitted, so a streamed video link carries no audio_format.
    field.querySelector("select").disabled = !audio;
  }

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const url = findLink(input.value) || input.value.trim();
    if (url) preview(url);
  });
  input.addEventListener("paste", () => {
    setTimeout(() => {
      const url = findLink(input.value);
      if (url) { input.value = url; preview(url); }
    }, 0);
  });
  if (pasteBtn && navigator.clipboard && navigator.clipboard.readText) {
    pasteBtn.hidden = false;
    pasteBtn.addEventListener("click", async () => {
      let text;
      try { text = await navigator.clipboard.readText(); } catch (e) {
        showStatus(t("paste_denied"), true);
        input.focus();
        return;
      }
      const url = findLink(text);
      if (!url) { showStatus(t("no_link"), true); return; }
      input.value = url;
      preview(url);
    });
  }
  result.addEventListener("change", (ev) => {
    if (ev.target.matches("select.quality")) syncAudio(ev.target.form);
  });
  result.addEventListener("click", (ev) => {
    const pick = ev.target.closest("a.pick");
    if (!pick) return;
    ev.preventDefault();
    input.value = pick.dataset.url;
    preview(pick.dataset.url);
  });
  result.addEventListener("submit", (ev) => {
    const dl = ev.target.closest("form.dl");
    if (!dl) return;
    if (!JOBS) { formError(dl, ""); showStatus(t("stream_started")); return; }  // native streamed download
    ev.preventDefault();
    startJob(dl);
  });

  // ---------------------------------------------------------------- jobs

  function formError(dl, text) {
    const p = dl.querySelector(".form-error");
    p.textContent = text;
    p.hidden = !text;
  }
  function jobRequest(dl) {
    const body = { url: dl.elements.url.value, format: dl.elements.format.value };
    if (body.format === "audio" && dl.elements.audio_format) body.audio_format = dl.elements.audio_format.value;
    const card = dl.closest(".preview");
    const duration = parseFloat(card && card.dataset.duration) || null;
    const startBox = dl.querySelector(".start"), endBox = dl.querySelector(".end");
    const start = parseTime(startBox && startBox.value), end = parseTime(endBox && endBox.value);
    if (Number.isNaN(start) || Number.isNaN(end)) return { error: t("trim_invalid") };
    if (start != null && end != null && end <= start) return { error: t("trim_order") };
    if (duration && ((start != null && start >= duration) || (end != null && end > duration + 1))) {
      return { error: t("trim_long", { duration: clock(duration) }) };
    }
    if (start) body.start = start;
    if (end != null) body.end = end;
    return { body };
  }
  async function api(method, path, body) {
    const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
    if (body !== undefined) { init.headers["Content-Type"] = "application/json"; init.body = JSON.stringify(body); }
    const resp = await fetch(path, init);
    let data = null;
    if (resp.status !== 204) { try { data = await resp.json(); } catch (e) { data = null; } }
    return { resp, data, code: data && data.error ? data.error.code : null };
  }
  async function startJob(dl) {
    const req = jobRequest(dl);
    formError(dl, req.error || "");
    if (req.error) return;
    const button = dl.querySelector("button.download");
    button.disabled = true;
    let answer;
    try { answer = await api("POST", "/api/v1/jobs", req.body); } catch (e) {
      formError(dl, errorText("network"));
      button.disabled = false;
      return;
    }
    button.disabled = false;
    const { resp, data, code } = answer;
    if (resp.status === 404 || resp.status === 405 || code === "jobs_disabled") {
      dl.submit();  // this server keeps no jobs: stream the file instead
      showStatus(t("stream_started"));
      return;
    }
    if (!resp.ok || !data) { formError(dl, errorText(code)); return; }
    const card = dl.closest(".preview");
    const title = card && card.querySelector(".title");
    if (title) rememberTitle(data.id, title.textContent.trim());
    let view = dl.parentNode.querySelector(":scope > .job");
    const fresh = jobView(data, false);
    if (view) view.replaceWith(fresh); else dl.after(fresh);
    view = fresh;
    showStatus(t("starting"));  // announced: the new progress bar's own live region is not yet heard
    follow(data, view);
    refreshHistory();
  }

  function jobView(job, inHistory) {
    const view = el("div", { class: "job", "data-job": job.id });
    const bar = el("div", {
      class: "progress", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100",
      "aria-label": t("progress_label"),
    });
    bar.append(el("span", { class: "fill" }));
    const line = el("p", { class: "job-line" });
    line.append(el("span", { class: "job-state" }), el("span", { class: "job-detail muted" }));
    const actions = el("div", { class: "actions" });
    actions.append(
      el("a", { class: "button primary save", download: "", hidden: "" }, t("save")),
      el("button", { type: "button", class: "quiet", "data-action": "cancel", hidden: "" }, t("cancel")),
      el("button", { type: "button", "data-action": "retry", hidden: "" }, t("retry")),
    );
    if (inHistory) actions.append(el("button", { type: "button", class: "danger", "data-action": "delete" }, t("delete")));
    view.append(bar, line, el("p", { class: "sr announce", "aria-live": "polite" }), actions);
    update(view, job);
    return view;
  }

  function update(view, job) {
    const status = job.status;
    const progress = job.progress || {};
    view.className = "job " + status;
    view.dataset.status = status;
    const bar = view.querySelector(".progress");
    let pct = status === "finished" ? 100 : progress.percent;
    if (pct == null && progress.total_bytes && progress.downloaded_bytes != null) {
      pct = (100 * progress.downloaded_bytes) / progress.total_bytes;
    }
    const unknown = status === "running" && pct == null;
    bar.classList.toggle("indeterminate", unknown);
    bar.classList.toggle("done", status === "finished");
    if (unknown) {
      bar.removeAttribute("aria-valuenow");
      bar.removeAttribute("aria-valuetext");
    } else {
      const value = Math.max(0, Math.min(100, Math.round(pct || 0)));
      bar.setAttribute("aria-valuenow", String(value));
      bar.setAttribute("aria-valuetext", t("percent", { percent: value }));
      bar.firstChild.style.inlineSize = value + "%";
    }
    const stateText = (T.status || {})[status] || status;
    const percentText = status === "running" && !unknown ? " " + t("percent", { percent: Math.round(pct) }) : "";
    view.querySelector(".job-state").textContent = stateText + percentText;
    view.querySelector(".job-detail").textContent = detail(job);
    const save = view.querySelector(".save");
    const file = job.file;
    save.hidden = !(status === "finished" && file && file.url);
    if (!save.hidden) {
      save.href = file.url;
      save.setAttribute("download", file.name || "");
    }
    // Once the file is ready, Save is the main action of its card.
    const download = view.closest(".preview") && view.closest(".preview").querySelector("button.download");
    if (download) download.classList.toggle("primary", status !== "finished");
    view.querySelector('[data-action="cancel"]').hidden = !(status === "queued" || status === "running");
    view.querySelector('[data-action="retry"]').hidden = !(status === "failed" || status === "cancelled");
    announce(view, status, pct);
  }
  function detail(job) {
    const p = job.progress || {};
    if (job.status === "failed") return errorText(job.error && job.error.code);
    if (job.status === "finished") return job.file && job.file.size ? size(job.file.size) : "";
    if (job.status !== "running") return "";
    const parts = [];
    if (p.downloaded_bytes && p.total_bytes) parts.push(t("of", { done: size(p.downloaded_bytes), total: size(p.total_bytes) }));
    else if (p.downloaded_bytes) parts.push(size(p.downloaded_bytes));
    if (p.speed) parts.push(size(p.speed) + "/s");
    if (p.eta != null && p.eta > 0) parts.push(t("left", { time: clock(p.eta) }));
    return parts.join(" · ");
  }
  // Screen readers hear state changes and every quarter of the way, not every tick.
  function announce(view, status, pct) {
    const step = status === "running" && pct != null ? Math.floor(pct / 25) : -1;
    const key = status + ":" + step;
    if (view.dataset.announced === key) return;
    view.dataset.announced = key;
    let text = (T.status || {})[status] || status;
    if (status === "running" && step > 0) text = t("percent", { percent: step * 25 });
    if (status === "finished") text = t("done");
    view.querySelector(".announce").textContent = text;
  }

  // Follow one job live: its SSE stream, or polling when the stream is not available.
  function follow(job, view) {
    if (FINAL.includes(job.status)) return;
    const id = job.id;
    const onJob = (data) => {
      update(view, data);
      if (FINAL.includes(data.status)) { stop(); refreshHistory(); }
    };
    let source = null, timer = 0, stopped = false;
    function stop() { stopped = true; if (source) source.close(); clearTimeout(timer); }
    async function poll() {
      if (stopped || !view.isConnected) return;
      try {
        const { resp, data } = await api("GET", "/api/v1/jobs/" + encodeURIComponent(id));
        if (resp.status === 404) { stop(); return; }
        if (resp.ok && data) { onJob(data); }
      } catch (e) { /* try again below */ }
      if (!stopped) timer = setTimeout(poll, 1500);
    }
    if (!window.EventSource) { poll(); return; }
    source = new EventSource("/api/v1/jobs/" + encodeURIComponent(id) + "/events");
    source.onmessage = (ev) => {
      let data;
      try { data = JSON.parse(ev.data); } catch (e) { return; }
      if (data && data.id === id) onJob(data);
    };
    source.onerror = () => {
      // The server closes the stream at the final state; anything else: fall back to polling.
      if (stopped) return;
      source.close();
      poll();
    };
  }

  // ---------------------------------------------------------------- history

  // Titles of jobs started on this page, as the person saw them when choosing.
  function titles() {
    try { return JSON.parse(localStorage.getItem("nazzil.titles") || "{}"); } catch (e) { return {}; }
  }
  function rememberTitle(id, title) {
    const all = titles();
    all[id] = title;
    const ids = Object.keys(all);
    for (const old of ids.slice(0, Math.max(0, ids.length - 100))) delete all[old];
    try { localStorage.setItem("nazzil.titles", JSON.stringify(all)); } catch (e) { /* private mode */ }
  }
  // The title the person chose by (an entry of a page) before the one of the media file itself.
  function jobTitle(job) {
    return titles()[job.id] || job.title || job.url;
  }

  async function refreshHistory() {
    if (!JOBS || !historyBox) return;
    clearTimeout(historyTimer);
    let answer;
    try { answer = await api("GET", "/api/v1/jobs"); } catch (e) { answer = null; }
    if (!answer || !answer.resp.ok || !answer.data || !Array.isArray(answer.data.jobs)) {
      if (answer && answer.resp.status < 500) historyBox.hidden = true;  // no jobs here
      else historyTimer = setTimeout(refreshHistory, 5000);
      return;
    }
    const jobs = answer.data.jobs;
    historyBox.hidden = jobs.length === 0;
    const old = new Map(Array.from(jobList.children, (li) => [li.dataset.id, li]));
    const items = jobs.map((job) => {
      let li = old.get(job.id);
      if (li) {
        update(li.querySelector(".job"), job);
        li.querySelector(".job-title bdi").textContent = jobTitle(job);
        old.delete(job.id);
      } else {
        li = el("li", { class: "card", "data-id": job.id });
        const title = el("p", { class: "job-title" });
        title.append(el("bdi", {}, jobTitle(job)), el("span", { class: "tag" }, formatName(job.format)));
        li.append(title, jobView(job, true));
      }
      return li;
    });
    for (const li of old.values()) li.remove();
    // Re-append in order; moving nodes that are already in place keeps focus where it is.
    items.forEach((li, i) => { if (jobList.children[i] !== li) jobList.insertBefore(li, jobList.children[i] || null); });
    if (jobs.some((job) => !FINAL.includes(job.status)) && !document.hidden) {
      historyTimer = setTimeout(refreshHistory, 2000);
    }
  }
  function formatName(format) {
    if (!format || format === "best") return t("format_best");
    if (format === "audio") return t("format_audio");
    return format;
  }
  document.addEventListener("visibilitychange", () => { if (!document.hidden) refreshHistory(); });

  async function act(button) {
    const view = button.closest("[data-job]");
    const id = view.dataset.job;
    const action = button.dataset.action;
    const path = "/api/v1/jobs/" + encodeURIComponent(id);
    button.disabled = true;
    let answer;
    try {
      answer = action === "delete" ? await api("DELETE", path) : await api("POST", path + "/" + action);
    } catch (e) { answer = null; }
    button.disabled = false;
    if (!answer || !(answer.resp.ok || answer.resp.status === 204)) {
      const line = view.querySelector(".job-detail");
      line.textContent = errorText(answer ? answer.code : "network");
      return;
    }
    if (action === "delete") {
      for (const node of document.querySelectorAll('[data-job="' + CSS.escape(id) + '"]')) {
        const li = node.closest("li");
        (li || node).remove();
      }
      historyBox.hidden = jobList.children.length === 0;
      return;
    }
    if (answer.data) {
      for (const node of document.querySelectorAll('[data-job="' + CSS.escape(id) + '"]')) update(node, answer.data);
      if (action === "retry") {
        const card = document.querySelector('.preview [data-job="' + CSS.escape(id) + '"]');
        if (card) follow(answer.data, card);
      }
    }
    refreshHistory();
  }
  app.addEventListener("click", (ev) => {
    const button = ev.target.closest("button[data-action]");
    if (button) act(button);
  });

  enhance(result);
  refreshHistory();
})();
