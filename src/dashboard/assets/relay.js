// relay dashboard: the few things a server-rendered page cannot do alone.
// Admin actions call the JSON admin API with the session's CSRF token; the
// server re-checks the role on every call, so hiding buttons is cosmetic.
(() => {
  "use strict";
  const csrf = document.querySelector('meta[name="csrf-token"]')?.content;

  async function api(method, path, body) {
    const headers = { accept: "application/json" };
    if (csrf) headers["x-csrf-token"] = csrf;
    if (body !== undefined) headers["content-type"] = "application/json";
    const r = await fetch(path, {
      method,
      headers,
      credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = null;
    try { data = await r.json(); } catch (_) { /* 204 or not JSON */ }
    if (!r.ok) {
      throw new Error((data && data.error && data.error.message) || `${r.status} ${r.statusText}`);
    }
    return data;
  }

  function flash(text, kind) {
    const el = document.getElementById("flash");
    if (!el) return;
    el.replaceChildren();
    const p = document.createElement("p");
    p.className = `alert ${kind || "info"}`;
    p.textContent = text;
    el.append(p);
  }

  // Re-renders one part of the page from the server, leaving the rest
  // (such as a freshly shown key) alone.
  async function refresh(selector) {
    const r = await fetch(location.href, { credentials: "same-origin" });
    const doc = new DOMParser().parseFromString(await r.text(), "text/html");
    const fresh = doc.querySelector(selector);
    const current = document.querySelector(selector);
    if (fresh && current) current.replaceWith(document.importNode(fresh, true));
  }

  const actions = {
    async "disable-key"(b) {
      await api("POST", `/api/keys/${encodeURIComponent(b.dataset.id)}/disable`);
      await refresh("#keys-table");
      flash("Key disabled: calls with it now get 401.", "success");
    },
    async "enable-key"(b) {
      await api("POST", `/api/keys/${encodeURIComponent(b.dataset.id)}/enable`);
      await refresh("#keys-table");
      flash("Key enabled.", "success");
    },
    async "delete-key"(b) {
      if (!confirm(`Delete relay key "${b.dataset.name}"? Clients using it stop working at once.`)) return;
      await api("DELETE", `/api/keys/${encodeURIComponent(b.dataset.id)}`);
      await refresh("#keys-table");
      flash("Key deleted.", "success");
    },
    async "reset-breakers"(b) {
      const body = b.dataset.host ? { host: b.dataset.host } : {};
      await api("POST", "/api/breakers/reset", body);
      location.reload();
    },
    async "reload-config"() {
      const r = await fetch("/api/config/reload", {
        method: "POST",
        headers: csrf ? { "x-csrf-token": csrf } : {},
        credentials: "same-origin",
      });
      if (r.status === 422) {
        flash("The config directory is invalid; the problems are listed below.", "error");
        await refresh("#reload");
        return;
      }
      if (!r.ok) throw new Error(`${r.status} ${r.statusText}`);
      location.reload();
    },
    async "copy-key"() {
      const v = document.getElementById("new-key-value").textContent;
      await navigator.clipboard.writeText(v);
      flash("Copied.", "success");
    },
    async "dismiss-key"() {
      const box = document.getElementById("new-key");
      document.getElementById("new-key-value").textContent = "";
      box.hidden = true;
    },
  };

  document.addEventListener("click", async (e) => {
    const b = e.target.closest("button[data-action]");
    if (!b || !actions[b.dataset.action]) return;
    b.disabled = true;
    try {
      await actions[b.dataset.action](b);
    } catch (err) {
      flash(err.message, "error");
    } finally {
      b.disabled = false;
    }
  });

  const create = document.getElementById("create-key-form");
  if (create) {
    create.addEventListener("submit", async (e) => {
      e.preventDefault();
      const f = new FormData(create);
      const body = { policy: f.get("policy") };
      if (f.get("name")) body.name = f.get("name");
      if (f.get("expires_in")) body.expires_in = f.get("expires_in");
      const button = create.querySelector("button[type=submit]");
      button.disabled = true;
      try {
        const k = await api("POST", "/api/keys", body);
        document.getElementById("new-key-value").textContent = k.key;
        document.getElementById("new-key").hidden = false;
        create.reset();
        await refresh("#keys-table");
        document.getElementById("flash").replaceChildren();
      } catch (err) {
        flash(err.message, "error");
      } finally {
        button.disabled = false;
      }
    });
  }

  // Plain HTTP on a real host name: a Secure cookie would be dropped.
  const hint = document.getElementById("http-hint");
  if (hint && location.protocol === "http:" &&
      !["localhost", "127.0.0.1", "[::1]"].includes(location.hostname)) {
    hint.hidden = false;
  }
})();
