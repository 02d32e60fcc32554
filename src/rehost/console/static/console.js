// rehost console: confirmation dialogs, selection-aware menus, live refresh. No dependencies.
"use strict";
(function () {
  const dialog = document.getElementById("confirm-dialog");
  let pending = null; // {form, action} waiting for confirmation

  function selected() {
    return [...document.querySelectorAll('input[name="sourceServerIDs"]')]
      .filter((i) => i.type === "hidden" || i.checked);
  }

  // Menu items are enabled when every selected server is in a state the action applies to.
  function updateMenus() {
    const sel = selected();
    document.querySelectorAll("button[data-states]").forEach((b) => {
      const states = b.dataset.states.split(" ");
      const ok = sel.length > 0 && sel.every((i) =>
        (i.dataset.archived === "1" ? b.dataset.archived === "1" : states.includes(i.dataset.state)));
      b.disabled = !ok;
    });
    const all = document.querySelector("[data-select-all]");
    if (all) {
      const boxes = document.querySelectorAll('input[type=checkbox][name="sourceServerIDs"]');
      all.checked = boxes.length > 0 && [...boxes].every((b) => b.checked);
    }
  }

  document.addEventListener("change", (e) => {
    const t = e.target;
    if (t.matches("[data-select-all]")) {
      document.querySelectorAll('input[type=checkbox][name="sourceServerIDs"]').forEach((b) => { b.checked = t.checked; });
    }
    if (t.matches("[data-autosubmit]")) t.form.submit();
    updateMenus();
  });

  document.addEventListener("click", (e) => {
    const btn = e.target.closest("button[data-confirm]");
    if (btn && dialog) {
      e.preventDefault();
      const form = document.getElementById(btn.getAttribute("form")) || btn.form;
      pending = { form, action: btn.value };
      document.getElementById("confirm-title").textContent = btn.dataset.title + "?";
      document.getElementById("confirm-text").textContent = btn.dataset.confirm;
      const list = document.getElementById("confirm-servers");
      list.replaceChildren(...selected().map((i) => {
        const li = document.createElement("li");
        li.textContent = (i.dataset.host || "") + " (" + i.value + ")";
        return li;
      }));
      dialog.querySelector("[data-dialog-confirm]").textContent = btn.dataset.title;
      btn.closest("details")?.removeAttribute("open");
      dialog.showModal();
      return;
    }
    if (e.target.matches("[data-dialog-cancel]")) { dialog.close(); pending = null; }
    if (e.target.matches("[data-dialog-confirm]") && pending) {
      const { form, action } = pending;
      for (const [name, value] of [["action", action], ["confirmed", "1"]]) {
        const input = document.createElement("input");
        input.type = "hidden"; input.name = name; input.value = value;
        form.appendChild(input);
      }
      // Hidden inputs associated through form= are submitted with it; nothing else to copy.
      dialog.close();
      form.submit();
    }
    const copy = e.target.closest("[data-copy]");
    if (copy) {
      const text = document.getElementById(copy.dataset.copy).textContent;
      navigator.clipboard?.writeText(text).then(() => { copy.textContent = "Copied"; }, () => {});
    }
    const toggle = e.target.closest("[data-nav-toggle]");
    if (toggle) {
      const nav = document.getElementById("sidenav");
      const open = nav.classList.toggle("open");
      toggle.setAttribute("aria-expanded", String(open));
    }
    // Close menus when clicking elsewhere.
    document.querySelectorAll("details[data-menu][open]").forEach((d) => { if (!d.contains(e.target)) d.removeAttribute("open"); });
  });

  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape") document.querySelectorAll("details[data-menu][open]").forEach((d) => {
      d.removeAttribute("open"); d.querySelector("summary").focus();
    });
  });

  // Live refresh: fetch this page again with X-Live naming a block, and swap it in when it changed.
  const last = new Map();
  async function refresh() {
    if (document.hidden || (dialog && dialog.open) || document.querySelector("details[data-menu][open]")) return;
    for (const el of document.querySelectorAll("[data-live]")) {
      let resp;
      try {
        resp = await fetch(location.href, { headers: { "X-Live": el.dataset.live }, credentials: "same-origin", cache: "no-store" });
      } catch (err) { return; } // server restarting: try again on the next tick
      if (resp.status === 401) { location.reload(); return; }
      if (!resp.ok) continue;
      const html = await resp.text();
      if (last.get(el) === html) continue;
      last.set(el, html);
      const checked = new Set([...el.querySelectorAll("input[type=checkbox]:checked")].map((i) => i.name + "=" + i.value));
      const active = document.activeElement && el.contains(document.activeElement) ? document.activeElement : null;
      const focusKey = active ? (active.id || (active.name + "=" + active.value)) : null;
      el.innerHTML = html;
      el.querySelectorAll("input[type=checkbox]").forEach((i) => { if (checked.has(i.name + "=" + i.value)) i.checked = true; });
      if (focusKey) {
        const again = document.getElementById(focusKey) ||
          [...el.querySelectorAll("input,button,a")].find((i) => i.name + "=" + i.value === focusKey);
        again?.focus();
      }
      updateMenus();
    }
  }
  if (document.querySelector("[data-live]")) setInterval(refresh, 2000);
  updateMenus();
})();
