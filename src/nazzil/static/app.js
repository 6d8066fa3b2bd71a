// Progressive enhancement: preview without reloading the page; the form works without it.
(function () {
  "use strict";
  const form = document.getElementById("paste");
  if (!form || !window.fetch) return;
  const input = document.getElementById("url");
  const status = document.getElementById("status");
  const result = document.getElementById("result");

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text != null) node.textContent = text;
    return node;
  }
  function duration(s) {
    if (s == null) return "";
    s = Math.round(s);
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = String(s % 60).padStart(2, "0");
    return h ? `${h}:${String(m).padStart(2, "0")}:${r}` : `${m}:${r}`;
  }
  function size(n) {
    if (!n) return "";
    if (n >= 1073741824) return (n / 1073741824).toFixed(1) + " GB";
    if (n >= 1048576) return (n / 1048576).toFixed(1) + " MB";
    return Math.round(n / 1024) + " KB";
  }
  function card(v) {
    const art = el("article", { class: "card preview" });
    if (v.thumbnail) art.append(el("img", { class: "thumb", src: v.thumbnail, alt: "", loading: "lazy", referrerpolicy: "no-referrer" }));
    const meta = el("div", { class: "meta" });
    meta.append(el("h2", { class: "title" }, v.title || "Untitled"));
    const p = el("p", { class: "muted" });
    if (v.duration != null) p.append(el("span", { class: "duration" }, duration(v.duration)));
    if (v.uploader) p.append(el("span", { class: "uploader" }, v.uploader));
    if (v.extractor) p.append(el("span", { class: "extractor" }, v.extractor));
    meta.append(p);
    const ul = el("ul", { class: "formats" });
    for (const f of v.formats || []) {
      const li = el("li", { "data-format": f.format_id });
      li.append(el("span", { class: "q" }, f.height ? f.height + "p" : f.kind === "audio" ? "audio" : f.format_id));
      li.append(el("span", { class: "muted" }, [f.ext, f.kind, size(f.filesize)].filter(Boolean).join(" · ")));
      ul.append(li);
    }
    meta.append(ul);
    art.append(meta);
    return art;
  }
  async function preview(url) {
    status.textContent = "Looking…";
    result.replaceChildren();
    try {
      const resp = await fetch("/api/v1/info", {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ url }),
      });
      const data = await resp.json();
      if (!resp.ok) {
        status.replaceChildren(el("p", { class: "error", "data-code": data.error.code }, data.error.message));
        return;
      }
      status.textContent = "";
      if (data.type === "playlist") {
        result.append(el("h2", {}, data.title || "Playlist"));
        for (const e of data.entries || []) result.append(card(e));
      } else result.append(card(data));
      history.replaceState(null, "", "?url=" + encodeURIComponent(url));
    } catch (err) {
      status.replaceChildren(el("p", { class: "error" }, "Could not reach nazzil. Check your connection."));
    }
  }
  form.addEventListener("submit", (ev) => { ev.preventDefault(); if (input.value.trim()) preview(input.value.trim()); });
  input.addEventListener("paste", () => setTimeout(() => { if (input.value.trim()) preview(input.value.trim()); }, 0));
})();
